"""Helpers for the real-process worker tests: start ``spoolq worker``, wait, look at states.

Every wait is bounded generously: the bound only turns a hang into a failure, it is never a
timing assertion.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import subprocess_env

from spoolq.layout import STATES

HANG_S = 30.0  # generous: only catches hangs


def wait_for(predicate: Callable[[], Any], timeout: float = HANG_S, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


class Worker:
    """A real ``python -m spoolq worker`` process in its own session (process group)."""

    def __init__(
        self,
        spool: Path,
        *args: str,
        log: Path | None = None,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.spool = spool
        self.log = log or spool.parent / f"worker-{time.monotonic_ns()}.log"
        self.out = self.log.with_suffix(".out")
        cmd = [sys.executable, "-m", "spoolq", "--spool", str(spool), "worker", "-I", "worker_tasks", *args]
        with open(self.log, "wb") as err, open(self.out, "wb") as out:
            self.proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=err,
                cwd=cwd or spool.parent,
                env=env or subprocess_env(),
                start_new_session=True,
            )
        self.pid = self.proc.pid

    def text(self) -> str:
        """The worker's log so far (stderr)."""
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> Worker:
        """Wait for the "ready" log line (the pool is up, the lock is held)."""
        wait_for(lambda: "ready:" in self.text() or self.proc.poll() is not None, what="worker ready")
        assert self.proc.poll() is None, f"worker exited early ({self.proc.returncode}):\n{self.text()}"
        return self

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the supervisor only."""
        os.kill(self.pid, sig)

    def wait(self, timeout: float = HANG_S) -> int:
        """Wait for the exit and return the status (kills the group on a hang)."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_group()
            raise AssertionError(f"worker did not exit within {timeout:g} s:\n{self.text()}") from None

    def kill_group(self) -> None:
        """SIGKILL the supervisor, its forkserver and its children at once."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(HANG_S)

    def stop(self) -> int:
        """SIGTERM and wait; for teardown."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait()


def burst(spool: Path, *args: str, timeout: float = HANG_S) -> tuple[int, str, str]:
    """Run ``spoolq worker --burst`` to the end; returns (status, stdout, stderr)."""
    w = Worker(spool, "--burst", *args)
    status = w.wait(timeout)
    return status, w.out.read_text(errors="replace"), w.text()


def listing(spool: Path) -> dict[str, list[str]]:
    """Every state's file names, sorted."""
    return {s: sorted(os.listdir(spool / s)) if (spool / s).is_dir() else [] for s in STATES}


def where(spool: Path, job_id: str) -> list[str]:
    """The states holding a file of ``job_id`` (normally zero or one)."""
    found = []
    for state, names in listing(spool).items():
        if any(n == f"{job_id}.json" or n.endswith(f"-{job_id}.json") for n in names):
            found.append(state)
    return found


def read_job(spool: Path, state: str, job_id: str) -> dict:
    """The JSON of ``job_id``'s file in ``state``."""
    for name in os.listdir(spool / state):
        if name == f"{job_id}.json" or name.endswith(f"-{job_id}.json"):
            return json.loads((spool / state / name).read_text())
    raise AssertionError(f"{job_id} is not in {state}/: {listing(spool)}")
