"""The I/O-failure policy (:mod:`spoolq.faults`) with time passed in: backoff and log lines.

A step that keeps failing must neither spin nor flood the log: one line at its first failure,
a summary a minute, one when it recovers; its retries back off 0.5 s, 1 s, 2 s... up to 30 s.
"""

from __future__ import annotations

import logging

import pytest

from spoolq.faults import FIRST_BACKOFF_S, MAX_BACKOFF_S, SUMMARY_INTERVAL_S, Faults

LOGGER = "spoolq.test.faults"
T = 1000.0  # monotonic seconds at the first failure


@pytest.fixture
def faults() -> Faults:
    return Faults(logging.getLogger(LOGGER))


def records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER]


def test_the_first_failure_is_logged_once_with_its_cause_and_backs_the_step_off(faults, caplog):
    caplog.set_level(logging.INFO, LOGGER)
    # Given a step that works
    assert faults.ready("ingest", T)
    assert not faults
    # When it fails
    faults.failed("ingest", "cannot list new/: Permission denied", T)
    # Then one error line says why and when it tries again, and it waits the first backoff
    [line] = records(caplog)
    assert line.levelno == logging.ERROR
    assert "cannot list new/: Permission denied; retrying in 0.5 s" in line.getMessage()
    assert faults
    assert not faults.ready("ingest", T)
    assert not faults.ready("ingest", T + FIRST_BACKOFF_S - 0.001)
    assert faults.ready("ingest", T + FIRST_BACKOFF_S)
    assert faults.retry_at("ingest") == T + FIRST_BACKOFF_S


def test_failures_within_one_try_count_once_towards_the_backoff(faults, caplog):
    caplog.set_level(logging.INFO, LOGGER)
    # Given a step that failed for each of the 50 jobs of one batch, at the same moment
    for i in range(50):
        faults.failed("settle", f"job {i}: No space left on device", T)
    # Then it backs off as after one failure, and logged one line, not fifty
    assert faults.retry_at("settle") == T + FIRST_BACKOFF_S
    assert len(records(caplog)) == 1
    assert faults.streaks["settle"].count == 50
    assert faults.streaks["settle"].last == "job 49: No space left on device"


def test_the_backoff_doubles_per_try_up_to_30_seconds(faults):
    # Given a step that fails every time it tries again, as soon as it may
    now = T
    faults.failed("claim", "EIO", now)
    waits = []
    for _ in range(10):
        retry = faults.retry_at("claim")
        waits.append(retry - now)
        now = retry
        assert faults.ready("claim", now)
        faults.failed("claim", "EIO", now)
    # Then each wait is twice the one before, until the cap
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]
    assert MAX_BACKOFF_S == 30.0


def test_a_failure_while_backing_off_does_not_push_the_retry_later(faults):
    # A failure reported before the wait is over (another job of the step) is counted only
    faults.failed("to-failed", "EROFS", T)
    faults.failed("to-failed", "EROFS", T + 0.3)
    assert faults.retry_at("to-failed") == T + FIRST_BACKOFF_S
    assert faults.streaks["to-failed"].delay_s == FIRST_BACKOFF_S


def test_a_streak_that_goes_on_is_summarised_once_a_minute(faults, caplog):
    caplog.set_level(logging.INFO, LOGGER)
    # Given a step failing at every try for three minutes (a try every 0.5 to 30 s)
    now = T
    faults.failed("flush", "EIO", now)
    while now < T + 3 * SUMMARY_INTERVAL_S + 1:
        now = faults.retry_at("flush")
        faults.failed("flush", f"EIO at {now:.1f}", now)
    # Then the log has the first line and one summary per minute, each saying how long and
    # how many errors since the last one, not one line per failure
    lines = [r.getMessage() for r in records(caplog)]
    assert len(lines) == 1 + 3, lines
    assert "retrying in 0.5 s" in lines[0]
    for line in lines[1:]:
        assert line.startswith("still failing after ")
        assert "errors in the last" in line and "next try in" in line
    assert all(r.levelno == logging.ERROR for r in records(caplog))


def test_no_summary_before_a_minute_has_passed(faults, caplog):
    caplog.set_level(logging.INFO, LOGGER)
    faults.failed("flush", "EIO", T)
    faults.failed("flush", "EIO", T + SUMMARY_INTERVAL_S - 0.01)
    assert len(records(caplog)) == 1
    faults.failed("flush", "EIO", T + SUMMARY_INTERVAL_S)
    assert len(records(caplog)) == 2
    assert "still failing after 60 s (2 errors in the last 60 s)" in records(caplog)[-1].getMessage()


