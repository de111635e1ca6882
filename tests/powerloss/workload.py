"""Record one run: producers and a real ``spoolq worker`` on a spool whose every device write
and flush the FUSE logger logs.

The stack, bottom up::

    tmp/live.img  <-  fuse_logger.py (logs to tmp/device.log)  <-  fuse/disk
        <-  /dev/loopN  <-  ext4 | xfs | btrfs at tmp/fs  <-  tmp/fs/spool  <-  worker, producers

``base.img`` is kept as mkfs left it: base + the log replayed = any state the device went
through, which is what replay.py builds crash images from.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .rig import HANG_S, FsKind, attach_loop, child_env, kill_group, make_fs, mount, start_logger

LIVE_STATES = ("new", "ready", "active", "delayed")


@dataclass(frozen=True)
class Recording:
    """What a run left: the image it started from, the log, the image it ended with."""

    kind: FsKind
    base: Path
    log: Path
    final: Path
    fsync: bool
    jobs: int
    seconds: float


def record_run(
    stack: contextlib.ExitStack, work: Path, kind: FsKind, *, fsync: bool, producers: int, jobs_per_producer: int
) -> Recording:
    """Run the workload on a fresh ``kind`` filesystem and tear everything down again.

    Parameters:
        stack: where every undo is registered (the caller closes it, on failure too).
        work: an empty directory for images, mounts and logs.
        fsync: the spool's durability setting, for producers and worker alike.
        producers, jobs_per_producer: the size of the run.
    Raises:
        AssertionError: a process failed or the worker did not finish within the bound.
    """
    started = time.monotonic()
    base, live, log = work / "base.img", work / "live.img", work / "device.log"
    make_fs(kind, base)
    live.write_bytes(b"")
    os.truncate(live, kind.size)
    with open(base, "rb") as src, open(live, "r+b") as dst:  # sparse-safe, small: mkfs output
        copy_sparse(src.fileno(), dst.fileno())
    run_stack = contextlib.ExitStack()
    stack.push(run_stack)  # closed here when the run ends; by the caller's stack if it fails
    with run_stack:
        fuse_dir, fs_dir = work / "fuse", work / "fs"
        logger = start_logger(run_stack, live, log, fuse_dir)
        dev = attach_loop(run_stack, fuse_dir / "disk")
        mount(run_stack, kind, dev, fs_dir)
        spool, marks = fs_dir / "spool", str(fuse_dir / "control")
        env = child_env(POWERLOSS_MARKS=marks, **({} if fsync else {"SPOOLQ_FSYNC": "false"}))

        def producer(prefix: str, count: int) -> subprocess.Popen[bytes]:
            p = subprocess.Popen(
                [
                    sys.executable,
                    str(Path(__file__).with_name("producer.py")),
                    str(spool),
                    marks,
                    prefix,
                    str(count),
                    *([] if fsync else ["--no-fsync"]),
                ],
                env=env,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            run_stack.callback(kill_group, p)
            return p

        # The first job creates the spool on the empty filesystem: its directories must be
        # durable before that job is acknowledged.
        procs = [producer("first", 1)]
        procs[0].wait(HANG_S)
        worker = _start_worker(run_stack, spool, work / "worker.log", env)
        procs += [producer(f"p{n}", jobs_per_producer) for n in range(producers)]
        for p in procs:
            _, err = p.communicate(timeout=HANG_S)
            assert p.returncode == 0, f"a producer failed: {err.decode(errors='replace')}"
        _wait_drained(spool, worker, work / "worker.log")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(HANG_S) == 0, (work / "worker.log").read_text(errors="replace")
    # run_stack closed: unmounted, detached, and the logger has flushed its log and exited.
    assert logger.returncode == 0, Path(f"{log}.err").read_text(errors="replace")
    return Recording(kind, base, log, live, fsync, 1 + producers * jobs_per_producer, time.monotonic() - started)


def _start_worker(stack: contextlib.ExitStack, spool: Path, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    err = open(log, "wb")  # noqa: SIM115 - closed by the stack
    stack.callback(err.close)
    cmd = [sys.executable, "-m", "spoolq", "--spool", str(spool), "worker", "-I", "powerloss_tasks", "-c", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env, start_new_session=True)
    stack.callback(kill_group, proc)
    deadline = time.monotonic() + HANG_S
    while "ready:" not in log.read_text(errors="replace"):
        assert proc.poll() is None, f"the worker exited {proc.returncode}: {log.read_text(errors='replace')}"
        assert time.monotonic() < deadline, "the worker did not start within the bound"
        time.sleep(0.05)
    return proc


def _wait_drained(spool: Path, worker: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until no job is queued, running or waiting: every completion is in the log."""
    deadline = time.monotonic() + HANG_S
    while any(os.listdir(spool / s) for s in LIVE_STATES):
        assert worker.poll() is None, f"the worker exited {worker.returncode}: {log.read_text(errors='replace')}"
        assert time.monotonic() < deadline, "the worker did not drain the spool within the bound"
        time.sleep(0.05)


def data_extents(fd: int) -> Iterator[tuple[int, int]]:
    """The ``(start, end)`` byte ranges of a sparse file that hold data (not holes)."""
    size = os.fstat(fd).st_size
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole is left
            return
        pos = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, pos


def copy_sparse(src: int, dst: int) -> None:
    """Copy the data regions of ``src`` into ``dst`` (same size, already truncated), skipping
    holes: an image of hundreds of MiB holds a few MiB of data, so a copy costs milliseconds."""
    for start, end in data_extents(src):
        off = start
        while off < end:
            n = os.copy_file_range(src, dst, end - off, off, off)
            if n == 0:
                break
            off += n
