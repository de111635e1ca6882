"""A throw-away Redis for the Redis-backed peers, installed and started by the harness.

Started with no persistence (``--save '' --appendonly no``): the fastest setting, which
also means every Redis-backed peer here is *not durable* — a Redis restart loses all
queued jobs. That is reported next to their numbers. It listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import redis

from bench.peers import _proc

PORT = 6399
URL = f"redis://127.0.0.1:{PORT}/0"


@dataclass
class _Server:
    """The Redis this process started (if any) and how many ``ensure_redis`` hold it."""

    depth: int = 0
    proc: subprocess.Popen[bytes] | None = None
    tmp: str | None = None


_state = _Server()


def _install() -> str:
    """Find ``redis-server`` or install Debian's package (we run as root)."""
    path = shutil.which("redis-server")
    if path:
        return path
    subprocess.run(["apt-get", "update"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "redis-server"],
        check=True,
        stdout=subprocess.DEVNULL,
        env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    path = shutil.which("redis-server")
    if not path:
        raise RuntimeError("redis-server still not on PATH after apt-get install")
    return path


def _ping() -> bool:
    try:
        return bool(redis.Redis.from_url(URL, socket_connect_timeout=0.2).ping())
    except redis.exceptions.ConnectionError:
        return False


def client() -> redis.Redis:
    """A client of the benchmark Redis (for FLUSHALL between workloads)."""
    return redis.Redis.from_url(URL)


def server_pid() -> int | None:
    """Pid of the Redis this harness started, if it started one (for broker CPU)."""
    return _state.proc.pid if _state.proc is not None else None


@contextlib.contextmanager
def ensure_redis() -> Iterator[str]:
    """Yield the URL of a running benchmark Redis; start it on first entry, stop on last.

    Re-entrant, so ``run_peer`` can use it per call while a whole run holds it open once.
    A Redis already answering on the port (a previous run's, say) is reused, not stopped.
    """
    if _state.depth == 0 and not _ping():
        exe = _install()
        tmp = tempfile.mkdtemp(prefix="bench-redis-")
        proc = _proc.spawn(
            [
                exe,
                "--port",
                str(PORT),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                tmp,
            ],
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            cwd=tmp,
            log_path=f"{tmp}/redis.log",
        )
        _state.proc, _state.tmp = proc, tmp
        deadline = time.monotonic() + 10
        while not _ping():
            if proc.poll() is not None or time.monotonic() > deadline:
                _proc.kill_tree([proc])
                raise RuntimeError(f"redis-server did not start, see {tmp}/redis.log")
            time.sleep(0.05)
    _state.depth += 1
    try:
        yield URL
    finally:
        _state.depth -= 1
        if _state.depth == 0 and _state.proc is not None:
            _proc.kill_tree([_state.proc])
            if _state.tmp:
                shutil.rmtree(_state.tmp, ignore_errors=True)
            _state.proc = _state.tmp = None
