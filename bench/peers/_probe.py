"""What the benchmark tasks do, shared by every peer so that all of them run the same work.

Workers of every peer are separate processes (sometimes forked per job), so the only
observation channel that works for all of them, without adding a broker round trip that
would itself be measured, is an append-only file in the workload's temp dir:

* ``noop`` appends one byte to ``done.log``; the harness watches the file size to learn
  when the last of N jobs has finished (drain) and whether far-future jobs ran early.
* ``stamp`` appends ``"<ref> <start>\\n"`` to ``stamps.log``, where ``start`` is
  ``time.time()`` taken first thing in the task and ``ref`` is the enqueue time (latency)
  or the due time (delayed) passed as the job's argument.

Writes are single ``os.write`` calls on an ``O_APPEND`` descriptor, shorter than
``PIPE_BUF``, so concurrent writers never interleave. The directory comes from the
``BENCH_PROBE_DIR`` environment variable set by the harness for every worker process.
"""

from __future__ import annotations

import os
import time

PROBE_ENV = "BENCH_PROBE_DIR"
DONE_FILE = "done.log"
STAMPS_FILE = "stamps.log"

_fds: dict[tuple[int, str], int] = {}


def _fd(name: str) -> int:
    """Open (once per process and file) the probe file for appending.

    Keyed by pid so that a forked child (RQ's work horse) does not depend on a descriptor
    its parent may close.
    """
    key = (os.getpid(), name)
    fd = _fds.get(key)
    if fd is None:
        path = os.path.join(os.environ[PROBE_ENV], name)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        _fds[key] = fd
    return fd


def noop() -> None:
    """Do nothing but say "done" with one appended byte."""
    os.write(_fd(DONE_FILE), b".")


def stamp(ref: float) -> None:
    """Record the start time of this job next to its reference time."""
    start = time.time()
    os.write(_fd(STAMPS_FILE), f"{ref!r} {start!r}\n".encode())


def done_count(probe_dir: str) -> int:
    """How many ``noop`` jobs have finished so far."""
    try:
        return os.stat(os.path.join(probe_dir, DONE_FILE)).st_size
    except FileNotFoundError:
        return 0


def read_stamps(probe_dir: str) -> list[tuple[float, float]]:
    """All complete ``(ref, start)`` records written so far."""
    try:
        with open(os.path.join(probe_dir, STAMPS_FILE)) as fh:
            text = fh.read()
    except FileNotFoundError:
        return []
    out: list[tuple[float, float]] = []
    # The last element is either "" or a line still being written: skip it.
    for line in text.split("\n")[:-1]:
        parts = line.split()
        if len(parts) == 2:
            out.append((float(parts[0]), float(parts[1])))
    return out
