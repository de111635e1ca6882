"""The supervisor driven in-process: what a long-lived host process (or a test) relies on."""

from __future__ import annotations

import signal
import time

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
    waker_fd = sup.wakeups.waker.write_fd

    sup.close()

    assert signal.getsignal(signal.SIGTERM) is before_term
    assert signal.getsignal(signal.SIGINT) is before_int
    # No wake-up fd is left pointing at the closed pipe (whose number the next open reuses).
    previous = signal.set_wakeup_fd(-1)
    assert previous != waker_fd
    assert not sup.lock.is_held()


def test_a_flood_in_new_is_taken_in_by_bounded_batches_without_stopping_the_loop(tmp_path):
    from spoolq import App
    from spoolq.intake import INGEST_BATCH

    n = INGEST_BATCH * 2 + 10
    app = App(tmp_path / "spool", fsync=False)
    app.send_many([("wt.noop", None, None) for _ in range(n)])
    sup = Supervisor(
        Spool(tmp_path / "spool", fsync=False),
        discover(["worker_tasks"], use_entry_points=False),
        concurrency=1,
        rescan_interval=3600,
    )
    sup.start()
    try:
        # The start took in one whole listing (priority order for what was queued before
        # it) and came back; the loop would not sleep before the next tick.
        assert len(list((tmp_path / "spool" / "new").iterdir())) == n - INGEST_BATCH
        assert sup._sleep_time() == 0.0
        # Later ticks take in short slices, so each comes back quickly (a generous bound:
        # it only catches a tick that reads everything at once), until new/ is empty.
        for _ in range(n):
            t0 = time.monotonic()
            sup.tick(sup.clock.now())
            assert time.monotonic() - t0 < 0.25
            if not list((tmp_path / "spool" / "new").iterdir()):
                break
        assert list((tmp_path / "spool" / "new").iterdir()) == []
        assert sup.counts["received"] == n
    finally:
        sup.close()
    app.spool.close()
