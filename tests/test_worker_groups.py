"""A job's own processes live and die with the worker process that runs it.

Each pool child leads a process group, so what a task forks shares it.  Given a task that
forks a grandchild (which, as a bare fork does, keeps the child's pipe to the supervisor
open), when the child is killed for its time limit, dies by itself, is stopped at shutdown or
loses its supervisor, then the grandchild dies too, and the death is charged with its real
cause: an open pipe is never taken for a lost forkserver.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from worker_helpers import Worker, burst, listing, read_job, wait_for, where
from worker_tasks import lines

import spoolq

pytestmark = pytest.mark.timeout(120)

LONG_S = 120  # how long the forked processes sleep: longer than any wait here


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, which may never be reaped here, counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _pid(out: str, prefix: str) -> int:
    found = wait_for(lambda: [ln for ln in lines(out) if ln.startswith(prefix + " ")], what=prefix)
    return int(found[0].split()[-1])


def _kill_noted(out: str) -> None:
    """Leave nothing running when a test fails: SIGKILL every pid the tasks noted."""
    for ln in lines(out):
        try:
            os.kill(int(ln.split()[-1]), signal.SIGKILL)
        except (ValueError, ProcessLookupError):
            pass


def test_a_hard_limit_kills_the_jobs_grandchildren_and_is_charged_as_a_time_limit(tmp_path):
    # Given a job that forks a grandchild, then sleeps past its 0.5 s hard limit
    spool, out = tmp_path / "spool", str(tmp_path / "ran")
    app = spoolq.App(spool)
    job_id = app.send_task("wt.fork", args=[out, "f", LONG_S], time_limit=0.5).id
    later = app.send_task("wt.record", args=[out, "later"]).id
    try:
        # When the worker runs it
        status, _, log = burst(spool, "-c", "1")

        # Then the kill is recorded as the time limit (not as a lost forkserver), the
        # grandchild died with the child, and the pool went on
        assert status == 0, log
        job = read_job(spool, "failed", job_id)
        errors = [(e["type"], e["message"]) for e in job["errors"]]
        assert errors == [("TimeLimitExceeded", "hard time limit (0.5 s) exceeded")], log
        assert "forkserver" not in log
        assert not _alive(_pid(out, "grandchild f"))
        assert where(spool, later) == []
    finally:
        _kill_noted(out)


def test_a_child_that_exits_leaving_a_grandchild_is_a_worker_death_not_a_lost_forkserver(tmp_path):
    # Given a job whose child exits with status 3 right after forking a grandchild
    spool, out = tmp_path / "spool", str(tmp_path / "ran")
    app = spoolq.App(spool)
    job_id = app.send_task("wt.fork", args=[out, "x", LONG_S, "exit3"]).id
    try:
        status, _, log = burst(spool, "-c", "1")

        # Then the death is the child's, with its status, and the leftover grandchild is killed
        assert status == 0, log
        job = read_job(spool, "failed", job_id)
        errors = [(e["type"], e["message"]) for e in job["errors"]]
        assert errors == [("WorkerLost", "pool child exited with code 3")], log
        assert "forkserver" not in log
        grandchild = _pid(out, "grandchild x")
        wait_for(lambda: not _alive(grandchild), what="the grandchild killed")
    finally:
        _kill_noted(out)


def test_the_shutdown_timeout_kills_a_running_jobs_grandchildren(tmp_path):
    # Given a worker running a job that forked a grandchild
    spool, out = tmp_path / "spool", str(tmp_path / "ran")
    app = spoolq.App(spool)
    w = Worker(spool, "-c", "1", "--shutdown-timeout", "0.3").wait_ready()
    try:
        job_id = app.send_task("wt.fork", args=[out, "s", LONG_S]).id
        child, grandchild = _pid(out, "start s"), _pid(out, "grandchild s")

        # When it is asked to stop and the job outlasts the shutdown timeout
        w.signal(signal.SIGTERM)
        assert w.wait() == 0, w.text()

        # Then the job is back in ready/, and neither the child nor the grandchild runs on
        assert where(spool, job_id) == ["ready"]
        wait_for(lambda: not _alive(child) and not _alive(grandchild), what="the job's processes gone")
    finally:
        if w.proc.poll() is None:
            w.kill_group()
        _kill_noted(out)


def test_a_killed_supervisor_takes_its_jobs_grandchildren_with_it(tmp_path):
    # Given a worker running a job that forked a grandchild
    spool, out = tmp_path / "spool", str(tmp_path / "ran")
    app = spoolq.App(spool)
    w = Worker(spool, "-c", "1").wait_ready()
    try:
        job_id = app.send_task("wt.fork", args=[out, "k", LONG_S]).id
        child, grandchild = _pid(out, "start k"), _pid(out, "grandchild k")

        # When the supervisor alone is SIGKILLed
        w.signal(signal.SIGKILL)
        w.wait()

        # Then the child and its grandchild both end: nothing of the job runs unsupervised
        # while the next supervisor recovers it from active/
        wait_for(lambda: not _alive(child) and not _alive(grandchild), what="the job's processes gone")
        assert listing(spool)["active"] == [f"{job_id}.json"]
    finally:
        _kill_noted(out)
