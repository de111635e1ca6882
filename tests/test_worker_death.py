"""A worker process that dies fails only its own job, with the cause, and is replaced.

Given a job whose task kills its own process (segfault, ``os._exit``, SIGKILL, out of
memory) or is killed from outside, when the worker runs it, then each death is charged as an
attempt with the cause in the job's errors, the job ends in ``failed/`` once its retries are
spent, every attempt ran in a fresh child, and later jobs still run.
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

CAUSES = {
    "segv": ("WorkerLost", "pool child died: signal 11 (SIGSEGV)"),
    "segv_signal": ("WorkerLost", "pool child died: signal 11 (SIGSEGV)"),
    "exit3": ("WorkerLost", "pool child exited with code 3"),
    "exit255": ("WorkerLost", "pool child exited with code 255"),  # what a dead forkserver also gives
    "sigkill": ("WorkerLost", "pool child died: signal 9 (SIGKILL)"),
    "oom": ("MemoryError", "pool child out of memory (MemoryError)"),
}


@pytest.mark.parametrize("how", sorted(CAUSES))
def test_a_dying_child_costs_an_attempt_and_the_job_fails_after_its_retries(tmp_path, how):
    spool, out = tmp_path / "spool", str(tmp_path / "ran")
    app = spoolq.App(spool)
    dying = app.send_task("wt.die", args=[out, "die", how]).id
    after = [app.send_task("wt.record", args=[out, f"after{i}"]).id for i in range(3)]

    status, _, log = burst(spool, "-c", "1")

    assert status == 0, log
    attempts = [ln.split() for ln in lines(out) if ln.startswith("die ")]
    assert len(attempts) == 3, log  # the first run and max_retries=2 retries
    assert len({pid for _, pid in attempts}) == 3  # each attempt in a new child
    assert where(spool, dying) == ["failed"]
    job = read_job(spool, "failed", dying)
    exc_type, cause = CAUSES[how]
    assert [e["attempt"] for e in job["errors"]] == [0, 1, 2]
    assert all(e["type"] == exc_type and cause in e["message"] for e in job["errors"]), job["errors"]
    assert job["retries"] == 2
    assert cause in log
    # The replacement children ran the rest.
    assert sorted(ln.split()[0] for ln in lines(out) if ln.startswith("after")) == ["after0", "after1", "after2"]
    assert all(where(spool, i) == [] for i in after)
    assert listing(spool)["active"] == []


def test_a_child_killed_from_outside_is_replaced_and_its_job_retried(tmp_path):
    spool, out = tmp_path / "spool", str(tmp_path / "ran")
    app = spoolq.App(spool)
    w = Worker(spool, "-c", "2").wait_ready()
    try:
        job_id = app.send_task("wt.die", args=[out, "victim", "external"]).id
        killed: list[int] = []
        for attempt in range(3):
            started = wait_for(
                lambda a=attempt: len([ln for ln in lines(out) if ln.startswith("victim")]) > a,
                what=f"attempt {attempt + 1}",
            )
            assert started
            pid = int([ln for ln in lines(out) if ln.startswith("victim")][attempt].split()[1])
            assert pid not in killed
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        wait_for(lambda: where(spool, job_id) == ["failed"], what="the job in failed/")
        job = read_job(spool, "failed", job_id)
        assert [e["message"] for e in job["errors"]] == ["pool child died: signal 9 (SIGKILL)"] * 3
        # The pool is whole again: two jobs run side by side afterwards.
        later = [app.send_task("wt.record", args=[out, f"later{i}"]).id for i in range(4)]
        wait_for(lambda: all(where(spool, i) == [] for i in later), what="later jobs")
        assert len([ln for ln in lines(out) if ln.startswith("later")]) == 4
    finally:
        assert w.stop() == 0
    assert listing(spool)["active"] == []


def _forkserver_of(pid: int) -> int:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[1]) == pid and b"multiprocessing.forkserver" in cmdline:
            return int(entry)
    raise AssertionError(f"no forkserver under pid {pid}")


def test_a_dead_forkserver_does_not_make_a_running_job_run_twice_at_once(tmp_path):
    # The supervisor learns a child's exit through the forkserver; when the forkserver dies
    # (OOM killer, kill -9), every child looks dead while it still runs.
    spool, out = tmp_path / "spool", str(tmp_path / "ran")
    app = spoolq.App(spool)
    w = Worker(spool, "-c", "1").wait_ready()
    try:
        job_id = app.send_task("wt.sleep", args=[out, "long", 3]).id
        wait_for(lambda: any(ln.startswith("start long") for ln in lines(out)), what="the job running")
        first_pid = int(lines(out)[0].split()[2])
        os.kill(_forkserver_of(w.pid), signal.SIGKILL)
        wait_for(lambda: where(spool, job_id) == [], timeout=60, what="the job finished")
        later = app.send_task("wt.record", args=[out, "later"]).id  # the pool still works
        wait_for(lambda: where(spool, later) == [], what="a later job")
    finally:
        assert w.stop() == 0
    starts = [ln.split()[2] for ln in lines(out) if ln.startswith("start long")]
    assert len(starts) == 2 and starts[0] == str(first_pid) != starts[1]
    assert [ln for ln in lines(out) if ln.startswith("end")] == ["end long"]  # the orphan was killed
    assert "forkserver died" in w.text()
    with pytest.raises(ProcessLookupError):
        os.kill(first_pid, 0)
