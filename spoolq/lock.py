"""``spoolq.lock``: one supervisor per spool, with the holder's pid inside for others to read.

An ``flock`` (through filelock), so the kernel releases it when its holder dies, however it
dies.  The pid is written through a second descriptor: the flock belongs to filelock's open
file description, which must stay as it is.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import SpoolLocked


class SupervisorLock:
    """``spoolq.lock``: one supervisor per spool, with the holder's pid inside for others."""

    def __init__(self, path: Path) -> None:
        self.path = path
        import filelock  # here: only a supervisor or a status probe locks; producers never do

        self._filelock = filelock
        self._lock = filelock.FileLock(str(path), timeout=0, mode=0o600)

    def acquire(self) -> None:
        """Take the lock or raise :class:`SpoolLocked` naming the holder's pid."""
        try:
            self._lock.acquire()
        except self._filelock.Timeout:
            raise SpoolLocked(str(self.path.parent), self.holder()) from None
        # A separate descriptor: filelock's own must stay as it is, and the flock is per open
        # file description, so writing through another one leaves it untouched.
        fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        finally:
            os.close(fd)

    def release(self) -> None:
        """Give the lock up (the pid stays in the file; ``is_held`` is what tells)."""
        self._lock.release()

    def holder(self) -> int | None:
        """The pid written by the holder, if any."""
        try:
            text = self.path.read_text().strip()
            return int(text) if text else None
        except (OSError, ValueError):
            return None

    def is_held(self) -> bool:
        """Whether some process holds the lock now (probes without keeping it)."""
        if not self.path.exists():  # nobody holds it, and probing would create the file
            return False
        probe = self._filelock.FileLock(str(self.path), timeout=0)
        try:
            probe.acquire()
        except self._filelock.Timeout:
            return True
        except OSError:
            return False
        probe.release()
        return False

    def __enter__(self) -> SupervisorLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
