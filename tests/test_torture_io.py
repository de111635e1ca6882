"""Torture: I/O that keeps failing, and a spool that moves or vanishes under a live worker.

For each persistent failure (no space for a move, a read-only spool, directories the worker's
user cannot write, state directories removed) the worker must back off instead of spinning
(CPU near idle, a handful of log lines), lose nothing, make no duplicates, and carry on once
the cause is gone; with ``--burst`` it must give up with status 3 rather than wait for ever.
A spool that is moved away or removed stops its worker with status 3 and a clear error, and
no job ever runs twice.  The bounds only catch a spin (100 % CPU, thousands of lines a
second); ``bench/faults.py`` measures the figures over a minute.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from io_faults import (
    LiveWorker,
    break_ext4,
    drop_permission_override,
    fill,
    permissions_enforced,
    repair_ext4,
    small_ext4,
)
from torture_tasks import TESTS_DIR, child_env, duplicates, read_lines, worker_argv

import spoolq
from spoolq.layout import ACTIVE, DELAYED, DIRS, DONE, FAILED, NEW, READY, STATES, TMP

pytestmark = [pytest.mark.torture, pytest.mark.timeout(240)]

WINDOW_S = 4.0  # how long a worker facing a persistent error is watched
MAX_CPU_PERCENT = 10.0  # a spinning worker shows ~100
MAX_LINES = 6  # a spinning worker logs thousands


def _enqueue(spool: Path, ids: list[str], run_log: Path, task: str = "torture.record", **options: object) -> None:
    app = spoolq.App(spool)
    for job_id in ids:
        app.send_task(task, args=[str(run_log), job_id], task_id=job_id, **options)
    app.spool.close()


def _settled(spool: Path) -> bool:
    return all(not os.listdir(spool / s) for s in (NEW, READY, ACTIVE))


def _assert_backs_off(worker: LiveWorker, what: str) -> None:
    usage = worker.measure(WINDOW_S)
    assert usage.cpu_percent < MAX_CPU_PERCENT, f"{what}: {usage.cpu_percent:.0f} % CPU\n{worker.text()[-2000:]}"
    assert usage.log_lines <= MAX_LINES, f"{what}: {usage.log_lines} log lines\n{worker.text()[-3000:]}"
    assert worker.proc.poll() is None, worker.text()[-3000:]


# -- no space for a move ------------------------------------------------------------------


def test_no_space_for_a_move_backs_off_then_nothing_is_lost(tmp_path: Path) -> None:
    with small_ext4(tmp_path / "disk") as disk:
        if isinstance(disk, str):
            pytest.skip(disk)
        spool, run_log = disk / "spool", tmp_path / "ran"
        # Given a spool whose lock file exists, 300 jobs due in an hour in new/, a disk filled
        # to the last block, and delayed/'s blocks full of other names: no job can be moved
        # into delayed/, and nothing leaves it to make room
        done = subprocess.run(
            worker_argv(spool, "--burst"), env=child_env(), cwd=TESTS_DIR, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        ids = [f"m{i:04d}-{'x' * 40}" for i in range(300)]
        _enqueue(spool, ids, run_log, countdown=3600)
        for _ in range(3):  # ext4 gives back preallocated blocks a while after a file is closed
            fill(disk / "ballast")
            os.sync()
        fillers = 0
        while True:
            try:
                (spool / DELAYED / f"filler-{fillers:05d}-{'f' * 40}").touch()
            except OSError:
                break
            fillers += 1
        # When a worker runs on it
        worker = LiveWorker(spool, tmp_path / "worker.log")
        try:
            worker.wait_for(lambda: "No space left on device" in worker.text(), "ENOSPC")
            # Then it backs off: near idle, a few lines
            _assert_backs_off(worker, "ENOSPC on a move")
            assert len(os.listdir(spool / NEW)) > len(ids) // 2, "the jobs that could not move are still in new/"
            # and once space returns, every job is taken in exactly once
            (disk / "ballast").unlink()
            worker.wait_for(lambda: not os.listdir(spool / NEW), "new/ taken in", 120)
        finally:
            status = worker.stop()
        assert status == 0, worker.text()[-3000:]
        names = [n for n in os.listdir(spool / DELAYED) if not n.startswith("filler-")]
        assert sorted(n.split("-", 1)[1][:-5] for n in names) == sorted(ids)
        assert len(os.listdir(spool / DELAYED)) == len(ids) + fillers  # foreign files are left alone
        assert "recovered: taking jobs in from new/ works again" in worker.text()
        assert os.listdir(spool / FAILED) == [] and read_lines(run_log) == []


# -- a read-only spool --------------------------------------------------------------------


def test_a_spool_turned_read_only_backs_off_and_loses_nothing(tmp_path: Path) -> None:
    with small_ext4(tmp_path / "disk", 32, "errors=remount-ro") as disk:
        if isinstance(disk, str):
            pytest.skip(disk)
        spool, run_log = disk / "spool", tmp_path / "ran"
        _enqueue(spool, ["warm"], run_log)
        worker = LiveWorker(spool, tmp_path / "worker.log")
        try:
            worker.wait_for(lambda: read_lines(run_log) == ["warm"], "the first job")
            # Given jobs waiting while the worker is paused, then a disk error that makes the
            # kernel turn the spool's filesystem read-only
            os.kill(worker.proc.pid, signal.SIGSTOP)
            ids = [f"ro{i}" for i in range(50)]
            _enqueue(spool, ids, run_log, task="torture.keep")
            break_ext4(disk)
            os.kill(worker.proc.pid, signal.SIGCONT)
            worker.wait_for(lambda: "Read-only file system" in worker.text(), "EROFS")
            # Then it backs off, and stops cleanly when told to
            _assert_backs_off(worker, "read-only spool")
        finally:
            os.kill(worker.proc.pid, signal.SIGCONT)
            status = worker.stop()
        assert status == 0, worker.text()[-3000:]
        assert "Traceback" not in worker.text()
        # and once the filesystem is checked and mounted again, every job runs exactly once
        repair_ext4(disk)
        done = subprocess.run(
            worker_argv(spool, "--burst"), env=child_env(), cwd=TESTS_DIR, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-3000:]
        ran = read_lines(run_log)
        assert sorted(ran) == sorted(["warm", *ids]) and not duplicates(ran)
        assert len(os.listdir(spool / DONE)) == len(ids) and _settled(spool)


# -- directories the worker's user cannot write -------------------------------------------


def test_directories_not_writable_by_the_workers_user(tmp_path: Path) -> None:
    why = permissions_enforced()
    if why:
        pytest.skip(why)
    spool, run_log = tmp_path / "spool", tmp_path / "ran"
    _enqueue(spool, ["warm"], run_log)
    worker = LiveWorker(spool, tmp_path / "worker.log", obey_modes=True)  # as any user but root
    try:
        worker.wait_for(lambda: read_lines(run_log) == ["warm"], "the first job")
        # Given new/ that the worker cannot write (it cannot move jobs out of it)
        os.chmod(spool / NEW, 0o500)
        ids = [f"ro{i}" for i in range(20)]
        _enqueue(spool, ids, run_log)  # the producer (root here) still can
        worker.wait_for(lambda: "Permission denied" in worker.text(), "EACCES on new/")
        _assert_backs_off(worker, "new/ not writable")
        os.chmod(spool / NEW, 0o700)
        worker.wait_for(lambda: len(read_lines(run_log)) == 21 and _settled(spool), "the jobs", 90)
        # Given failed/ that the worker cannot write, and jobs of an unknown task and jobs
        # that fail mixed with good ones
        os.chmod(spool / FAILED, 0o500)
        mark = len(worker.text())
        bad = [f"unknown{i}" for i in range(3)]
        _enqueue_unknown(spool, bad)
        failing = [f"fail{i}" for i in range(3)]
        _enqueue(spool, failing, run_log, task="torture.fail")
        good = [f"good{i}" for i in range(10)]
        _enqueue(spool, good, run_log)
        # Then the good ones still run, the others wait without piling up
        worker.wait_for(lambda: set(good) <= set(read_lines(run_log)), "the good jobs", 60)
        worker.wait_for(lambda: "Permission denied" in worker.text()[mark:], "EACCES on failed/")
        _assert_backs_off(worker, "failed/ not writable")
        assert os.listdir(spool / FAILED) == []
        # and once failed/ is writable, each ends there exactly once
        os.chmod(spool / FAILED, 0o700)
        worker.wait_for(lambda: len(os.listdir(spool / FAILED)) == 6 and _settled(spool), "failed/", 90)
    finally:
        os.chmod(spool / NEW, 0o700)
        os.chmod(spool / FAILED, 0o700)
        status = worker.stop()
    assert status == 0, worker.text()[-3000:]
    failed = sorted(os.listdir(spool / FAILED))
    assert sorted(n.split("-", 1)[1][:-5] for n in failed) == sorted(bad + failing), failed
    ran = read_lines(run_log)
    assert not duplicates(ran) and set(ran) == {"warm", *ids, *failing, *good}


def _enqueue_unknown(spool: Path, ids: list[str]) -> None:
    app = spoolq.App(spool)
    for job_id in ids:
        app.send_task("no.such.task", task_id=job_id)
    app.spool.close()


def test_burst_gives_up_with_status_3_when_it_cannot_make_progress(tmp_path: Path) -> None:
    why = permissions_enforced()
    if why:
        pytest.skip(why)
    spool, run_log = tmp_path / "spool", tmp_path / "ran"
    # Given a job of an unknown task and a good one, and failed/ the worker cannot write
    _enqueue_unknown(spool, ["lost-cause"])
    _enqueue(spool, ["good"], run_log)
    os.chmod(spool / FAILED, 0o500)
    # When a burst worker runs
    started = time.monotonic()
    done = subprocess.run(
        worker_argv(spool, "--burst"),
        env=child_env(),
        cwd=TESTS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=drop_permission_override,
    )
    os.chmod(spool / FAILED, 0o700)
    # Then the good job ran, and it exits 3 saying why instead of waiting for ever
    assert read_lines(run_log) == ["good"]
    assert done.returncode == 3, (done.returncode, done.stderr[-3000:])
    assert "giving up (--burst)" in done.stderr and "Permission denied" in done.stderr
    assert time.monotonic() - started < 90
    assert os.listdir(spool / NEW) == ["lost-cause.json"]  # untouched, nothing lost


# -- removed directories ------------------------------------------------------------------


def test_removed_state_directories_are_created_again(tmp_path: Path) -> None:
    spool, run_log = tmp_path / "spool", tmp_path / "ran"
    _enqueue(spool, ["warm"], run_log)
    worker = LiveWorker(spool, tmp_path / "worker.log")
    try:
        worker.wait_for(lambda: read_lines(run_log) == ["warm"], "the first job")
        for n, state in enumerate([READY, ACTIVE, DELAYED, FAILED, DONE, TMP, NEW]):
            # Given a state directory removed (rm -rf) while the worker runs
            shutil.rmtree(spool / state)
            worker.wait_for(lambda state=state: (spool / state).is_dir(), f"{state}/ created again", 10)
            # Then jobs of every kind still go through it
            _enqueue(spool, [f"now{n}"], run_log)
            _enqueue(spool, [f"later{n}"], run_log, countdown=0.3)
            _enqueue(spool, [f"fail{n}"], run_log, task="torture.fail")
            _enqueue(spool, [f"keep{n}"], run_log, task="torture.keep")
            worker.wait_for(
                lambda n=n: (
                    {f"now{n}", f"later{n}", f"fail{n}", f"keep{n}"} <= set(read_lines(run_log))
                    and _settled(spool)
                    and not os.listdir(spool / DELAYED)
                ),
                f"the jobs after {state}/",
                30,
            )
            assert any(f.endswith(f"-fail{n}.json") for f in os.listdir(spool / FAILED)), state
            assert f"keep{n}.json" in os.listdir(spool / DONE), state
        _assert_backs_off(worker, "after the directories came back")
    finally:
        status = worker.stop()
    assert status == 0, worker.text()[-3000:]
    assert not duplicates(read_lines(run_log))
    for d in DIRS:
        assert (spool / d).stat().st_mode & 0o777 == 0o700, d
    assert "created it again" in worker.text()


def test_a_running_jobs_file_removed_by_hand_does_not_stall_the_worker(tmp_path: Path) -> None:
    spool, run_log = tmp_path / "spool", tmp_path / "ran"
    app = spoolq.App(spool)
    app.send_task("torture.sleep", args=[str(run_log), "long", 1.5], task_id="long")
    worker = LiveWorker(spool, tmp_path / "worker.log")
    try:
        worker.wait_for(lambda: os.listdir(spool / ACTIVE) == ["long.json"], "the long job to start")
        # Given the running job's file removed by hand
        (spool / ACTIVE / "long.json").unlink()
        # Then new jobs still run, and the worker is not stuck retrying its bookkeeping
        ids = [f"after{i}" for i in range(5)]
        _enqueue(spool, ids, run_log)
        worker.wait_for(lambda: set(ids) <= set(read_lines(run_log)), "the later jobs", 30)
        worker.wait_for(lambda: "long" in read_lines(run_log), "the long job to end", 30)
        _assert_backs_off(worker, "after the removal")
    finally:
        status = worker.stop()
    assert status == 0, worker.text()[-3000:]
    assert "no longer in active/" in worker.text()
    assert _settled(spool)
    app.spool.close()


# -- a spool that moves or vanishes ---------------------------------------------------------


def test_a_spool_moved_away_stops_its_worker_and_no_job_runs_twice(tmp_path: Path) -> None:
    old, moved, run_log = tmp_path / "spool", tmp_path / "moved", tmp_path / "ran"
    app = spoolq.App(old)
    for i in range(3):
        app.send_task("torture.sleep", args=[str(run_log), f"s{i}", 1.5], task_id=f"s{i}")
    app.spool.close()
    first = LiveWorker(old, tmp_path / "first.log")
    second = None
    try:
        first.wait_for(lambda: len(os.listdir(old / ACTIVE)) == 2, "two jobs to start")
        # When the spool is renamed while they run, and a second worker starts on the old path
        os.rename(old, moved)
        second = LiveWorker(old, tmp_path / "second.log")
        second.wait_for(lambda: "ready:" in second.text(), "the second worker")
        spoolq.App(old).send_task("torture.record", args=[str(run_log), "fresh"], task_id="fresh")
        # Then the first one stops with status 3 and a clear reason, after recording its
        # running jobs in the spool where it now is
        first.wait_for(lambda: first.proc.poll() is not None, "exit of the first worker", 30)
        assert first.proc.returncode == 3, first.text()[-3000:]
        assert "now leads to another directory" in first.text() and "stops taking jobs" in first.text()
        second.wait_for(lambda: "fresh" in read_lines(run_log), "the fresh job", 30)
    finally:
        first.stop()
        if second is not None:
            assert second.stop() == 0, second.text()[-3000:]
    assert os.listdir(moved / ACTIVE) == []
    assert [n for n in os.listdir(moved / READY)] and len(os.listdir(moved / READY)) == 1  # the third, untouched
    # and a worker on the moved spool runs what is left there: each job ran exactly once
    done = subprocess.run(
        worker_argv(moved, "--burst"), env=child_env(), cwd=TESTS_DIR, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ran = read_lines(run_log)
    assert sorted(ran) == ["fresh", "s0", "s1", "s2"], ran


def test_a_removed_spool_stops_its_worker_with_a_clear_error(tmp_path: Path) -> None:
    spool, run_log = tmp_path / "spool", tmp_path / "ran"
    app = spoolq.App(spool)
    app.send_task("torture.sleep", args=[str(run_log), "long", 30], task_id="long")
    app.spool.close()
    worker = LiveWorker(spool, tmp_path / "worker.log", "--shutdown-timeout", "1")
    try:
        worker.wait_for(lambda: os.listdir(spool / ACTIVE), "the job to start")
        # When the whole spool is removed
        shutil.rmtree(spool)
        # Then the worker stops on its own, status 3, saying why, without spinning meanwhile
        worker.wait_for(lambda: worker.proc.poll() is not None, "exit of the worker", 30)
    finally:
        status = worker.stop()
    assert status == 3, worker.text()[-3000:]
    assert "is gone" in worker.text()
    assert worker.text().count("\n") < 40, worker.text()[-3000:]
    assert all(not (spool / s).exists() for s in STATES)  # nothing recreated at the old path
