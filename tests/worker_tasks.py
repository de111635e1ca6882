"""Tasks for the worker tests (``tests/test_worker_*.py``, ``test_spool_machine.py``).

Pool children import this module by name (``-I worker_tasks``; tests/ is on their path).
Every task that matters to a test first appends a line to a file opened with ``O_APPEND``:
one ``write`` per line, so lines from concurrent children never interleave, and the file
survives the child's death.  That file is how a test knows a job ran, and how often.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import resource
import signal
import time

import spoolq


def note(path: str, line: str) -> None:
    """Append one line to ``path`` with a single O_APPEND write (atomic between processes)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def lines(path: str) -> list[str]:
    """The lines noted so far ([] when none)."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


@spoolq.task(name="wt.record")
def record(path: str, token: str) -> str:
    """Note ``token`` and the child's pid; succeed."""
    note(path, f"{token} {os.getpid()}")
    return token


@spoolq.task(name="wt.keep", result_ttl=60)
def keep(a: int, b: int) -> dict:
    """Return a result that is kept in done/ for a minute."""
    return {"sum": a + b}


@spoolq.task(name="wt.sleep")
def sleep(path: str, token: str, seconds: float) -> str:
    """Note ``start token pid``, sleep, note ``end token``."""
    note(path, f"start {token} {os.getpid()}")
    time.sleep(seconds)
    note(path, f"end {token}")
    return token


@spoolq.task(name="wt.die", max_retries=2, retry_delay=0.2)
def die(path: str, token: str, how: str) -> None:
    """Note the attempt, then end the child process ``how``: segv, exit3, exit255, sigkill, oom."""
    note(path, f"{token} {os.getpid()}")
    if how == "segv":
        ctypes.string_at(0)
    elif how == "segv_signal":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif how == "exit3":
        os._exit(3)
    elif how == "exit255":
        os._exit(255)
    elif how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "oom":
        resource.setrlimit(resource.RLIMIT_AS, (256 * 1024 * 1024, resource.RLIM_INFINITY))
        hog = bytearray(1024 * 1024 * 1024)
        note(path, f"allocated {len(hog)}")
    time.sleep(30)  # "external": the test kills this child from outside


@spoolq.task(name="wt.soft", soft_time_limit=0.3, max_retries=0)
def soft(path: str, token: str) -> str:
    """Sleep past the soft limit, catch SoftTimeLimitExceeded, note it and return."""
    try:
        time.sleep(10)
    except spoolq.SoftTimeLimitExceeded:
        note(path, f"soft {token}")
        return "cleaned up"
    return "not interrupted"


@spoolq.task(name="wt.hard", time_limit=0.5, max_retries=1, retry_delay=0.1)
def hard(path: str, token: str) -> None:
    """Note the attempt, then sleep far past the task's hard time limit."""
    note(path, f"{token} {os.getpid()}")
    time.sleep(30)


@spoolq.task(name="wt.fail", max_retries=0)
def fail(path: str, token: str) -> None:
    """Note, then raise ValueError; never retried."""
    note(path, f"{token} {os.getpid()}")
    raise ValueError(f"failing on purpose: {token}")


@spoolq.task(name="wt.retry", bind=True, max_retries=2)
def retry_twice(self, path: str, token: str) -> None:
    """Note the attempt and ask for a retry in 0.1 s, until the retries run out."""
    note(path, f"{token} {self.request.retries}")
    try:
        raise ConnectionError(f"transient {self.request.retries}")
    except ConnectionError as e:
        self.retry(exc=e, countdown=0.1)


@spoolq.task(name="wt.stamp")
def stamp_start(path: str, token: str, enqueued: float) -> None:
    """Note ``token enqueued started`` (wall-clock seconds) at the very start; the bench's probe."""
    note(path, f"{token} {enqueued!r} {time.time()!r}")


@spoolq.task(name="wt.noop")
def noop() -> None:
    """Do nothing (throughput bench)."""


@spoolq.task(name="wt.loud", bind=True, max_retries=12)
def fail_loudly(self, path: str, token: str, pad: str) -> None:
    """Note the attempt, then retry at once with a long message and a deep traceback."""
    note(path, f"{token} {self.request.retries}")

    def deep(n: int) -> None:
        if n:
            deep(n - 1)
        raise ConnectionError("upstream said: " + "no " * 5000)

    try:
        deep(60)
    except ConnectionError as e:
        self.retry(exc=e, countdown=0.01)


def _fork_sleeper(path: str, token: str, seconds: float) -> int:
    """Fork a grandchild that notes ``grandchild token pid`` and sleeps; it keeps every
    descriptor the pool child had (its pipe to the supervisor too), as a bare fork does.
    Returns once the grandchild has noted itself, so that a test can always find its pid."""
    noted_r, noted_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(noted_r)
            note(path, f"grandchild {token} {os.getpid()}")
            os.close(noted_w)
            time.sleep(seconds)
        finally:
            os._exit(0)
    os.close(noted_w)
    os.read(noted_r, 1)  # returns (empty) when the grandchild closed its end: it has noted
    os.close(noted_r)
    return pid


@spoolq.task(name="wt.fork", max_retries=0)
def fork(path: str, token: str, seconds: float, then: str = "sleep") -> None:
    """Fork a grandchild (see :func:`_fork_sleeper`), note ``start token pid``, then
    ``then``: sleep as long as the grandchild, or exit3 (the child ends, the grandchild stays)."""
    _fork_sleeper(path, token, seconds)
    note(path, f"start {token} {os.getpid()}")
    if then == "exit3":
        os._exit(3)
    time.sleep(seconds)


@spoolq.task(name="wt.stubborn", soft_time_limit=0.3, max_retries=1, retry_delay=0.1)
def stubborn(path: str, token: str, how: str) -> None:
    """Note the attempt, then refuse to stop at the soft limit ``how``: catch
    SoftTimeLimitExceeded and go on (catch), ignore SIGALRM (ignore), or spin in C code that
    never returns to the interpreter, where no Python signal handler can run (c_loop)."""
    note(path, f"{token} {os.getpid()}")
    if how == "ignore":
        signal.signal(signal.SIGALRM, signal.SIG_IGN)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if how == "c_loop":
                sum(itertools.repeat(1, 10**11))  # minutes in one C call
            else:
                time.sleep(120)
        except spoolq.SoftTimeLimitExceeded:
            note(path, f"caught {token}")


@spoolq.task(name="wt.chain")
def chain(path: str, token: str) -> None:
    """Note the token, then enqueue ``wt.record`` for ``token-next`` (a task that starts another)."""
    note(path, f"{token} {os.getpid()}")
    record.delay(path, f"{token}-next")
