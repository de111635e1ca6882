"""Tasks and helpers for the torture suite (tests/test_torture_*.py).

Importable by pool children as ``torture_tasks`` (tests/ is on their path).  Run as a script
it is the producer process the kill tests start and kill::

    python tests/torture_tasks.py produce SPOOL RUN_LOG ACK_LOG PREFIX COUNT [PAUSE_S]

Every job the producer enqueues is the ``torture.record`` task, which appends its id to
RUN_LOG with ``O_APPEND`` and fsync; the producer appends the id to ACK_LOG only after
``send_task`` returned, so ACK_LOG ⊆ RUN_LOG is the "nothing acknowledged is lost" claim.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import spoolq

SCALE = max(0.1, float(os.environ.get("SPOOLQ_TORTURE_SCALE", "1")))
TESTS_DIR = Path(__file__).resolve().parent
REPO_DIR = TESTS_DIR.parent


def scaled(n: float) -> int:
    """``n`` times the torture scale, at least 1."""
    return max(1, int(n * SCALE))


def append_line(path: str, line: str, *, fsync: bool = True) -> None:
    """Append one line atomically (a single O_APPEND write) and, by default, flush it."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def read_lines(path: Path) -> list[str]:
    """The complete lines of a log (a torn last line, from a kill, is dropped)."""
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")
    return [ln for ln in lines[:-1] if ln]


def duplicates(ids: list[str]) -> dict[str, int]:
    """The ids that appear more than once, with their counts."""
    return {k: n for k, n in Counter(ids).items() if n > 1}


def child_env(**extra: str) -> dict[str, str]:
    """An environment for a child Python with the repo and tests/ importable, no SPOOLQ_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOLQ_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_DIR), str(TESTS_DIR), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def worker_argv(spool: Path, *extra: str, concurrency: int = 2) -> list[str]:
    """``python -m spoolq worker`` on ``spool`` with these tasks."""
    return [
        sys.executable,
        "-m",
        "spoolq",
        "--spool",
        str(spool),
        "worker",
        "-c",
        str(concurrency),
        "-I",
        "torture_tasks",
        "--loglevel",
        "WARNING",
        *extra,
    ]


# -- tasks --------------------------------------------------------------------------------


@spoolq.task(name="torture.record", max_retries=1000, retry_delay=1)
def record(log_path: str, job_id: str) -> None:
    """Append the job's id to the run log, durably."""
    append_line(log_path, job_id)


@spoolq.task(name="torture.die", max_retries=2, retry_delay=60)
def die(how: str) -> None:
    """Kill the worker process running it, in the way asked."""
    if how == "segfault":
        ctypes.string_at(0)
    elif how == "exit":
        os._exit(7)
    elif how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "oom":
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (512 * 1024 * 1024, hard))
        hog = []
        while True:
            hog.append(bytearray(64 * 1024 * 1024))
    raise ValueError(f"unknown way to die: {how!r}")


@spoolq.task(name="torture.sleep", max_retries=1000, retry_delay=1)
def sleep(log_path: str, job_id: str, seconds: float) -> None:
    """Sleep, then record the id (a job that is still running when disaster strikes)."""
    time.sleep(seconds)
    append_line(log_path, job_id)


@spoolq.task(name="torture.keep", result_ttl=3600, max_retries=1000, retry_delay=1)
def keep(log_path: str, job_id: str, seconds: float = 0.0) -> str:
    """Sleep, record the id, and return a result that is kept in done/ (a write at settle)."""
    time.sleep(seconds)
    append_line(log_path, job_id)
    return job_id * 20


@spoolq.task(name="torture.fail", max_retries=0)
def fail(log_path: str, job_id: str) -> None:
    """Record the id, then fail for good (a write into failed/ at settle)."""
    append_line(log_path, job_id)
    raise ValueError(f"failing on purpose: {job_id}")


# -- the producer -------------------------------------------------------------------------


def produce(spool: str, run_log: str, ack_log: str, prefix: str, count: int, pause_s: float = 0.0) -> None:
    """Enqueue ``count`` record jobs, logging each id once ``send_task`` returned."""
    app = spoolq.App(spool)
    for i in range(count):
        job_id = f"{prefix}-{i}"
        app.send_task("torture.record", args=[run_log, job_id], task_id=job_id)
        append_line(ack_log, job_id, fsync=False)  # survives a kill of this process
        if pause_s:
            time.sleep(pause_s)


if __name__ == "__main__":
    if len(sys.argv) >= 7 and sys.argv[1] == "produce":
        produce(
            sys.argv[2],
            sys.argv[3],
            sys.argv[4],
            sys.argv[5],
            int(sys.argv[6]),
            float(sys.argv[7]) if len(sys.argv) > 7 else 0.0,
        )
    else:
        sys.exit(__doc__)
