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
import select
import signal
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

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


class Wakeups:
    """What the supervisor's loop sleeps on, in one poll: the pool's pipes and sentinels (given
    at each wait), the self-pipe that threads and signal handlers write, and ``new/``'s events.

    One poll object for the whole run, updated only when the set of descriptors changes (a
    child replaced): building a selector per wait cost more than a job.

    Parameters:
        new_dir: the directory producers deliver into.
    """

    def __init__(self, new_dir: Path) -> None:
        self.waker = Waker()
        self.watcher = NewWatcher(new_dir, self.waker)
        self._poller = select.poll()
        self._polled: set[int] = set()
        self._saved: tuple[Any, Any, Any] | None = None
        self._new_identity: tuple[int, int] | None = None  # of the new/ directory watched

    def watch(self) -> bool:
        """Start watching ``new/``; False if events are unavailable (rescans still work)."""
        return self.watcher.start()

    def follow(self, identity: tuple[int, int] | None) -> bool:
        """Watch ``new/`` afresh if it is another directory than before (it was removed and
        made anew: its old watch is gone); True if it was, and arrivals may have been missed.

        Parameters:
            identity: ``new/``'s ``(st_dev, st_ino)`` now (None: not known yet).
        """
        before, self._new_identity = self._new_identity, identity
        if before is None or identity == before:
            return False
        self.watcher.stop()
        self.watcher.start()
        return True

    def install_signals(self, handler: Callable[[int, Any], None]) -> None:
        """Route SIGTERM and SIGINT to ``handler`` (which only sets flags) and wake the loop."""
        self._saved = (
            signal.set_wakeup_fd(self.waker.write_fd, warn_on_full_buffer=False),
            signal.signal(signal.SIGTERM, handler),
            signal.signal(signal.SIGINT, handler),
        )

    def wait(self, timeout_s: float, fds: Iterable[int]) -> set[int]:
        """Sleep until one of ``fds``, the waker or the watcher is readable, or ``timeout_s``
        passes; the readable descriptors."""
        wanted = {*fds, self.waker.read_fd, *self.watcher.fds()}
        if wanted != self._polled:
            for fd in self._polled - wanted:
                self._poller.unregister(fd)
            for fd in wanted - self._polled:
                self._poller.register(fd, select.POLLIN)
            self._polled = wanted
        return {fd for fd, _ in self._poller.poll(max(0.0, timeout_s) * 1000.0)}

    def arrived(self, ready: set[int]) -> bool:
        """After a wait: whether something landed in ``new/`` (a hint)."""
        if self.waker.read_fd in ready:
            self.waker.drain()
        return self.watcher.take_pending()

    def close(self) -> None:
        """Stop watching, give the signal handlers and the wake-up fd back, close the pipe."""
        self.watcher.stop()
        if self._saved is not None:
            # The wake-up fd is about to be closed (and its number reused): give it back.
            wakeup_fd, term, intr = self._saved
            signal.set_wakeup_fd(wakeup_fd)
            signal.signal(signal.SIGTERM, term)
            signal.signal(signal.SIGINT, intr)
            self._saved = None
        self.waker.close()
