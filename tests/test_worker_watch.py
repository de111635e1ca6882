"""The new/ watcher wakes the loop on an arrival, with inotify and with watchdog's fallback."""

from __future__ import annotations

import os
import time
from multiprocessing.connection import wait

import pytest

from spoolq.watch import NewWatcher, Waker


@pytest.mark.parametrize("use_inotify", [True, False], ids=["inotify", "watchdog"])
def test_a_file_linked_into_the_directory_wakes_the_loop(tmp_path, use_inotify):
    new, tmp = tmp_path / "new", tmp_path / "tmp"
    new.mkdir()
    tmp.mkdir()
    waker = Waker()
    watcher = NewWatcher(new, waker, use_inotify=use_inotify)
    assert watcher.start()
    try:
        assert not watcher.take_pending()
        (tmp / "x").write_text("{}")
        os.link(tmp / "x", new / "x.json")  # as a producer delivers
        os.unlink(tmp / "x")
        deadline = time.monotonic() + 10
        woken = False
        while not woken and time.monotonic() < deadline:
            ready = wait([waker.read_fd, *watcher.fds()], 0.5)
            if waker.read_fd in ready:
                waker.drain()
            woken = watcher.take_pending()
        assert woken
        assert bool(watcher.fds()) == use_inotify  # inotify: no thread, a descriptor to wait on
    finally:
        watcher.stop()
        waker.close()
