"""Torture: a pool child killed mid-task in every way is charged an attempt with its cause.

A job that always kills its worker ends in failed/ after its retries (short exponential
backoff from retry.DIED_BACKOFF_BASE_S), never loops, and never takes the pool down.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from torture_tasks import read_lines

import spoolq
from spoolq.codec import parse_ts
from spoolq.layout import ACTIVE, DELAYED, FAILED, NEW, READY
from spoolq.registry import discover
from spoolq.retry import DIED_BACKOFF_BASE_S
from spoolq.spool import Spool
from spoolq.supervisor import Supervisor

pytestmark = [pytest.mark.torture, pytest.mark.timeout(180)]

CAUSES = {
    "segfault": "SIGSEGV",
    "exit": "exited with code 7",
    "sigkill": "SIGKILL",
    "oom": "out of memory",
}


def test_every_kind_of_child_death_is_charged_and_ends_in_failed(tmp_path: Path) -> None:
    # Given one job per way to die, with two retries each, and ordinary jobs beside them
    spool_dir, run_log = tmp_path / "spool", tmp_path / "ran"
    app = spoolq.App(spool_dir)
    for how in CAUSES:
        app.send_task("torture.die", args=[how], task_id=f"die-{how}", max_retries=2)
    for i in range(6):
        app.send_task("torture.record", args=[str(run_log), f"ok-{i}"], task_id=f"ok-{i}")
    spool = Spool(spool_dir)
    sup = Supervisor(spool, discover(["torture_tasks"], use_entry_points=False), concurrency=2, burst=True)
    # When the supervisor runs until nothing is due
    assert sup.run() == 0
    # Then each deadly job failed after 3 attempts, each death recorded with its cause
    failed = {e.job_id: spool.read(FAILED, e.name) for e in spool.scan(FAILED)}
    assert sorted(failed) == sorted(f"die-{how}" for how in CAUSES)
    for how, cause in CAUSES.items():
        job = failed[f"die-{how}"]
        assert job.retries == 2
        assert len(job.errors) == 3, job.errors
        for attempt, error in enumerate(job.errors):
            assert error["attempt"] == attempt
            assert cause in error["message"], (how, error)
        # and the retries waited the short backoff: 1 s, then 2 s
        times = [parse_ts(e["at"]) for e in job.errors]
        gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
        assert gaps[0] >= DIED_BACKOFF_BASE_S * 0.9 and gaps[1] >= 2 * DIED_BACKOFF_BASE_S * 0.9, gaps
    # and the pool kept working for the others
    assert sorted(read_lines(run_log)) == sorted(f"ok-{i}" for i in range(6))
    for state in (NEW, READY, ACTIVE, DELAYED):
        assert os.listdir(spool.dir(state)) == []
    assert sup.counts["failed"] == len(CAUSES)
