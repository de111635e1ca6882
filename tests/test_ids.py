"""Job ids name files: any id that passes validation stays inside its state directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from spoolq.errors import InvalidJobId
from spoolq.job import MAX_ID_CHARS, Job, validate_id
from spoolq.layout import STATES, job_name, parse_name

WHEN = Job(id="x", task="t").enqueued_at


@given(st.text(max_size=140) | st.text(alphabet="./\\\x00\n-a", max_size=10))
@example("..")
@example(".")
@example("a/b")
@example("\u2028")
@example("x" * 129)
@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_valid_ids_name_a_file_directly_in_each_state(tmp_path: Path, text: str) -> None:
    # Given arbitrary text, When it is validated as an id
    try:
        job_id = validate_id(text)
    except InvalidJobId as exc:
        assert exc.job_id == text and exc.reason  # refused, with the reason attached
        return
    # Then, used as a name in every state, it resolves to a file directly inside that state's directory
    job = Job(id=job_id, task="t")
    for state in STATES:
        state_dir = tmp_path / state
        name = job_name(state, job, WHEN)
        resolved = os.path.realpath(os.path.normpath(state_dir / name))
        assert os.path.dirname(resolved) == os.path.realpath(state_dir)
        assert len(name.encode("utf-8")) <= 255  # a legal file name on every POSIX file system
        assert parse_name(state, name)[0] == job_id  # and reads back as the same id


@pytest.mark.parametrize(
    "bad, reason",
    [
        ("", "empty"),
        ("a/b", "separator"),
        ("a\\b", "separator"),
        ("..", "'..'"),
        ("a..b", "'..'"),
        (".hidden", "starts with '.'"),
        ("tab\there", "control"),
        ("nul\x00", "control"),
        ("line\u2028sep", "control"),
        ("x" * (MAX_ID_CHARS + 1), "longer than"),
        ("é" * 101, "bytes"),  # 101 chars, 202 bytes
        (42, "string"),
    ],
)
def test_unsafe_ids_are_refused_with_the_reason(bad: object, reason: str) -> None:
    with pytest.raises(InvalidJobId) as info:
        validate_id(bad)
    assert reason in str(info.value)


@pytest.mark.parametrize("good", ["a", "x" * MAX_ID_CHARS, "nightly-2026-11-25", "user@host:42", "日本語"])
def test_ordinary_ids_are_accepted(good: str) -> None:
    assert validate_id(good) == good
