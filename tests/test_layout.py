"""The on-disk protocol's names (SPEC §1): built and parsed in :mod:`spoolq.layout` only.

Pure functions, so the properties run over any id, time and byte string.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from spoolq.errors import InvalidJobId
from spoolq.job import Job, validate_id
from spoolq.layout import (
    ACTIVE,
    DELAYED,
    DONE,
    FAILED,
    NEW,
    READY,
    STAMP_LEN,
    STATES,
    bad_name,
    discarded_name,
    is_bad,
    is_discarded,
    job_name,
    parse_name,
    parse_stamp,
    printable,
    ready_id,
    ready_name,
    reason_name,
    safe_name,
    stamp,
    timed_name,
    tmp_name,
)

UTC = timezone.utc
T0 = datetime(2030, 1, 1, tzinfo=UTC)


def _valid(text: str) -> bool:
    try:
        validate_id(text)
    except InvalidJobId:
        return False
    return True


# Any id a job may have (unicode included), and any time a name may carry (years 1 to 9999
# in any offset, converted to UTC; microseconds kept).
ids = st.text(min_size=1, max_size=40).filter(_valid)
offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
times = st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=offsets)
# Any str at all: control characters, and surrogates (lone ones, and the escapes Python uses
# for undecodable bytes of a file name), which st.text() would leave out.
any_char = st.characters(exclude_categories=()) | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
any_text = st.lists(any_char, max_size=300).map("".join)
any_name_bytes = st.binary(min_size=1, max_size=255).filter(lambda b: b"/" not in b and b"\0" not in b)


def a_job(job_id: str, *, priority: int = 0, enqueued_at: datetime = T0, eta: datetime | None = None) -> Job:
    return Job(id=job_id, task="t", enqueued_at=enqueued_at, eta=eta, priority=priority)


# -- names round-trip ---------------------------------------------------------------------


@given(ids, times, st.sampled_from(STATES), st.integers(0, 9))
def test_a_jobs_name_in_any_state_gives_its_id_and_time_back(job_id, when, state, priority):
    # Given a job, When its name in a state is built and parsed again
    job = a_job(job_id, priority=priority)
    name = job_name(state, job, when)
    parsed_id, parsed_when = parse_name(state, name)
    # Then the id comes back, and the time where the name carries one (exactly, in UTC)
    assert parsed_id == job_id
    if state in (READY, DELAYED, FAILED):
        assert parsed_when == when
        assert parsed_when.tzinfo is not None
    else:
        assert parsed_when is None
    assert "/" not in name and not name.startswith(".")


@given(ids, times, st.integers(0, 9))
def test_ready_id_reads_the_id_of_a_ready_name(job_id, when, priority):
    assert ready_id(ready_name(job_id, priority, when)) == job_id


def test_a_ready_name_defaults_to_when_the_job_became_due():
    # Given a job enqueued at T0 with an eta an hour later, and one with an eta in the past
    later = a_job("a", eta=T0 + timedelta(hours=1))
    earlier = a_job("b", eta=T0 - timedelta(hours=1))
    # Then the ready/ name sorts by the eta if it is later than the enqueue, else the enqueue
    assert parse_name(READY, job_name(READY, later))[1] == T0 + timedelta(hours=1)
    assert parse_name(READY, job_name(READY, earlier))[1] == T0


@pytest.mark.parametrize("state", [DELAYED, FAILED])
def test_a_timed_name_needs_a_time(state):
    with pytest.raises(ValueError, match="needs a time"):
        job_name(state, a_job("a"))


@given(times)
def test_a_stamp_is_fixed_width_and_reads_back(when):
    text = stamp(when)
    assert len(text) == STAMP_LEN
    assert parse_stamp(text) == when


def test_a_naive_time_is_stamped_as_utc():
    assert stamp(datetime(2030, 1, 1, 3, 15)) == "20300101T031500.000000Z"
    assert stamp(datetime(2030, 1, 1, 4, 15, tzinfo=timezone(timedelta(hours=1)))) == "20300101T031500.000000Z"


@pytest.mark.parametrize(
    ("state", "name"),
    [
        (READY, "x.json"),  # no priority nor stamp
        (READY, "0-20300101T000000.000000Z.json"),  # no id
        (READY, "a-20300101T000000.000000Z-id.json"),  # the priority is not a digit
        (READY, "0-2030010xT000000.000000Z-id.json"),  # not a time
        (DELAYED, "20300101T000000.000000Z-.json"),  # no id
        (DELAYED, "2030-01-01-id.json"),
        (FAILED, "20300101T000000.000000Z-x.bad"),  # a refused file, not a job
        (NEW, "id.txt"),
        (NEW, ".hidden.json"),
        (ACTIVE, "id"),
        (DONE, ".json.swp"),
    ],
)
def test_a_name_that_is_not_a_jobs_parses_as_none(state, name):
    assert parse_name(state, name) == (None, None)


# -- dispatch order -----------------------------------------------------------------------


@given(ids, ids, st.integers(0, 9), st.integers(0, 9), times, times)
def test_ready_names_sort_by_priority_then_by_time(id1, id2, p1, p2, t1, t2):
    # Given two ready jobs, When their names are compared as text
    n1, n2 = ready_name(id1, p1, t1), ready_name(id2, p2, t2)
    # Then the higher priority sorts first; at equal priority the earlier time does
    if p1 != p2:
        assert (n1 < n2) == (p1 > p2)
    elif t1 != t2:
        assert (n1 < n2) == (t1 < t2)


def test_sorting_ready_names_gives_the_dispatch_order():
    jobs = [
        ("low-old", 0, T0),
        ("high-new", 9, T0 + timedelta(hours=1)),
        ("low-new", 0, T0 + timedelta(seconds=1)),
        ("mid", 5, T0 + timedelta(days=1)),
        ("high-old", 9, T0 - timedelta(days=365)),
    ]
    names = sorted(ready_name(i, p, t) for i, p, t in jobs)
    assert [ready_id(n) for n in names] == ["high-old", "high-new", "mid", "low-old", "low-new"]


@given(ids, ids, times, times)
def test_delayed_names_sort_by_due_time(id1, id2, t1, t2):
    assume(t1 != t2)
    assert (timed_name(id1, t1) < timed_name(id2, t2)) == (t1 < t2)


# -- printable and safe names --------------------------------------------------------------


@given(any_text)
def test_printable_never_raises_and_its_output_is_printable(text):
    out = printable(text)
    assert out.isprintable()
    out.encode("utf-8")  # no surrogate left: it can go into a log or a reason file


@given(any_name_bytes)
def test_printable_shows_a_byte_name_readably(raw):
    # Given a file name as Python lists it (undecodable bytes as surrogate escapes)
    name = raw.decode("utf-8", "surrogateescape")
    out = printable(name)
    assert out.isprintable()
    # Then a name of printable UTF-8 is shown as it is, and a bad byte as \xNN
    if name.isprintable():
        assert out == name


def test_printable_escapes_bad_bytes_and_control_characters():
    assert printable(b"caf\xe9".decode("utf-8", "surrogateescape")) == "caf\\xe9"
    assert printable("a\x1b[2Jb") == "a\\x1b[2Jb"  # no escape sequence reaches a terminal
    assert printable("line\nbreak\u2028") == "line\\nbreak\\u2028"
    assert printable("with space") == "with space"
    assert printable("\ud800") == "\\ud800"  # a lone surrogate that is no byte of a name


@given(any_text)
def test_safe_name_is_bounded_printable_and_has_no_separator(name):
    out = safe_name(name)
    assert out
    assert len(out.encode("utf-8")) <= 150
    assert "/" not in out and "\\" not in out
    assert not out.startswith(".")
    assert out.isprintable()


@given(any_text, st.integers(0, 999))
def test_a_bad_name_fits_a_file_name_and_is_never_taken_for_a_job(name, n):
    # Given any foreign name refused at any time, When it gets its failed/ name
    bad = bad_name(T0, name, n)
    # Then that name and its reason's fit in 255 bytes, have no separator, are bad names,
    # and are not job records of failed/
    for text in (bad, reason_name(bad)):
        assert len(text.encode("utf-8")) <= 255
        assert "/" not in text
        assert is_bad(text)
        assert parse_name(FAILED, text) == (None, None)
    assert parse_stamp(bad[:STAMP_LEN]) == T0


def test_bad_names_of_one_file_differ_by_their_try_number():
    names = {bad_name(T0, "x.json", n) for n in range(5)}
    assert len(names) == 5
    assert bad_name(T0, "x.json") == "20300101T000000.000000Z-x.json.bad"


def test_is_bad_knows_refused_files_and_their_reasons_only():
    assert is_bad("20300101T000000.000000Z-x.bad")
    assert is_bad("20300101T000000.000000Z-x.bad.reason")
    assert not is_bad("20300101T000000.000000Z-x.json")
    assert not is_bad("x.reason")


# -- tmp/ names ---------------------------------------------------------------------------


@given(st.integers(0, 2**64), st.integers(1, 2**22), any_text.filter(bool))
def test_a_discarded_name_is_recognised_whatever_the_jobs_name(now_ns, pid, name):
    assert is_discarded(discarded_name(now_ns, pid, name))


@given(
    st.integers(0, 2**64),
    st.integers(1, 2**22),
    st.integers(1, 2**40),
    st.text("0123456789abcdef", min_size=6, max_size=6),
)
def test_a_writers_tmp_name_is_not_a_discarded_job(now_ns, pid, n, salt):
    assert not is_discarded(tmp_name(now_ns, pid, n, salt))


@pytest.mark.parametrize("name", ["x.done.y", ".done.x", "done.1.2", "1.2.done", "a1.2.done.x.json", ""])
def test_names_that_only_look_discarded_are_not(name):
    assert not is_discarded(name)
