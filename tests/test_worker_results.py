"""Results and replays through the real worker and the command line.

A task with a result TTL keeps its return value: ``spoolq result ID --wait`` prints it and
``AsyncResult.get`` returns it.  ``spoolq retry ID`` sends a failed job back: it runs again
with its retries reset and its error history kept.
"""

from __future__ import annotations

import json

import pytest
from conftest import run_spoolq
from worker_helpers import Worker, burst, read_job, where
from worker_tasks import lines

import spoolq

pytestmark = pytest.mark.timeout(120)


def test_a_kept_result_is_printed_by_spoolq_result_and_returned_by_get(tmp_path):
    spool = tmp_path / "spool"
    app = spoolq.App(spool)
    w = Worker(spool, "-c", "1").wait_ready()
    try:
        handle = app.send_task("wt.keep", args=[2, 3])
        proc = run_spoolq("--spool", str(spool), "result", handle.id, "--wait", "10", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == {"sum": 5}
        assert handle.get(timeout=10) == {"sum": 5}
        assert handle.state == "SUCCESS"
    finally:
        assert w.stop() == 0
    assert where(spool, handle.id) == ["done"]


def test_spoolq_retry_runs_a_failed_job_again_with_retries_reset_and_history_kept(tmp_path):
    spool, out = tmp_path / "spool", str(tmp_path / "ran")
    app = spoolq.App(spool)
    job_id = app.send_task("wt.retry", args=[out, "r"]).id  # retries twice, 0.1 s apart

    status, _, log = burst(spool, "-c", "1")
    assert status == 0, log
    first = read_job(spool, "failed", job_id)
    assert first["retries"] == 2 and len(first["errors"]) == 3
    assert [e["type"] for e in first["errors"]] == ["ConnectionError"] * 3

    proc = run_spoolq("--spool", str(spool), "retry", job_id, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert where(spool, job_id) == ["new"]
    assert read_job(spool, "new", job_id)["retries"] == 0

    status, _, log = burst(spool, "-c", "1")
    assert status == 0, log
    assert lines(out) == ["r 0", "r 1", "r 2", "r 0", "r 1", "r 2"]  # a full budget again
    again = read_job(spool, "failed", job_id)
    assert len(again["errors"]) == 6 and again["errors"][:3] == first["errors"]
    assert [e["attempt"] for e in again["errors"]] == [0, 1, 2, 0, 1, 2]


def test_a_task_that_enqueues_another_enqueues_into_the_spool_it_runs_from(tmp_path):
    # Given a job whose task sends another job with .delay(), and a worker run from a
    # directory where the default spool (./spool) would be another one
    spool, out, elsewhere = tmp_path / "spool", str(tmp_path / "ran"), tmp_path / "elsewhere"
    elsewhere.mkdir()
    spoolq.App(spool).send_task("wt.chain", args=[out, "first"], task_id="first")
    # When a burst worker runs it
    w = Worker(spool, "--burst", "-c", "1", cwd=elsewhere)
    assert w.wait() == 0, w.text()
    # Then the second job went into the same spool and ran there too, and no other spool appeared
    assert [ln.split()[0] for ln in lines(out)] == ["first", "first-next"]
    assert not (elsewhere / "spool").exists()
