"""What crosses the pipe (:mod:`spoolq.protocol`): messages and answers both ways, and framing."""

from __future__ import annotations

import multiprocessing
import os
import socket
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spoolq.protocol import HEADER, LONG_HEADER, Answer, JobMessage, Kind, frame, unframe

UTC = timezone.utc

# JSON values as a task may take and return them: any text (with the surrogate escapes of
# undecodable bytes, which the encoder escapes; a high and a low surrogate side by side would
# read back as one character, as JSON defines), integers, finite floats.
any_char = st.characters() | st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF)
any_text = st.lists(any_char, max_size=12).map("".join)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=6,
)
# Times as they cross the pipe: aware UTC, microseconds kept.
times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))
seconds = st.floats(min_value=0, max_value=1e7, allow_nan=False)

messages = st.builds(
    JobMessage,
    id=st.text(min_size=1, max_size=40),
    task=st.text(min_size=1, max_size=40),
    args=st.lists(json_values, max_size=4),
    kwargs=st.dictionaries(any_text, json_values, max_size=4),
    retries=st.integers(0, 10**6),
    eta=st.none() | times,
    max_retries=st.none() | st.integers(0, 10**6),
    soft_time_limit=st.none() | seconds,
    claim=st.none() | st.text(min_size=1, max_size=60),
    discard=st.booleans(),
)
answers = st.builds(
    Answer,
    kind=st.sampled_from(Kind),
    result=json_values,
    exc_type=any_text,
    message=any_text,
    traceback=any_text,
    autoretry=st.booleans(),
    countdown=st.none() | st.floats(min_value=-1e6, max_value=1e6),
    eta=st.none() | times,
    new_args=st.none() | st.lists(json_values, max_size=3),
    new_kwargs=st.none() | st.dictionaries(any_text, json_values, max_size=3),
    max_retries=st.none() | st.integers(0, 10**6),
    duration_s=seconds,
    discarded=st.booleans(),
    fatal=st.booleans(),
)


# -- messages and answers -----------------------------------------------------------------


@given(messages)
@settings(max_examples=100)
def test_a_job_message_decodes_to_what_was_encoded(msg):
    data = msg.encode()
    assert JobMessage.decode(data) == msg
    assert data.endswith(b"\n") and data.count(b"\n") == 1


@given(answers)
@settings(max_examples=100)
def test_an_answer_decodes_to_what_was_encoded(answer):
    assert Answer.decode(answer.encode()) == answer


@pytest.mark.parametrize(
    "answer",
    [
        Answer(Kind.SUCCESS, result=0),
        Answer(Kind.SUCCESS, result=False),
        Answer(Kind.SUCCESS, result=""),
        Answer(Kind.SUCCESS, result=0.0),
        Answer(Kind.RETRY, countdown=0.0),  # retry(countdown=0): now, not after the default delay
        Answer(Kind.RETRY, countdown=0, max_retries=0),  # retry(max_retries=0): no more
        Answer(Kind.RETRY, new_args=[], new_kwargs={}),  # retry with no arguments at all
    ],
    ids=["result 0", "result False", "result ''", "result 0.0", "countdown 0", "max_retries 0", "empty new args"],
)
def test_falsy_values_are_answers_too(answer):
    # Given an answer whose value is falsy but meaningful (not the field's default)
    # When it crosses the pipe
    again = Answer.decode(answer.encode())
    # Then it is the same value, not the default
    assert again == answer
    assert again.result is not None or answer.result is None


def test_an_answer_carries_its_kind_as_the_enum_and_a_successs_result_even_when_null():
    data = Answer(Kind.SUCCESS).encode()
    assert b'"kind": "success"' in data and b'"result": null' in data
    assert Answer.decode(data).kind is Kind.SUCCESS
    # The defaults are left out: a death is a few bytes
    assert Answer(Kind.DIED).encode() == b'{"kind": "died"}\n'


def test_an_answer_eta_keeps_microseconds_in_utc():
    eta = datetime(2030, 1, 1, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    again = Answer.decode(Answer(Kind.RETRY, eta=eta).encode())
    assert again.eta == eta and again.eta.utcoffset() == timedelta(0)


def test_only_a_run_that_was_not_claimed_is_unclaimed():
    assert {k for k in Kind if not k.claimed} == {Kind.GONE, Kind.CLASH, Kind.UNCLAIMED}


def test_a_malformed_message_raises_a_value_or_key_error():
    with pytest.raises(ValueError):
        Answer.decode(b'{"kind": "exploded"}')
    with pytest.raises(KeyError):
        JobMessage.decode(b'{"task": "t"}')
    with pytest.raises(ValueError):
        JobMessage.decode(b"not json")


# -- framing ------------------------------------------------------------------------------


@given(st.lists(st.binary(max_size=300), max_size=8), st.data())
@settings(max_examples=100)
def test_unframe_gives_back_every_payload_however_the_bytes_arrive(payloads, data):
    # Given several framed payloads (empty ones too) written back to back
    stream = b"".join(frame(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    # When they arrive in chunks split at arbitrary points
    buf = bytearray()
    out: list[bytes] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        buf += stream[start:end]
        out += unframe(buf)
    # Then every payload comes out once, whole and in order, and nothing is left over
    assert out == payloads
    assert buf == bytearray()


def test_unframe_leaves_a_partial_frame_for_later():
    buf = bytearray(frame(b"one") + frame(b"two")[:5])
    assert unframe(buf) == [b"one"]
    assert bytes(buf) == frame(b"two")[:5]
    buf += frame(b"two")[5:]
    assert unframe(buf) == [b"two"]


def test_an_empty_payload_is_a_frame_of_its_own():
    buf = bytearray(frame(b"") + frame(b"") + frame(b"x"))
    assert unframe(buf) == [b"", b"", b"x"]


@given(st.binary(max_size=64), st.integers(0, 12))
def test_the_long_header_form_is_read_too_whatever_the_split(payload, cut):
    # Given a frame in the form Connection uses past 2 GiB (-1, then an 8-byte length)
    stream = HEADER.pack(-1) + LONG_HEADER.pack(len(payload)) + payload
    buf = bytearray(stream[:cut])
    # When it arrives in two parts, Then it is taken only once whole
    first = unframe(buf)
    buf += stream[cut:]
    assert first + unframe(buf) == [payload]
    assert not first or cut >= len(stream)


def test_frames_are_what_a_multiprocessing_connection_sends_and_reads():
    # Given a real Pipe (a socketpair): what one end sends with send_bytes is a frame
    a, b = multiprocessing.Pipe(duplex=True)
    raw = socket.socket(fileno=os.dup(b.fileno()))
    try:
        a.send_bytes(b"hello")
        a.send_bytes(b"")
        got = bytearray()
        while len(got) < len(frame(b"hello") + frame(b"")):
            got += raw.recv(100)
        assert bytes(got) == frame(b"hello") + frame(b"")
        # and what is framed here is read by recv_bytes at the other end
        raw.sendall(frame(JobMessage("id", "t", [1], {}).encode()) + frame(b"x"))
        assert JobMessage.decode(a.recv_bytes()) == JobMessage("id", "t", [1], {})
        assert a.recv_bytes() == b"x"
    finally:
        raw.close()
        a.close()
        b.close()
