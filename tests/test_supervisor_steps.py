"""The supervisor's timers, driven by :meth:`Supervisor.tick` on a stepped clock.

An in-process :class:`~spoolq.supervisor.Supervisor` with a real pool (children running
``tests/worker_tasks.py``) and a :class:`~spoolq.clock.StepClock`: the test calls ``tick``
itself and steps the clock instead of sleeping, so a delayed job's due time, the rescan of
``new/``, the directory flush, a hard limit of an hour, the shutdown timeout and the I/O
backoff are each checked just before and just after their moment.  Between ticks the test
only waits (bounded) for children to answer, never for a timer the clock controls.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import pytest
from conftest import files_in
from worker_helpers import HANG_S, wait_for
from worker_tasks import lines

import spoolq.pool
from spoolq.bookkeeping import INGEST, SETTLE
from spoolq.clock import StepClock
from spoolq.job import Job
from spoolq.layout import ACTIVE, DELAYED, DONE, FAILED, NEW, READY, job_name, parse_name, plain_name, timed_name
from spoolq.registry import discover
from spoolq.spool import Spool
from spoolq.supervisor import BARRIER_INTERVAL_S, Supervisor

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
HOUR = 3600.0


@pytest.fixture
def clock() -> StepClock:
    return StepClock(T0)


@pytest.fixture
def producer(spool_dir: Path) -> Iterator[Spool]:
    """Where the test enqueues: a spool of its own on the same directory, as a producer has."""
    s = Spool(spool_dir, fsync=False)
    yield s
    s.close()


@pytest.fixture
def make_sup(spool_dir: Path, clock: StepClock) -> Iterator[Callable[..., Supervisor]]:
    """Start a supervisor on the spool and the stepped clock; closed at the end."""
    started: list[Supervisor] = []

    def make(**options: Any) -> Supervisor:
        options.setdefault("concurrency", 1)
        registry = discover(["worker_tasks"], use_entry_points=False)
        sup = Supervisor(Spool(spool_dir, fsync=False), registry, clock=clock, **options)
        sup.start()
        started.append(sup)
        return sup

    yield make
    for sup in started:
        sup.close()


def enqueue(producer: Spool, job_id: str, task: str, *args: object, **fields: Any) -> Job:
    job = Job(id=job_id, task=task, args=list(args), enqueued_at=T0, **fields)
    producer.publish(job)
    return job


def tick_until(sup: Supervisor, clock: StepClock, predicate: Callable[[], object], what: str) -> None:
    """Tick at the clock's current time until ``predicate`` holds, waiting between ticks for
    the children to answer or die (the clock does not move; the bound only catches a hang)."""
    deadline = time.monotonic() + HANG_S
    while True:
        sup.tick(clock.now())
        if predicate():
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        wait(sup.pool.waitables(), 0.05)


def names(sup: Supervisor, state: str) -> list[str]:
    return files_in(sup.spool.dir(state))


# -- delayed jobs -------------------------------------------------------------------------------


def test_a_delayed_job_is_promoted_when_the_clock_reaches_its_due_time_not_before(make_sup, producer, clock, tmp_path):
    # Given a job due 10 s after now, taken in into delayed/
    out = str(tmp_path / "ran")
    due = T0 + timedelta(seconds=10)
    enqueue(producer, "later", "wt.record", out, "later", eta=due)
    sup = make_sup()
    assert names(sup, DELAYED) == [timed_name("later", due)]
    # When the clock is a millisecond short of it, Then it stays in delayed/
    clock.advance(9.999)
    sup.tick(clock.now())
    assert names(sup, DELAYED) == [timed_name("later", due)]
    assert sup.index.next_due() == due
    # When the clock reaches it, Then it is promoted and run
    clock.advance(0.001)
    sup.tick(clock.now())
    assert names(sup, DELAYED) == []
    tick_until(sup, clock, lambda: lines(out), "the promoted job to run")
    assert [ln.split()[0] for ln in lines(out)] == ["later"]
    assert sup.index.next_due() is None


def test_delayed_jobs_are_promoted_in_due_order_as_the_clock_passes_each(make_sup, producer, clock):
    # Given three jobs due 30 s, 10 s and 20 s from now (each keeps its result in done/)
    for s in (30, 10, 20):
        enqueue(producer, f"d{s}", "wt.keep", s, 0, eta=T0 + timedelta(seconds=s))
    sup = make_sup()
    # When the clock moves one second per tick
    left_at: dict[str, int] = {}
    for second in range(1, 31):
        clock.advance(1)
        sup.tick(clock.now())
        waiting = {parse_name(DELAYED, n)[0] for n in names(sup, DELAYED)}
        for job_id in {"d10", "d20", "d30"} - waiting:
            left_at.setdefault(job_id, second)
    # Then each left delayed/ at the tick its due time was reached, not earlier
    assert left_at == {"d10": 10, "d20": 20, "d30": 30}
    # And each ran once and kept its result
    tick_until(sup, clock, lambda: len(names(sup, DONE)) == 3, "the three results")
    results = {job.id: job.result for job in (sup.spool.read(DONE, n) for n in names(sup, DONE))}
    assert results == {"d10": {"sum": 10}, "d20": {"sum": 20}, "d30": {"sum": 30}}


# -- taking in new/ -----------------------------------------------------------------------------


def test_without_events_a_job_in_new_is_taken_in_at_the_next_rescan_of_the_clock(make_sup, producer, clock, tmp_path):
    # Given a running supervisor with a rescan every 5 s and no filesystem events
    out = str(tmp_path / "ran")
    sup = make_sup(rescan_interval=5)
    sup.wakeups.watcher.stop()
    sup.tick(clock.now())
    # When a job lands in new/ without anyone saying so
    enqueue(producer, "quiet", "wt.record", out, "quiet")
    # Then it waits in new/ until 5 s of clock have passed since the last pass
    sup.tick(clock.now())
    clock.advance(4.9)
    sup.tick(clock.now())
    assert names(sup, NEW) == [plain_name("quiet")]
    assert lines(out) == []
    clock.advance(0.2)
    sup.tick(clock.now())
    assert names(sup, NEW) == []
    tick_until(sup, clock, lambda: lines(out), "the job to run")


def test_an_event_from_new_makes_the_next_tick_take_the_job_in_at_once(make_sup, producer, clock, tmp_path):
    # Given a supervisor with an hour between rescans, watching new/
    out = str(tmp_path / "ran")
    sup = make_sup(rescan_interval=HOUR)
    sup.tick(clock.now())
    sup.wakeups.watcher.take_pending()  # nothing pending from the start
    # When a job lands, the watcher says so (what run() does with it: intake is signalled)
    enqueue(producer, "loud", "wt.record", out, "loud")
    wait_for(sup.wakeups.watcher.take_pending, what="an inotify event for new/")
    sup.intake.signalled = True
    # Then the next tick takes it in without the clock moving
    sup.tick(clock.now())
    assert names(sup, NEW) == []
    tick_until(sup, clock, lambda: lines(out), "the job to run")


# -- the directory flush ------------------------------------------------------------------------


def test_moves_are_flushed_every_barrier_interval_of_the_clock(make_sup, producer, clock):
    # Given a supervisor whose flushes are counted
    sup = make_sup()
    flushed: list[float] = []
    barrier = sup.spool.barrier

    def counted() -> None:
        flushed.append(clock.mono())
        barrier()

    sup.spool.barrier = counted  # type: ignore[method-assign]
    sup.tick(clock.now())
    assert len(flushed) == 1
    # When a move makes the spool dirty, and the clock moves a little under the interval
    enqueue(producer, "x", "wt.record", "unused", "x", eta=T0 + timedelta(days=1))
    sup.intake.signalled = True
    sup.tick(clock.now())
    assert names(sup, DELAYED) and sup.spool.dirty
    clock.advance(BARRIER_INTERVAL_S - 0.001)
    sup.tick(clock.now())
    # Then it is not flushed yet; just after the interval it is
    assert len(flushed) == 1 and sup.spool.dirty
    clock.advance(0.002)
    sup.tick(clock.now())
    assert len(flushed) == 2 and not sup.spool.dirty
    # And ticking every 0.05 s of clock for 2 s flushes once per interval
    start = len(flushed)
    for _ in range(40):
        clock.advance(0.05)
        sup.tick(clock.now())
    gaps = [b - a for a, b in zip(flushed[start - 1 :], flushed[start:], strict=False)]
    assert 8 <= len(gaps) <= 10
    assert all(BARRIER_INTERVAL_S - 1e-6 <= g <= BARRIER_INTERVAL_S + 0.05 + 1e-6 for g in gaps), gaps


# -- time limits and shutdown -------------------------------------------------------------------


def test_a_jobs_hard_limit_is_enforced_on_the_clock_and_charged(make_sup, producer, clock, tmp_path):
    # Given a job with an hour's hard limit and one retry, that sleeps (really) a minute
    out = str(tmp_path / "ran")
    enqueue(producer, "slow", "wt.sleep", out, "slow", 60, time_limit=HOUR, max_retries=1)
    sup = make_sup()
    sup.tick(clock.now())
    wait_for(lambda: lines(out), what="the job to start")
    child = sup.pool.slots[0].process.pid
    # When the clock is just short of the limit, Then it runs on
    clock.advance(HOUR - 0.1)
    sup.tick(clock.now())
    assert names(sup, ACTIVE) == [plain_name("slow")]
    # When the clock passes it
    clock.advance(0.2)
    tick_until(sup, clock, lambda: names(sup, DELAYED), "the job to be recorded")
    # Then its child was killed and the job charged a retry with TimeLimitExceeded, due again
    # one second later (a death's first backoff)
    assert sup.pool.slots[0].process.pid != child
    due = clock.now() + timedelta(seconds=1)
    assert names(sup, DELAYED) == [timed_name("slow", due)]
    record = sup.spool.read(DELAYED, timed_name("slow", due))
    assert record.retries == 1
    assert [(e["type"], e["message"]) for e in record.errors] == [
        ("TimeLimitExceeded", "hard time limit (3600 s) exceeded")
    ]
    assert names(sup, ACTIVE) == []
    assert sup.counts["retried"] == 1
    assert [ln.split()[0] for ln in lines(out)] == ["start"]


def test_a_job_is_not_charged_with_the_time_limit_of_the_job_before_it(
    make_sup, producer, clock, tmp_path, monkeypatch
):
    # A regression test: tick() enforced the limits before it read the answers.
    # Given short jobs (prefetch on): "a" with a 10 s hard limit, then "b" without a limit
    # that sleeps (really) a minute, both handed to the one child at once
    out = str(tmp_path / "ran")
    enqueue(producer, "a", "wt.record", out, "a", time_limit=10)
    enqueue(producer, "b", "wt.sleep", out, "b", 60)
    sup = make_sup()
    sup.pool.avg_duration_s = 0.0
    kills: list[int] = []
    real_kill = spoolq.pool.kill_group
    monkeypatch.setattr(spoolq.pool, "kill_group", lambda pid: (kills.append(pid), real_kill(pid)))
    sup.tick(clock.now())
    assert [job.id for job, _, _ in sup.pool.slots[0].queue] == ["a", "b"]
    # When "a" has answered and "b" runs, and the clock passes a's deadline before the
    # supervisor read a's answer (it was busy, or woke for that deadline)
    wait_for(lambda: any(ln.startswith("start b") for ln in lines(out)), what="b to start")
    assert wait([sup.pool.slots[0].sock], HANG_S), "a's answer never came"  # in the pipe, unread
    clock.advance(10)
    sup.tick(clock.now())
    # Then a's success is recorded and b runs on: its child is not killed for a's limit
    assert sup.counts["succeeded"] == 1
    assert kills == []
    assert names(sup, ACTIVE) == [plain_name("b")]


def test_a_worker_time_limit_fails_a_job_without_retries_left(make_sup, producer, clock, tmp_path):
    out = str(tmp_path / "ran")
    job = enqueue(producer, "slow", "wt.sleep", out, "slow", 60, max_retries=0)
    sup = make_sup(time_limit=HOUR)
    sup.tick(clock.now())
    wait_for(lambda: lines(out), what="the job to start")
    clock.advance(HOUR)
    tick_until(sup, clock, lambda: names(sup, FAILED), "the job to fail")
    record = sup.spool.read(FAILED, job_name(FAILED, job, clock.now()))
    assert [e["type"] for e in record.errors] == ["TimeLimitExceeded"]
    assert sup.counts["failed"] == 1


def test_a_stop_kills_jobs_still_running_after_the_shutdown_timeout_and_puts_them_back(
    make_sup, producer, clock, tmp_path
):
    # Given a job that sleeps (really) a minute, running, and a shutdown timeout of 30 s
    out = str(tmp_path / "ran")
    job = enqueue(producer, "slow", "wt.sleep", out, "slow", 60)
    sup = make_sup(shutdown_timeout=30)
    sup.tick(clock.now())
    wait_for(lambda: lines(out), what="the job to start")
    child = sup.pool.slots[0].process
    # When a stop is asked for (what SIGTERM's handler does) and ticks follow
    sup.stopping = True
    sup.tick(clock.now())
    enqueue(producer, "after", "wt.record", out, "after")
    clock.advance(29.9)
    sup.tick(clock.now())
    # Then the job runs on for the timeout; nothing new is taken in meanwhile
    assert child.is_alive()
    assert names(sup, ACTIVE) == [plain_name("slow")]
    assert names(sup, NEW) == [plain_name("after")]
    assert not sup._finished()
    # When the timeout has passed
    clock.advance(0.2)
    sup.tick(clock.now())
    # Then the child was killed and the job is back in ready/, as it was: no attempt charged
    child.join(HANG_S)
    assert not child.is_alive()
    assert names(sup, ACTIVE) == []
    assert names(sup, READY) == [job_name(READY, job)]
    assert sup.spool.read(READY, job_name(READY, job)) == job
    assert sup._finished()
    assert sup.counts["retried"] == sup.counts["failed"] == 0
    assert [ln.split()[0] for ln in lines(out)] == ["start"]


def test_a_stop_waits_for_nothing_when_nothing_runs(make_sup, clock):
    sup = make_sup(shutdown_timeout=30)
    sup.stopping = True
    sup.tick(clock.now())
    assert sup._finished()


# -- I/O failures back off on the clock ---------------------------------------------------------


def test_taking_jobs_in_backs_off_on_the_clock_while_ready_cannot_be_written(
    make_sup, producer, clock, tmp_path, caplog
):
    caplog.set_level(logging.INFO, "spoolq.supervisor")
    # Given a running supervisor whose ready/ is removed and replaced by a file, so that no
    # job can be moved into it
    out = str(tmp_path / "ran")
    sup = make_sup(rescan_interval=HOUR)
    sup.tick(clock.now())
    ready_dir = sup.spool.dir(READY)
    os.rmdir(ready_dir)
    ready_dir.write_bytes(b"in the way")
    # When a job arrives and the supervisor tries to take it in
    enqueue(producer, "j", "wt.record", out, "j")
    sup.intake.signalled = True
    sup.tick(clock.now())
    # Then the failure is logged once, the job stays in new/, and taking in backs off 0.5 s
    streak = sup.faults.streaks[INGEST]
    assert streak.count == 1
    assert names(sup, NEW) == [plain_name("j")]
    failures = [r for r in caplog.records if "cannot take in new/j.json" in r.getMessage()]
    assert len(failures) == 1 and "retrying in 0.5 s" in failures[0].getMessage()
    # When ticks come before the backoff is over, Then nothing is tried
    for _ in range(4):
        clock.advance(0.1)
        sup.tick(clock.now())
    assert streak.count == 1
    # When it is over, Then one try is made, fails, and the backoff doubles
    clock.advance(0.2)
    sup.tick(clock.now())
    assert streak.count == 2
    assert streak.delay_s == 1.0
    clock.advance(0.9)
    sup.tick(clock.now())
    assert streak.count == 2
    # When ready/ can be made again and the backoff is over
    ready_dir.unlink()
    clock.advance(0.2)
    sup.tick(clock.now())
    # Then the job is taken in, the streak ends with one line, and the job runs
    assert INGEST not in sup.faults.streaks
    assert names(sup, NEW) == []
    assert any(r.getMessage().startswith(f"recovered: {INGEST} works again") for r in caplog.records)
    tick_until(sup, clock, lambda: lines(out), "the job to run")
    assert len([r for r in caplog.records if "cannot take in" in r.getMessage()]) == 1


def test_recording_an_outcome_backs_off_on_the_clock_and_the_job_waits_in_active(make_sup, producer, clock, tmp_path):
    # Given a running supervisor whose delayed/ is removed and replaced by a file, and a job
    # that asks to be retried (so its outcome is a record in delayed/)
    out = str(tmp_path / "ran")
    sup = make_sup(rescan_interval=HOUR)
    sup.tick(clock.now())
    delayed_dir = sup.spool.dir(DELAYED)
    os.rmdir(delayed_dir)
    delayed_dir.write_bytes(b"in the way")
    enqueue(producer, "r", "wt.retry", out, "r")
    sup.intake.signalled = True
    # When it runs and answers, Then its outcome cannot be recorded: it waits in active/
    tick_until(sup, clock, lambda: SETTLE in sup.faults.streaks, "the outcome to fail")
    streak = sup.faults.streaks[SETTLE]
    assert streak.count == 1
    assert names(sup, ACTIVE) == [plain_name("r")]
    assert len(sup.outcomes.unsettled) == 1
    # When ticks come before the backoff is over, Then it is not tried again
    clock.advance(0.4)
    sup.tick(clock.now())
    assert streak.count == 1
    # When it is over, Then it is tried (and fails) once more
    clock.advance(0.2)
    sup.tick(clock.now())
    assert streak.count == 2
    # When delayed/ can be made again and the (doubled) backoff is over
    delayed_dir.unlink()
    clock.advance(0.9)
    sup.tick(clock.now())
    assert streak.count == 2 and names(sup, ACTIVE) == [plain_name("r")]
    clock.advance(0.2)
    sup.tick(clock.now())
    # Then the retry is recorded once, charged once, and the job left active/
    assert SETTLE not in sup.faults.streaks
    assert sup.outcomes.unsettled == []
    assert names(sup, ACTIVE) == []
    [record] = [sup.spool.read(DELAYED, n) for n in names(sup, DELAYED)]
    assert record.retries == 1
    assert [e["message"] for e in record.errors] == ["transient 0"]
    assert lines(out) == ["r 0"]
