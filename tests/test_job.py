"""The job record and its JSON codec (SPEC §2)."""

from __future__ import annotations

import json
import string
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spoolq.codec import MAX_NESTING, format_ts, parse_ts
from spoolq.errors import JobFormatError
from spoolq.job import _KNOWN, Job, check_json_args, make_error
from spoolq.layout import parse_stamp, stamp

UTC = timezone.utc

# -- strategies ---------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
ids = st.text(alphabet=string.ascii_letters + string.digits + "-_:@+=", min_size=1, max_size=64).filter(
    lambda s: not s.startswith(".")
)
# Aware datetimes in any fixed offset, far enough from year 1 and 9999 that UTC conversion fits.
offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
times = st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=offsets)
errors = st.builds(
    make_error,
    st.text(min_size=1, max_size=20),
    st.text(max_size=40),
    st.text(max_size=80),
    attempt=st.integers(0, 50),
    at=times,
)
extras = st.dictionaries(st.text(min_size=1, max_size=10).filter(lambda k: k not in _KNOWN), json_values, max_size=3)


@st.composite
def jobs(draw: st.DrawFn) -> Job:
    finished = draw(st.none() | times)
    return Job(
        id=draw(ids),
        task=draw(st.text(min_size=1, max_size=50)),
        args=draw(st.lists(json_values, max_size=4)),
        kwargs=draw(st.dictionaries(st.text(max_size=10), json_values, max_size=4)),
        enqueued_at=draw(times),
        eta=draw(st.none() | times),
        retries=draw(st.integers(0, 1000)),
        max_retries=draw(st.none() | st.integers(0, 1000)),
        errors=tuple(draw(st.lists(errors, max_size=3))),
        priority=draw(st.integers(0, 9)),
        expires=draw(st.none() | times),
        time_limit=draw(st.none() | st.floats(min_value=0.001, max_value=1e6)),
        queue=draw(st.none() | st.text(max_size=10)),
        result_ttl=draw(st.none() | st.floats(min_value=0, max_value=1e6)),
        # A result is only meaningful (and only written) with the time it finished.
        result=draw(json_values) if finished else None,
        finished_at=finished,
        result_expires=draw(st.none() | times),
        extra=draw(extras),
    )


# -- properties ---------------------------------------------------------------------------


@given(jobs())
@settings(max_examples=120)
def test_codec_round_trips_any_job(job: Job) -> None:
    # Given any job, When it is encoded and decoded, Then it is the same job
    data = job.to_json()
    again = Job.from_json(data)
    assert again == job
    # ... and its bytes are stable: one line, every timestamp UTC ending in Z, unknown fields kept
    assert again.to_json() == data
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    d = json.loads(data)
    for key in ("enqueued_at", "eta", "expires", "finished_at", "result_expires"):
        if d.get(key) is not None:
            assert d[key].endswith("Z") and parse_ts(d[key]).utcoffset() == timedelta(0)
    for key, value in job.extra.items():
        assert d[key] == value


@given(st.binary(max_size=300))
@settings(max_examples=300)
def test_decoder_never_crashes_on_bytes(data: bytes) -> None:
    # Given arbitrary bytes, When decoded, Then either a job or JobFormatError, nothing else
    try:
        job = Job.from_json(data)
    except JobFormatError:
        return
    assert isinstance(job, Job)


job_like = st.fixed_dictionaries(
    {"v": st.just(1) | json_values, "id": ids | json_values, "task": st.text(max_size=5) | json_values},
    optional={k: json_values | st.text(max_size=30) for k in _KNOWN if k not in ("v", "id", "task")},
)


@given(json_values | job_like)
@settings(max_examples=200)
def test_decoder_never_crashes_on_json(value: object) -> None:
    # Given any JSON value, often shaped like a job, When decoded, Then a job or JobFormatError
    try:
        job = Job.from_json(json.dumps(value))
    except JobFormatError:
        return
    assert job.v == 1


# -- examples (each a bug once, or a promise of the format) ---------------------------------


def _minimal(**fields: object) -> bytes:
    d = {"v": 1, "id": "a", "task": "t", "enqueued_at": "2026-11-25T03:15:00Z", **fields}
    return json.dumps(d).encode()


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"{", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"v": 2, "id": "a", "task": "t", "enqueued_at": "2026-01-01T00:00:00Z"}', "version"),
        (_minimal(id="../etc"), "path separator"),
        (_minimal(task=""), "'task'"),
        (_minimal(enqueued_at="2026-11-25T03:15:00"), "no time zone"),
        (_minimal(enqueued_at="0001-01-01T00:00:00+01:00"), "enqueued_at"),  # before year 1 in UTC
        (_minimal(time_limit=10**400), "time_limit"),  # too big for a float
        (_minimal(retries=True), "'retries'"),
        (_minimal(priority=10), "'priority'"),
        (_minimal(extra=[1]).replace(b"[1]", b"NaN"), "NaN"),
        (_minimal().replace(b"}", b', "x": ' + b"9" * 5000 + b"}"), "not valid JSON"),  # over int digits limit
        (b"[" * (MAX_NESTING + 1) + b"]" * (MAX_NESTING + 1), "nested"),
    ],
)
def test_decoder_refuses_with_a_reason(data: bytes, fragment: str) -> None:
    with pytest.raises(JobFormatError) as info:
        Job.from_json(data)
    assert fragment in str(info.value)


def test_unknown_fields_survive_a_transition() -> None:
    # Given a file written by a newer producer, When the job is retried, Then its unknown fields remain
    job = Job.from_json(_minimal(trace_id="abc", hints={"gpu": True}))
    later = job.retried(
        make_error("E", "m", "tb", attempt=0, at=datetime(2026, 1, 1, tzinfo=UTC)), datetime(2026, 1, 2, tzinfo=UTC)
    )
    d = json.loads(later.to_json())
    assert d["trace_id"] == "abc" and d["hints"] == {"gpu": True} and d["retries"] == 1


def test_times_before_year_1000_are_written_readably() -> None:
    t = datetime(5, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    assert format_ts(t) == "0005-01-02T03:04:05.000006Z"
    assert parse_stamp(stamp(t)) == t
    assert Job.from_json(Job(id="a", task="t", enqueued_at=t).to_json()).enqueued_at == t


def test_stamps_sort_as_time() -> None:
    a, b = datetime(999, 12, 31, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)
    assert stamp(a) < stamp(b) and len(stamp(a)) == len(stamp(b))


def test_reset_for_replay_keeps_history() -> None:
    err = make_error("E", "m", "tb", attempt=3, at=datetime(2026, 1, 1, tzinfo=UTC))
    job = Job(id="a", task="t", retries=3, errors=(err,), eta=datetime(2026, 1, 1, tzinfo=UTC))
    again = job.reset_for_replay()
    assert again.retries == 0 and again.eta is None and again.errors == (err,)


def test_check_json_args_names_the_bad_argument() -> None:
    with pytest.raises(JobFormatError, match=r"argument 2 \(args\[1\]\)"):
        check_json_args([1, object()], {})
    with pytest.raises(JobFormatError, match="keyword argument 'when'"):
        check_json_args([], {"when": datetime.now()})
    with pytest.raises(JobFormatError, match="NaN|Out of range"):
        check_json_args([float("nan")], {})
