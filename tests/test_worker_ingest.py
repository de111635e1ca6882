"""What the supervisor does with what it finds in ``new/``.

Garbage, invalid jobs and unknown tasks go to ``failed/`` with the reason and never stop the
loop; a job due later waits in ``delayed/<due>-<id>.json``; ready jobs run by priority, then
in arrival order.
"""

from __future__ import annotations

import json
import os
import random

import pytest
from worker_helpers import Worker, burst, listing, read_job, wait_for, where
from worker_tasks import lines

import spoolq
from spoolq.codec import parse_ts
from spoolq.layout import stamp

pytestmark = pytest.mark.timeout(120)


def _drop(spool, name, data: bytes) -> None:
    """Deliver a file into new/ as a foreign producer would (tmp, then rename)."""
    tmp = spool / "tmp" / f"drop-{name}"
    tmp.write_bytes(data)
    os.rename(tmp, spool / "new" / name)


def _reason(spool, original: str) -> str:
    names = [n for n in listing(spool)["failed"] if original in n and n.endswith(".bad.reason")]
    assert len(names) == 1, listing(spool)["failed"]
    return (spool / "failed" / names[0]).read_text()


def test_bad_files_go_to_failed_with_the_reason_and_the_loop_goes_on(tmp_path):
    spool, out = tmp_path / "spool", str(tmp_path / "ran")
    app = spoolq.App(spool)
    first = app.send_task("wt.record", args=[out, "first"]).id
    spool_ = spool
    _drop(spool_, "garbage.json", b"\xff\xfe this is not json {")
    _drop(spool_, "invalid.json", json.dumps({"v": 1, "id": "invalid", "args": []}).encode())
    os.mkfifo(spool / "new" / "fifo.json")
    unknown = {
        "v": 1,
        "id": "unknown-1",
        "task": "wt.nope",
        "args": [],
        "kwargs": {},
        "enqueued_at": "2026-01-01T00:00:00.000000Z",
    }
    _drop(spool_, "unknown-1.json", json.dumps(unknown).encode())
    w = Worker(spool, "-c", "1").wait_ready()
    try:
        wait_for(lambda: where(spool, first) == [] and not listing(spool)["new"], what="the first batch")
        assert "not UTF-8" in _reason(spool, "garbage.json")
        assert "task" in _reason(spool, "invalid.json")
        assert "FIFO" in _reason(spool, "fifo.json")
        job = read_job(spool, "failed", "unknown-1")
        assert [e["type"] for e in job["errors"]] == ["TaskNotFound"]
        assert "wt.nope" in job["errors"][0]["message"]
        # While it runs: another bad file, then a good job; both are handled.
        _drop(spool_, "late.json", b"[1, 2")
        later = app.send_task("wt.record", args=[out, "later"]).id
        wait_for(lambda: where(spool, later) == [], what="the later job")
        assert "not valid JSON" in _reason(spool, "late.json")
    finally:
        assert w.stop() == 0
    assert [ln.split()[0] for ln in lines(out)] == ["first", "later"]
    assert "rejected" in w.text()


def test_a_job_due_later_waits_in_delayed_under_its_due_time(tmp_path):
    spool, out = tmp_path / "spool", str(tmp_path / "ran")
    app = spoolq.App(spool)
    w = Worker(spool, "-c", "1").wait_ready()
    try:
        far = app.send_task("wt.record", args=[out, "far"], countdown=3600).id
        soon = app.send_task("wt.record", args=[out, "soon"], countdown=0.5).id
        wait_for(lambda: where(spool, far) == ["delayed"], what="the far job in delayed/")
        job = read_job(spool, "delayed", far)
        assert listing(spool)["delayed"][-1] == f"{stamp(parse_ts(job['eta']))}-{far}.json"
        wait_for(lambda: where(spool, soon) == [], what="the soon job run")
    finally:
        assert w.stop() == 0
    assert [ln.split()[0] for ln in lines(out)] == ["soon"]
    assert where(spool, far) == ["delayed"]


def test_ready_jobs_run_by_priority_then_in_arrival_order(tmp_path):
    spool, out = tmp_path / "spool", str(tmp_path / "ran")
    app = spoolq.App(spool)
    prios = list(range(10)) * 2
    random.Random(7).shuffle(prios)
    sent = []
    for n, p in enumerate(prios):
        app.send_task("wt.record", args=[out, f"p{p}-{n}"], priority=p)
        sent.append((p, n))

    status, _, log = burst(spool, "-c", "1")

    assert status == 0, log
    expected = [f"p{p}-{n}" for p, n in sorted(sent, key=lambda pn: (-pn[0], pn[1]))]
    assert [ln.split()[0] for ln in lines(out)] == expected
