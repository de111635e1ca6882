"""Wake the supervisor when something lands in ``new/``.

Events are hints, not the truth: a wake-up makes the supervisor list ``new/`` now instead of
at the next periodic rescan.  Events can be dropped (a full inotify queue, a filesystem
without events), so the rescan stays as the safety net, and nothing here parses, moves or
trusts a file name.

On Linux the watcher is a bare inotify descriptor that the loop waits on beside the pool's
pipes: no thread, no delay.  watchdog's observer is the fallback elsewhere; on Linux it is
not used because its inotify emitter holds every event for 0.5 s behind an unpaired
``IN_MOVED_FROM`` (its move-pairing queue), and the supervisor's own moves out of ``new/``
produce exactly those: an arrival then waited up to half a second.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from typing import Any
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer


class Waker:
    """A self-pipe: any thread (or a signal handler) writes a byte, the loop waits on the
    read end alongside the pool's pipes."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def wake(self) -> None:
        """Make the loop's wait return; never blocks (a full pipe already means "wake")."""
        try:
            os.write(self.write_fd, b"\0")
        except (BlockingIOError, OSError):
            pass

    def drain(self) -> None:
        """Empty the pipe after a wake-up."""
        try:
            while os.read(self.read_fd, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        """Close both ends."""
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass


class _Handler(FileSystemEventHandler):
    def __init__(self, waker: Waker) -> None:
        self.waker = waker
        self.pending = False

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("created", "moved", "modified", "closed"):
            self.pending = True
            self.waker.wake()


# inotify(7): a file linked, created or renamed into the directory, closed after writing, or
# its link count changed (IN_ATTRIB: a producer unlinked its tmp/ name after the link, which
# the supervisor waits for before it reads the file).
_IN_ATTRIB, _IN_CLOSE_WRITE, _IN_MOVED_TO, _IN_CREATE, _IN_ONLYDIR = 0x4, 0x8, 0x80, 0x100, 0x01000000


def _inotify_fd(directory: Path) -> int | None:
    """A non-blocking inotify descriptor watching ``directory``, or None if unavailable."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        init1, add_watch = libc.inotify_init1, libc.inotify_add_watch
    except (OSError, AttributeError):
        return None
    fd = init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        return None
    mask = _IN_CREATE | _IN_MOVED_TO | _IN_CLOSE_WRITE | _IN_ATTRIB | _IN_ONLYDIR
    if add_watch(fd, os.fsencode(directory), mask) < 0:
        os.close(fd)
        return None
    return fd


class NewWatcher:
    """Watches one directory (``new/``): :meth:`fds` are to be waited on with the loop's
    other descriptors, then :meth:`take_pending` says whether something arrived.

    Parameters:
        directory: the directory to watch.
        waker: woken by the watchdog fallback's thread (the inotify descriptor needs none).
        use_inotify: False forces the watchdog observer (tests of the fallback).
    """

    def __init__(self, directory: Path, waker: Waker, *, use_inotify: bool = True) -> None:
        self.directory = directory
        self.handler = _Handler(waker)
        self.use_inotify = use_inotify
        self.observer: Any = None  # a watchdog Observer (its class is chosen at import: not a type)
        self._fd: int | None = None

    def start(self) -> bool:
        """Start watching; False if events are unavailable (the rescan still works)."""
        if self.use_inotify:
            self._fd = _inotify_fd(self.directory)
            if self._fd is not None:
                return True
        self.observer = Observer()
        try:
            self.observer.schedule(self.handler, str(self.directory), recursive=False)
            self.observer.daemon = True
            self.observer.start()
        except OSError:
            self.observer = None
            return False
        return True

    def fds(self) -> list[int]:
        """Descriptors that become readable when something arrives."""
        return [] if self._fd is None else [self._fd]

    def take_pending(self) -> bool:
        """Whether an arrival was signalled since the last call (never blocks)."""
        if self._fd is not None:
            got = False
            while True:
                try:
                    got = bool(os.read(self._fd, 65536)) or got
                except BlockingIOError:
                    return got
                except OSError as exc:  # pragma: no cover - a read error means "look anyway"
                    return exc.errno != errno.EBADF or got
        pending, self.handler.pending = self.handler.pending, False
        return pending

    def stop(self) -> None:
        """Close the descriptor or stop the observer thread."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        if self.observer is not None:
            try:
                self.observer.stop()
                self.observer.join(2)
            except RuntimeError:
                pass
