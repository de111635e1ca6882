"""The supervisor driven in-process: what a long-lived host process (or a test) relies on."""

from __future__ import annotations

import signal

from spoolq.registry import discover
from spoolq.spool import Spool
from spoolq.supervisor import Supervisor


def test_close_gives_back_the_signal_handlers_and_the_wakeup_fd(tmp_path):
    before_term = signal.getsignal(signal.SIGTERM)
    before_int = signal.getsignal(signal.SIGINT)
    sup = Supervisor(Spool(tmp_path / "spool"), discover(["worker_tasks"], use_entry_points=False), concurrency=1)
    sup.start()
    sup.install_signal_handlers()
    assert signal.getsignal(signal.SIGTERM) == sup._on_signal
    waker_fd = sup.waker.write_fd

    sup.close()

    assert signal.getsignal(signal.SIGTERM) is before_term
    assert signal.getsignal(signal.SIGINT) is before_int
    # No wake-up fd is left pointing at the closed pipe (whose number the next open reuses).
    previous = signal.set_wakeup_fd(-1)
    assert previous != waker_fd
    assert not sup.lock.is_held()