def test_ok_ends_a_streak_and_logs_the_recovery_once(faults, caplog):
    caplog.set_level(logging.INFO, LOGGER)
    # Given a step that failed three times over 7 s
    faults.failed("ingest", "ENOSPC", T)
    faults.failed("ingest", "ENOSPC", T + 0.5)
    faults.failed("ingest", "ENOSPC", T + 1.5)
    # When it works again
    faults.ok("ingest", T + 7)
    # Then the recovery is logged with how long and how many, and the step is ready at once
    last = records(caplog)[-1]
    assert last.levelno == logging.WARNING
    assert last.getMessage() == "recovered: ingest works again after 7.0 s and 3 error(s)"
    assert faults.ready("ingest", T + 7)
    assert not faults
    assert faults.retry_at("ingest") == 0.0
    # And ok without a streak says nothing
    faults.ok("ingest", T + 8)
    assert len(records(caplog)) == 2


def test_a_new_streak_after_recovery_starts_from_the_first_backoff(faults, caplog):
    caplog.set_level(logging.INFO, LOGGER)
    faults.failed("claim", "EIO", T)
    faults.failed("claim", "EIO", T + 0.5)
    faults.failed("claim", "EIO", T + 1.5)
    faults.ok("claim", T + 5)
    faults.failed("claim", "EIO again", T + 6)
    assert faults.retry_at("claim") == T + 6 + FIRST_BACKOFF_S
    assert "EIO again; retrying in 0.5 s" in records(caplog)[-1].getMessage()


def test_next_retry_ignores_waits_that_are_over(faults):
    # Given two steps backing off: one until T+0.5, one until T+5 (after a longer streak)
    faults.failed("a", "EIO", T)
    faults.failed("b", "EIO", T - 10)
    for t in (T - 9.5, T - 8.5, T - 6.5, T - 2.5):
        faults.failed("b", "EIO", t)
    assert faults.retry_at("b") == T + 5.5
    # Then the loop wakes for the earliest wait still ahead
    assert faults.next_retry(T) == T + 0.5
    # And when a's wait is over but a has not tried yet, the loop is not woken for it at once
    # again and again (it spun at 100 % CPU): only b's wait is ahead
    assert faults.next_retry(T + 0.5) == T + 5.5
    assert faults.next_retry(T + 1) == T + 5.5
    assert faults.next_retry(T + 6) is None


def test_next_retry_with_nothing_failing_is_none(faults):
    assert faults.next_retry(T) is None
    assert faults.failing_since() is None


def test_steps_back_off_independently(faults, caplog):
    caplog.set_level(logging.INFO, LOGGER)
    # Given one step failing for a while and one that never failed
    faults.failed("to-failed", "EROFS", T)
    faults.failed("to-failed", "EROFS", T + 0.5)
    faults.failed("to-failed", "EROFS", T + 1.5)
    # Then the other is ready, and a first failure of a third starts its own streak
    assert faults.ready("ingest", T + 1.6)
    assert not faults.ready("to-failed", T + 1.6)
    faults.failed("settle", "ENOSPC", T + 2)
    assert faults.retry_at("settle") == T + 2 + FIRST_BACKOFF_S
    assert faults.retry_at("to-failed") == T + 1.5 + 2.0
    # And the end of one streak leaves the other going
    faults.ok("settle", T + 3)
    assert "to-failed" in faults.streaks and "settle" not in faults.streaks
    assert faults.failing_since() == T
    assert faults.describe() == "to-failed: EROFS"
    assert [r.getMessage().split(";")[0] for r in records(caplog) if "retrying" in r.getMessage()] == [
        "EROFS",
        "ENOSPC",
    ]


def test_describe_names_every_failing_step_with_its_latest_cause(faults):
    faults.failed("b-step", "first", T)
    faults.failed("a-step", "one", T)
    faults.failed("b-step", "second", T + 0.1)
    assert faults.describe() == "a-step: one; b-step: second"


def test_the_backoff_and_summary_are_configurable(caplog):
    caplog.set_level(logging.INFO, LOGGER)
    f = Faults(logging.getLogger(LOGGER), first_s=2, cap_s=5, summary_s=10)
    f.failed("s", "x", 0)
    assert f.retry_at("s") == 2
    f.failed("s", "x", 2)
    assert f.retry_at("s") == 6
    f.failed("s", "x", 6)
    assert f.retry_at("s") == 11  # capped at 5
    f.failed("s", "x", 11)
    assert len(records(caplog)) == 2  # the first line, and a summary after 10 s
