"""A backlog larger than the supervisor's in-memory window of ready/ names.

With a million jobs queued the supervisor indexes only the first READY_WINDOW names and
finds the rest on disk later; these tests shrink the window to a few jobs and check that
nothing is lost or run twice and that dispatch order (priority, then time) still holds.
"""

from __future__ import annotations

import time

import pytest
from worker_tasks import lines

import spoolq.index as index_module
from spoolq import App
from spoolq.registry import discover
from spoolq.spool import Spool
from spoolq.supervisor import Supervisor


def _drain(sup: Supervisor, expected: int, ran: str, bound_s: float = 60.0) -> None:
    deadline = time.monotonic() + bound_s
    while len(lines(ran)) < expected or sup.pool.busy():
        assert time.monotonic() < deadline, f"only {len(lines(ran))} of {expected} ran"
        sup.tick(sup.clock.now())
        time.sleep(0.002)


@pytest.fixture
def small_window(monkeypatch):
    monkeypatch.setattr(index_module, "READY_WINDOW", 8)


def test_a_backlog_beyond_the_window_runs_once_each_in_priority_order(tmp_path, small_window):
    # Given 60 jobs queued before the worker starts (the window holds 8), low priority first
    spool, ran = tmp_path / "spool", str(tmp_path / "ran")
    app = App(spool, fsync=False)
    app.send_many([{"name": "wt.record", "args": [ran, f"low-{i}"], "priority": 0} for i in range(50)])
    app.send_many([{"name": "wt.record", "args": [ran, f"high-{i}"], "priority": 5} for i in range(10)])
    sup = Supervisor(Spool(spool, fsync=False), discover(["worker_tasks"], use_entry_points=False), concurrency=1)
    sup.start()
    try:
        # When it drains them
        _drain(sup, 60, ran)
    finally:
        sup.close()
    # Then each ran exactly once, every high-priority job before any low one
    done = [line.split()[0] for line in lines(ran)]  # "token pid"
    assert sorted(done) == sorted([f"low-{i}" for i in range(50)] + [f"high-{i}" for i in range(10)])
    assert all(token.startswith("high") for token in done[:10])
    assert not list((spool / "ready").iterdir()) and not list((spool / "active").iterdir())


def test_an_urgent_job_arriving_during_a_spilled_backlog_jumps_the_queue(tmp_path, small_window):
    # Given a spilled backlog of 40 low-priority jobs, the worker already running
    spool, ran = tmp_path / "spool", str(tmp_path / "ran")
    app = App(spool, fsync=False)
    app.send_many([{"name": "wt.record", "args": [ran, f"low-{i}"]} for i in range(40)])
    sup = Supervisor(
        Spool(spool, fsync=False), discover(["worker_tasks"], use_entry_points=False), concurrency=1, rescan_interval=0
    )  # tick() lists new/ every time
    sup.start()
    try:
        for _ in range(3):
            sup.tick(sup.clock.now())
        assert sup.index.spilled
        # When an urgent job arrives
        app.send_task("wt.record", args=[ran, "urgent"], priority=9)
        _drain(sup, 41, ran)
    finally:
        sup.close()
    # Then it ran long before the backlog was through, and nothing was lost
    done = [line.split()[0] for line in lines(ran)]  # "token pid"
    assert len(done) == 41 and len(set(done)) == 41
    assert done.index("urgent") < 20
