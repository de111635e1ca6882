"""Stopping the supervisor: gracefully, at once, or by a crash; and one per spool.

SIGTERM lets running jobs finish and leaves the rest queued; a second signal stops at once
and returns the unfinished job to ``ready/``; SIGKILL of the whole process group loses
nothing either (the next start recovers ``active/`` and every job runs at least once).
"""

from __future__ import annotations

import os
import signal

import pytest
from worker_helpers import Worker, burst, listing, read_job, wait_for
from worker_tasks import lines

import spoolq

pytestmark = pytest.mark.timeout(120)


def _started(out: str) -> list[str]:
    return [ln.split()[1] for ln in lines(out) if ln.startswith("start ")]


def test_sigterm_lets_running_jobs_finish_and_leaves_the_rest_queued(tmp_path):
    spool, out = tmp_path / "spool", str(tmp_path / "ran")
    app = spoolq.App(spool)
    w = Worker(spool, "-c", "2", "--shutdown-timeout", "25").wait_ready()
    running = [app.send_task("wt.sleep", args=[out, f"r{i}", 1.0]).id for i in range(2)]
    wait_for(lambda: len(_started(out)) == 2, what="both jobs running")
    queued = [app.send_task("wt.record", args=[out, f"q{i}"]).id for i in range(5)]

    w.signal(signal.SIGTERM)
    status = w.wait()

    assert status == 0, w.text()
    assert sorted(ln for ln in lines(out) if ln.startswith("end")) == ["end r0", "end r1"]
    assert not any(ln.startswith("q") for ln in lines(out))
    state = listing(spool)
    assert state["active"] == [] and state["failed"] == [] and state["delayed"] == []
    waiting = state["ready"] + state["new"]
    assert sorted(n[-41:-5] for n in waiting) == sorted(queued)  # the ids (UUIDs) in the names
    assert not any(r in n for r in running for n in waiting)
    # Nothing was lost: the next run does the rest.
    status, _, log = burst(spool, "-c", "2")
    assert status == 0, log
    assert sorted(ln.split()[0] for ln in lines(out) if ln.startswith("q")) == [f"q{i}" for i in range(5)]


def test_a_second_signal_stops_at_once_and_returns_the_job_to_ready(tmp_path):
    spool, out = tmp_path / "spool", str(tmp_path / "ran")
    app = spoolq.App(spool)
    w = Worker(spool, "-c", "1", "--shutdown-timeout", "60").wait_ready()
    job_id = app.send_task("wt.sleep", args=[out, "long", 60]).id
    wait_for(lambda: _started(out) == ["long"], what="the job running")

    w.signal(signal.SIGTERM)
    wait_for(lambda: "stopping" in w.text(), what="the graceful stop")
    assert w.proc.poll() is None  # still waiting for the job
    w.signal(signal.SIGINT)
    status = w.wait(20)  # far less than the job's 60 s and the 60 s grace

    assert status == 0, w.text()
    state = listing(spool)
    assert state["active"] == []
    assert [n for n in state["ready"] if n.endswith(f"-{job_id}.json")] == state["ready"]
    job = read_job(spool, "ready", job_id)
    assert job["retries"] == 0 and job["errors"] == []  # not charged: the worker stopped it
    assert not any(ln.startswith("end") for ln in lines(out))


def test_the_shutdown_timeout_returns_a_job_that_runs_too_long(tmp_path):
    spool, out = tmp_path / "spool", str(tmp_path / "ran")
    app = spoolq.App(spool)
    w = Worker(spool, "-c", "1", "--shutdown-timeout", "0.5").wait_ready()
    job_id = app.send_task("wt.sleep", args=[out, "long", 60]).id
    wait_for(lambda: _started(out) == ["long"], what="the job running")

    w.signal(signal.SIGTERM)
    status = w.wait(20)

    assert status == 0, w.text()
    assert read_job(spool, "ready", job_id)["retries"] == 0
    assert listing(spool)["active"] == []


def test_sigterm_to_the_whole_group_is_a_graceful_stop_too(tmp_path):
    # systemd (KillMode=control-group) and supervisord (stopasgroup) signal every process:
    # the children ignore it, the supervisor stops gracefully even if it must replace one.
    spool, out = tmp_path / "spool", str(tmp_path / "ran")
    app = spoolq.App(spool)
    w = Worker(spool, "-c", "2", "--max-tasks-per-child", "1", "--shutdown-timeout", "25").wait_ready()
    running = [app.send_task("wt.sleep", args=[out, f"r{i}", 1.0]).id for i in range(2)]
    wait_for(lambda: len(_started(out)) == 2, what="both jobs running")
    queued = [app.send_task("wt.record", args=[out, f"q{i}"]).id for i in range(3)]

    os.killpg(w.pid, signal.SIGTERM)
    status = w.wait()

    assert status == 0, w.text()
    assert sorted(ln for ln in lines(out) if ln.startswith("end")) == ["end r0", "end r1"]
    state = listing(spool)
    assert state["active"] == [] and state["failed"] == []
    assert sorted(n[-41:-5] for n in state["ready"] + state["new"]) == sorted(queued)
    assert "Traceback" not in w.text()
    assert running


def test_sigkill_of_the_whole_group_under_load_loses_nothing(tmp_path):
    spool, out = tmp_path / "spool", str(tmp_path / "ran")
    app = spoolq.App(spool, fsync=False)
    ids = [j.id for j in app.send_many([("wt.record", [out, f"k{i}"], None) for i in range(300)])]
    w = Worker(spool, "-c", "2").wait_ready()
    wait_for(lambda: len(lines(out)) >= 30, what="some jobs done")

    w.kill_group()
    before = listing(spool)
    status, _, log = burst(spool, "-c", "2")

    assert status == 0, log
    ran = {ln.split()[0] for ln in lines(out)}
    assert ran == {f"k{i}" for i in range(300)}  # every job ran at least once
    after = listing(spool)
    assert all(after[s] == [] for s in ("new", "ready", "active", "delayed", "failed")), after
    if before["active"]:
        assert "recovered after a crash" in log
    assert len(ids) == 300


def test_sigkill_of_the_supervisor_alone_then_restart(tmp_path):
    spool, out = tmp_path / "spool", str(tmp_path / "ran")
    app = spoolq.App(spool)
    w = Worker(spool, "-c", "1").wait_ready()
    job_id = app.send_task("wt.sleep", args=[out, "orphan", 0.5]).id
    wait_for(lambda: _started(out) == ["orphan"], what="the job running")

    w.signal(signal.SIGKILL)
    w.wait()
    assert listing(spool)["active"] == [f"{job_id}.json"]
    status, _, log = burst(spool, "-c", "1")  # the orphaned child does not hold the lock

    assert status == 0, log
    assert "recovered after a crash" in log
    assert _started(out).count("orphan") >= 1
    assert all(listing(spool)[s] == [] for s in ("new", "ready", "active", "delayed", "failed"))


def test_a_second_worker_on_the_spool_exits_naming_the_holder(tmp_path):
    spool = tmp_path / "spool"
    spoolq.App(spool)
    w = Worker(spool, "-c", "1").wait_ready()
    try:
        second = Worker(spool, "-c", "1")
        status = second.wait()
        assert status != 0
        assert f"pid {w.pid}" in second.text()
        assert w.proc.poll() is None  # the holder is untouched
    finally:
        assert w.stop() == 0
    assert os.path.exists(spool / "spoolq.lock")
