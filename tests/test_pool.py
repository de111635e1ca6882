"""The pool (:mod:`spoolq.pool`) with real children on a stepped clock.

Children are real forkserver processes running ``tests/worker_tasks.py``; the pool's timers
(hard limits, the soft limit's grace) read a :class:`~spoolq.clock.StepClock`, so a limit of
an hour is reached by stepping the clock, not by waiting.  The only real waits are for a
child to answer or to be seen dead, bounded generously to catch a hang.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import pytest
from worker_helpers import HANG_S, wait_for
from worker_tasks import lines

from spoolq.clock import StepClock
from spoolq.job import Job
from spoolq.layout import ACTIVE, READY, job_name, plain_name
from spoolq.pool import PREFETCH, PREFETCH_BELOW_S, Pool, Slot, job_limit
from spoolq.protocol import Answer, Kind
from spoolq.spool import Spool

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
HOUR = 3600.0


@pytest.fixture
def spool(spool_dir: Path) -> Iterator[Spool]:
    s = Spool(spool_dir, fsync=False)
    yield s
    s.close()


@pytest.fixture
def clock() -> StepClock:
    return StepClock(T0)


@pytest.fixture
def make_pool(spool: Spool, clock: StepClock) -> Iterator:
    """Start a real pool on the spool and the stepped clock; stopped at the end."""
    pools: list[Pool] = []

    def make(size: int = 1, **options: Any) -> Pool:
        pool = Pool(
            size, ["worker_tasks"], spool_root=str(spool.path), spool_options={"fsync": False}, clock=clock, **options
        )
        pool.start()
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.stop()


def ready(spool: Spool, job_id: str, task: str, *args: object) -> tuple[Job, str]:
    """A job of ``task`` in ready/, as the supervisor hands it out: (job, its ready/ name)."""
    job = Job(id=job_id, task=task, args=list(args), enqueued_at=T0)
    name = job_name(READY, job)
    spool.write(READY, name, job)
    return job, name


def submit(
    pool: Pool,
    slot: Slot,
    job: Job,
    name: str,
    *,
    soft: float | None = None,
    hard: float | None = None,
    discard: bool = True,
) -> None:
    pool.submit(slot, job, name, soft_limit=soft, hard_limit=hard, discard=discard)
    pool.flush()


def collect(pool: Pool, n: int = 1) -> list[tuple[Job, Answer, str]]:
    """Wait (bounded) until ``n`` jobs have ended; what :meth:`Pool.collect` reported."""
    ended: list[tuple[Job, Answer, str]] = []
    deadline = time.monotonic() + HANG_S
    while len(ended) < n:
        assert time.monotonic() < deadline, f"only {len(ended)} of {n} jobs ended"
        ready_fds = set(wait(pool.waitables(), 0.1))
        ended += pool.collect(ready_fds)
    return ended


# -- running jobs ---------------------------------------------------------------------------------


def test_a_submitted_job_is_claimed_run_and_answered(make_pool, spool, tmp_path):
    # Given a pool of one and a job in ready/
    pool = make_pool()
    out = str(tmp_path / "ran")
    job, name = ready(spool, "r1", "wt.record", out, "r1")
    # When it is handed to the child (which removes a plain success itself)
    submit(pool, pool.slots[0], job, name)
    [(got, answer, got_name)] = collect(pool)
    # Then the child ran it and answered success, and the job left ready/ and active/
    assert (got, got_name) == (job, name)
    assert answer.kind is Kind.SUCCESS and answer.result == "r1" and answer.discarded
    assert lines(out) == [f"r1 {pool.slots[0].process.pid}"]
    assert not spool.has(READY, name) and not spool.has(ACTIVE, plain_name("r1"))
    assert not pool.busy()


def test_a_result_to_keep_is_answered_and_left_in_active_for_the_supervisor(make_pool, spool):
    pool = make_pool()
    job, name = ready(spool, "k1", "wt.keep", 1, 2)
    submit(pool, pool.slots[0], job, name, discard=False)
    [(_, answer, _)] = collect(pool)
    assert answer.kind is Kind.SUCCESS and answer.result == {"sum": 3} and not answer.discarded
    assert spool.has(ACTIVE, plain_name("k1"))
    # The average run time moves a fifth of the way towards this run's
    assert pool.avg_duration_s == pytest.approx(0.8 * 1.0 + 0.2 * answer.duration_s)


def test_a_job_gone_from_ready_is_answered_gone_without_running(make_pool, spool, tmp_path):
    pool = make_pool()
    out = str(tmp_path / "ran")
    job, name = ready(spool, "g1", "wt.record", out, "g1")
    spool.remove(READY, name)
    submit(pool, pool.slots[0], job, name)
    [(_, answer, _)] = collect(pool)
    assert answer.kind is Kind.GONE and not answer.kind.claimed
    assert lines(out) == []


# -- time limits on the stepped clock ---------------------------------------------------------


def test_a_hard_limit_kills_the_child_when_the_clock_passes_it_and_the_slot_is_replaced(
    make_pool, spool, clock, tmp_path
):
    # Given a job with an hour's hard limit that sleeps (really) for a minute, running
    pool = make_pool()
    out = str(tmp_path / "ran")
    job, name = ready(spool, "h1", "wt.sleep", out, "h1", 60)
    slot = pool.slots[0]
    first_pid = slot.process.pid
    submit(pool, slot, job, name, hard=HOUR)
    wait_for(lambda: lines(out), what="the job to start")
    assert pool.next_deadline() == clock.mono() + HOUR
    # When the clock reaches just short of the limit, Then nothing is killed
    clock.advance(HOUR - 0.001)
    pool.enforce_limits(clock.mono())
    assert slot.process.is_alive() and not slot.killed_for
    # When it passes the limit
    clock.advance(0.001)
    pool.enforce_limits(clock.mono())
    # Then the child is killed, and its job reported dead of the time limit, charged with
    # the stepped time it ran
    [(got, answer, got_name)] = collect(pool)
    assert (got, got_name) == (job, name)
    assert answer.kind is Kind.DIED
    assert answer.exc_type == "TimeLimitExceeded"
    assert answer.message == "hard time limit (3600 s) exceeded"
    assert answer.duration_s == pytest.approx(HOUR)
    assert lines(out) == [f"start h1 {first_pid}"]  # it never finished
    # And the slot has a new child, which runs the next job
    assert slot.process.pid != first_pid and slot.process.is_alive()
    assert not slot.killed_for and slot.deadline is None
    job2, name2 = ready(spool, "h2", "wt.record", out, "h2")
    submit(pool, slot, job2, name2)
    [(_, answer2, _)] = collect(pool)
    assert answer2.kind is Kind.SUCCESS
    assert lines(out)[-1] == f"h2 {slot.process.pid}"


def test_a_soft_limit_kills_the_child_after_the_grace_on_the_clock(make_pool, spool, clock, tmp_path):
    # Given a pool whose soft-limit grace is 5 s, and a job with a soft limit of an hour
    # (the child's own timer never fires in this test) that sleeps
    pool = make_pool(soft_grace_s=5)
    out = str(tmp_path / "ran")
    job, name = ready(spool, "s1", "wt.sleep", out, "s1", 60)
    slot = pool.slots[0]
    submit(pool, slot, job, name, soft=HOUR)
    wait_for(lambda: lines(out), what="the job to start")
    # When the clock passes the soft limit, but not the grace, Then the child lives
    clock.advance(HOUR + 4.9)
    pool.enforce_limits(clock.mono())
    assert slot.process.is_alive() and not slot.killed_for
    # When it passes the soft limit plus the grace, Then the child is killed and charged
    clock.advance(0.1)
    pool.enforce_limits(clock.mono())
    [(_, answer, _)] = collect(pool)
    assert answer.kind is Kind.DIED and answer.exc_type == "TimeLimitExceeded"
    assert answer.message == "soft time limit (3600 s) exceeded and the task did not stop within 5 s of grace"


def test_job_limit_takes_whichever_deadline_comes_first():
    assert job_limit(None, None, 30) is None
    assert job_limit(None, 10, 30) == (10, "hard time limit (10 s) exceeded")
    assert job_limit(10, None, 5)[0] == 15
    # a hard limit before the soft limit's grace ends wins, and the other way round
    assert job_limit(10, 12, 5) == (12, "hard time limit (12 s) exceeded")
    assert job_limit(10, 20, 5)[0] == 15


def test_a_deadline_is_timed_from_the_start_of_each_job_not_the_first(make_pool, spool, clock, tmp_path):
    # Given two short jobs with a hard limit of 10 s, one after the other on one child
    pool = make_pool()
    out = str(tmp_path / "ran")
    slot = pool.slots[0]
    job1, name1 = ready(spool, "a", "wt.record", out, "a")
    submit(pool, slot, job1, name1, hard=10)
    assert slot.deadline == clock.mono() + 10
    collect(pool)
    # When the second starts 8 s of clock later
    clock.advance(8)
    job2, name2 = ready(spool, "b", "wt.record", out, "b")
    submit(pool, slot, job2, name2, hard=10)
    # Then its deadline is 10 s after its own start
    assert slot.deadline == clock.mono() + 10
    [(_, answer, _)] = collect(pool)
    assert answer.kind is Kind.SUCCESS


# -- deaths and recycling -----------------------------------------------------------------------


def test_a_child_that_dies_fails_only_its_job_and_its_prefetched_jobs_come_back(make_pool, spool, tmp_path):
    # Given a child that may hold several jobs (short jobs: prefetch on), handed a job that
    # ends its process, then two more
    pool = make_pool()
    pool.avg_duration_s = 0.0
    assert pool.capacity() == PREFETCH
    out = str(tmp_path / "ran")
    slot = pool.slots[0]
    dead_pid = slot.process.pid
    job, name = ready(spool, "d1", "wt.die", out, "d1", "exit3")
    later = [ready(spool, f"n{i}", "wt.record", out, f"n{i}") for i in range(2)]
    for j, n in [(job, name), *later]:
        pool.submit(slot, j, n, soft_limit=None, hard_limit=None, discard=True)
    pool.flush()
    # When the child exits
    [(got, answer, _)] = collect(pool)
    # Then the job it ran is reported dead with the cause, charged to that job only
    assert got == job
    assert answer.kind is Kind.DIED
    assert (answer.exc_type, answer.message) == ("WorkerLost", "pool child exited with code 3")
    # And the jobs it had not claimed are handed back, still in ready/, and never ran
    assert pool.requeue == later
    assert all(spool.has(READY, n) for _, n in later)
    assert [ln.split()[0] for ln in lines(out)] == ["d1"]
    # And the child was replaced
    assert slot.process.pid != dead_pid and slot.process.is_alive()
    assert not slot.busy


def test_a_child_killed_from_outside_is_reported_with_the_signal(make_pool, spool, tmp_path):
    pool = make_pool()
    out = str(tmp_path / "ran")
    job, name = ready(spool, "k1", "wt.sleep", out, "k1", 60)
    submit(pool, pool.slots[0], job, name)
    wait_for(lambda: lines(out), what="the job to start")
    os.kill(pool.slots[0].process.pid, 9)
    [(_, answer, _)] = collect(pool)
    assert (answer.kind, answer.exc_type) == (Kind.DIED, "WorkerLost")
    assert answer.message == "pool child died: signal 9 (SIGKILL)"
    assert spool.has(ACTIVE, plain_name("k1"))  # claimed: the supervisor decides what next


def test_max_tasks_per_child_retires_a_child_after_that_many_jobs(make_pool, spool, tmp_path):
    # Given a pool whose children each run two jobs
    pool = make_pool(max_tasks_per_child=2)
    assert pool.capacity() == 1  # no prefetch: a retiring child must not hold jobs
    out = str(tmp_path / "ran")
    slot = pool.slots[0]
    # When three jobs run one after the other
    for i in range(3):
        job, name = ready(spool, f"m{i}", "wt.record", out, f"m{i}")
        submit(pool, slot, job, name)
        [(_, answer, _)] = collect(pool)
        assert answer.kind is Kind.SUCCESS
    # Then the first two ran in one child and the third in its replacement
    pids = [int(ln.split()[1]) for ln in lines(out)]
    assert pids[0] == pids[1] != pids[2]
    assert slot.process.pid == pids[2]


# -- capacity (no processes) -------------------------------------------------------------------


def test_capacity_prefetches_only_while_jobs_are_short():
    pool = Pool(2, [])
    # A pessimistic start: one job per child
    assert pool.avg_duration_s >= PREFETCH_BELOW_S and pool.capacity() == 1
    # Short jobs: several per child, to hide the round trip
    pool.avg_duration_s = PREFETCH_BELOW_S / 2
    assert pool.capacity() == PREFETCH
    # Long again: one
    pool.avg_duration_s = PREFETCH_BELOW_S
    assert pool.capacity() == 1
    # Recycling children never prefetches
    recycling = Pool(2, [], max_tasks_per_child=100)
    recycling.avg_duration_s = 0.0
    assert recycling.capacity() == 1


def test_room_and_free_count_the_jobs_held():
    pool = Pool(2, [])
    pool.slots = [Slot(0), Slot(1)]
    job = Job(id="x", task="t", enqueued_at=T0)
    pool.slots[0].queue.append((job, None, "n"))
    assert pool.room() == 1
    assert pool.free() == [pool.slots[1]]
    pool.avg_duration_s = 0.0
    assert pool.room() == 2 * PREFETCH - 1
    assert pool.free() == [pool.slots[1], pool.slots[0]]  # the idle one first
    assert pool.busy() == [pool.slots[0]]
