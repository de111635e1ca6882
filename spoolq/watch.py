"""Wake the supervisor when something lands in ``new/``.

watchdog's inotify events are hints, not the truth: a wake-up makes the supervisor list
``new/`` now instead of at the next periodic rescan.  Events can be dropped (a full inotify
queue, a filesystem without events), so the rescan stays as the safety net, and nothing here
parses, moves or trusts a file name.
"""

from __future__ import annotations

import os
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


class NewWatcher:
    """Watches one directory (``new/``) and wakes the loop on arrivals."""

    def __init__(self, directory: Path, waker: Waker) -> None:
        self.directory = directory
        self.handler = _Handler(waker)
        self.observer = Observer()

    def start(self) -> bool:
        """Start watching; False if events are unavailable (the rescan still works)."""
        try:
            self.observer.schedule(self.handler, str(self.directory), recursive=False)
            self.observer.daemon = True
            self.observer.start()
        except OSError:
            return False
        return True

    def take_pending(self) -> bool:
        """Whether an arrival was signalled since the last call."""
        pending, self.handler.pending = self.handler.pending, False
        return pending

    def stop(self) -> None:
        """Stop the observer thread."""
        try:
            self.observer.stop()
            self.observer.join(2)
        except RuntimeError:
            pass
