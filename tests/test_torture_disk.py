"""Torture: a full disk.  The spool lives on a 2 MiB tmpfs; a ballast file fills it.

Enqueue fails with a clear error and leaves nothing behind; a supervisor that cannot write an
outcome keeps the job where it was, logs, backs off, and carries on once space returns.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from torture_tasks import TESTS_DIR, child_env, read_lines, worker_argv

import spoolq
from spoolq.errors import SpoolError
from spoolq.layout import ACTIVE, DONE, NEW, READY, TMP

pytestmark = [pytest.mark.torture, pytest.mark.timeout(180)]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for this test (skipped where mounting is refused)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mnt)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip() or done.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def _fill(path: Path) -> None:
    """Write ``path`` until the disk is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        chunk = b"\0" * 65536
        while True:
            try:
                os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    return
                chunk = chunk[: len(chunk) // 2]
    finally:
        os.close(fd)


def test_enqueue_on_a_full_disk_fails_clearly_and_leaves_nothing(small_disk: Path) -> None:
    # Given a spool on a full disk
    app = spoolq.App(small_disk / "spool")
    app.send_task("torture.record", args=["x", "first"], task_id="first")
    ballast = small_disk / "ballast"
    _fill(ballast)
    # When a job is enqueued, then it fails with a clear error
    with pytest.raises(SpoolError, match="No space left on device"):
        app.send_task("torture.record", args=["x" * 10_000, "second"], task_id="second")
    # and nothing of it is left in new/ or tmp/
    assert os.listdir(app.spool.dir(NEW)) == ["first.json"]
    assert os.listdir(app.spool.dir(TMP)) == []
    # and once space returns, the same enqueue works
    ballast.unlink()
    app.send_task("torture.record", args=["x" * 10_000, "second"], task_id="second")
    assert sorted(os.listdir(app.spool.dir(NEW))) == ["first.json", "second.json"]
    app.spool.close()


def test_supervisor_on_a_full_disk_keeps_jobs_and_carries_on(small_disk: Path, tmp_path: Path) -> None:
    # Given jobs whose results are kept (a write at settle), and a running worker
    spool_dir, run_log, log = small_disk / "spool", tmp_path / "ran", tmp_path / "worker.log"
    app = spoolq.App(spool_dir)
    ids = [f"k{i}" for i in range(8)]
    for job_id in ids:
        app.send_task("torture.keep", args=[str(run_log), job_id, 0.4], task_id=job_id)
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            worker_argv(spool_dir, "--loglevel", "INFO"),
            env=child_env(),
            cwd=TESTS_DIR,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait(lambda: os.listdir(app.spool.dir(ACTIVE)), "a job to start")
        # When the disk fills up while the jobs run
        ballast = small_disk / "ballast"
        _fill(ballast)
        _wait(lambda: "cannot record its outcome" in log.read_text(errors="replace"), "the worker to hit ENOSPC")
        time.sleep(2)
        # Then the worker lives on, the jobs that ran are still where they were (active/)
        assert worker.poll() is None, log.read_text(errors="replace")[-3000:]
        assert os.listdir(app.spool.dir(ACTIVE)), "a job whose outcome could not be written left active/"
        assert len(os.listdir(app.spool.dir(DONE))) < len(ids)
        # and once space returns, every job finishes and its result is kept
        ballast.unlink()
        _wait(lambda: len(os.listdir(app.spool.dir(DONE))) == len(ids), "every result", timeout=90)
        assert worker.poll() is None
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    text = log.read_text(errors="replace")
    assert worker.returncode == 0, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert set(read_lines(run_log)) == set(ids)
    for state in (NEW, READY, ACTIVE, TMP):
        assert os.listdir(spool_dir / state) == [], state
    app.spool.close()


def _wait(predicate, what: str, timeout: float = 30) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_enqueue_with_no_inodes_left_raises_spool_error_and_leaves_nothing(tmp_path: Path) -> None:
    # Given a spool on a filesystem whose inodes are all used (a tmpfs with a few of them)
    mnt = tmp_path / "inodes"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,nr_inodes=32,mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip() or done.returncode}")
    try:
        app = spoolq.App(mnt / "spool")
        app.send_task("torture.record", args=["x", "first"], task_id="first")
        n = 0
        while True:
            try:
                (mnt / f"ballast-{n}").touch()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
            n += 1
        # When a job is enqueued, then it fails with the documented error, naming the cause
        with pytest.raises(SpoolError, match="No space left on device"):
            app.send_task("torture.record", args=["x", "second"], task_id="second")
        # and nothing of it is left behind
        assert os.listdir(app.spool.dir(NEW)) == ["first.json"]
        assert os.listdir(app.spool.dir(TMP)) == []
        app.spool.close()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)
