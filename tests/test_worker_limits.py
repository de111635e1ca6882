"""Time limits and child recycling, with real processes.

The hard limit kills the child (the job is charged an attempt with "hard time limit"), the
soft limit raises SoftTimeLimitExceeded inside the task (which may catch it) and, when the
task does not stop within the grace, kills the child the same way; ``--max-tasks-per-child``
replaces children without losing a job.
"""

from __future__ import annotations

import pytest
from worker_helpers import burst, listing, read_job, where
from worker_tasks import lines

import spoolq
from spoolq.config import KEYS
from spoolq.pool import SOFT_LIMIT_GRACE_S, job_limit

pytestmark = pytest.mark.timeout(120)


def test_the_task_hard_limit_kills_the_child_and_the_job_fails_after_its_retry(tmp_path):
    spool, out = tmp_path / "spool", str(tmp_path / "ran")
    app = spoolq.App(spool)
    job_id = app.send_task("wt.hard", args=[out, "slow"]).id  # time_limit=0.5, max_retries=1
    app.send_task("wt.record", args=[out, "next"])

    status, _, log = burst(spool, "-c", "1")

    assert status == 0, log
    attempts = [ln.split()[1] for ln in lines(out) if ln.startswith("slow")]
    assert len(attempts) == 2 and attempts[0] != attempts[1]  # killed, a new child ran the retry
    job = read_job(spool, "failed", job_id)
    assert [e["type"] for e in job["errors"]] == ["TimeLimitExceeded"] * 2
    assert all("hard time limit (0.5 s) exceeded" in e["message"] for e in job["errors"])
    assert any(ln.startswith("next ") for ln in lines(out))


@pytest.mark.parametrize("where_from", ["option", "job"])
def test_the_worker_or_job_hard_limit_kills_a_task_without_its_own(tmp_path, where_from):
    spool, out = tmp_path / "spool", str(tmp_path / "ran")
    app = spoolq.App(spool)
    extra = {"time_limit": 0.4} if where_from == "job" else {}
    job_id = app.send_task("wt.sleep", args=[out, "s", 30], max_retries=0, **extra).id

    status, _, log = burst(spool, "-c", "1", *(["--time-limit", "0.4"] if where_from == "option" else []))

    assert status == 0, log
    job = read_job(spool, "failed", job_id)
    assert len(job["errors"]) == 1
    assert "hard time limit (0.4 s) exceeded" in job["errors"][0]["message"]
    assert not any(ln.startswith("end") for ln in lines(out))


def test_a_soft_limit_raises_inside_the_task_which_can_catch_it(tmp_path):
    spool, out = tmp_path / "spool", str(tmp_path / "ran")
    app = spoolq.App(spool)
    job_id = app.send_task("wt.soft", args=[out, "t"], result_ttl=60).id

    status, _, log = burst(spool, "-c", "1")

    assert status == 0, log
    assert lines(out) == ["soft t"]
    assert read_job(spool, "done", job_id)["result"] == "cleaned up"


def test_an_uncaught_soft_limit_fails_the_job_with_soft_time_limit_exceeded(tmp_path):
    spool, out = tmp_path / "spool", str(tmp_path / "ran")
    app = spoolq.App(spool)
    job_id = app.send_task("wt.sleep", args=[out, "s", 30], max_retries=0).id
    app.send_task("wt.record", args=[out, "next"])

    status, _, log = burst(spool, "-c", "1", "--soft-time-limit", "0.3")

    assert status == 0, log
    job = read_job(spool, "failed", job_id)
    assert [e["type"] for e in job["errors"]] == ["SoftTimeLimitExceeded"]
    assert "SoftTimeLimitExceeded" in job["errors"][0]["traceback"]
    # The child survived its soft limit: the next job ran in the same process, and the
    # timer was disarmed (the next job was not interrupted).
    starts = [ln.split()[2] for ln in lines(out) if ln.startswith("start")]
    nexts = [ln.split()[1] for ln in lines(out) if ln.startswith("next")]
    assert nexts == starts


def test_max_tasks_per_child_recycles_children_without_losing_jobs(tmp_path):
    spool, out = tmp_path / "spool", str(tmp_path / "ran")
    app = spoolq.App(spool)
    ids = [app.send_task("wt.record", args=[out, f"j{i}"]).id for i in range(9)]

    status, _, log = burst(spool, "-c", "1", "--max-tasks-per-child", "2")

    assert status == 0, log
    ran = [ln.split() for ln in lines(out)]
    assert sorted(t for t, _ in ran) == sorted(f"j{i}" for i in range(9))
    pids = [pid for _, pid in ran]
    assert len(set(pids)) == 5  # 2 + 2 + 2 + 2 + 1
    assert all(pids.count(p) <= 2 for p in pids)
    assert all(where(spool, i) == [] for i in ids)
    assert listing(spool)["failed"] == []


def test_a_long_job_behind_short_ones_does_not_time_out_a_short_ones_hard_limit(tmp_path):
    # Given short jobs with a 0.5 s hard limit (short enough to be prefetched, answers sent a
    # few at a time) and, among them, one that legitimately runs 1.5 s under a 5 s limit
    spool, out = tmp_path / "spool", str(tmp_path / "ran")
    app = spoolq.App(spool)
    app.send_many([{"name": "wt.record", "args": [out, f"a{i}"], "time_limit": 0.5} for i in range(60)])
    app.send_task("wt.sleep", args=[out, "long", 1.5], time_limit=5)
    app.send_many([{"name": "wt.record", "args": [out, f"b{i}"], "time_limit": 0.5} for i in range(60)])

    status, _, log = burst(spool, "-c", "1")

    # Then no short job is blamed for the long one's time: nothing failed, nothing was killed
    assert status == 0, log
    assert listing(spool)["failed"] == [], log
    assert "TimeLimitExceeded" not in log
    assert "end long" in lines(out)
    assert len([ln for ln in lines(out) if ln[:1] in "ab"]) == 120


GRACE_MESSAGE = "soft time limit (0.3 s) exceeded and the task did not stop within 0.5 s of grace"


@pytest.mark.parametrize("how", ["catch", "ignore", "c_loop"])
def test_a_task_that_outlives_its_soft_limit_is_killed_after_the_grace_and_charged(tmp_path, how):
    # Given a task with only a soft limit (0.3 s) that does not stop when it passes: it
    # catches SoftTimeLimitExceeded and goes on, ignores SIGALRM, or sits in C code
    spool, out = tmp_path / "spool", str(tmp_path / "ran")
    app = spoolq.App(spool)
    job_id = app.send_task("wt.stubborn", args=[out, "s", how]).id  # max_retries=1

    # When the worker runs it with half a second of grace
    status, _, log = burst(spool, "-c", "1", "--soft-time-limit-grace", "0.5")

    # Then each attempt is killed after the soft limit plus the grace and charged, so the
    # job is retried once and fails, instead of holding a worker process for ever
    assert status == 0, log
    job = read_job(spool, "failed", job_id)
    assert [(e["type"], e["message"]) for e in job["errors"]] == [("TimeLimitExceeded", GRACE_MESSAGE)] * 2
    attempts = [ln.split()[1] for ln in lines(out) if ln.startswith("s ")]
    assert len(set(attempts)) == 2  # each attempt in a new child
    if how == "catch":
        assert lines(out).count("caught s") == 2  # the soft limit did come first


def test_the_grace_comes_from_the_configuration_and_a_shorter_hard_limit_wins(tmp_path):
    spool, out = tmp_path / "spool", str(tmp_path / "ran")
    app = spoolq.App(spool)
    graced = app.send_task("wt.stubborn", args=[out, "g", "catch"], max_retries=0).id
    hard = app.send_task("wt.stubborn", args=[out, "h", "catch"], max_retries=0, time_limit=0.4).id
    (tmp_path / "spoolq.ini").write_text("[spoolq]\nsoft_time_limit_grace = 0.5\n")

    status, _, log = burst(spool, "-c", "1")  # the worker runs in tmp_path, beside spoolq.ini

    assert status == 0, log
    assert [e["message"] for e in read_job(spool, "failed", graced)["errors"]] == [GRACE_MESSAGE]
    assert [e["message"] for e in read_job(spool, "failed", hard)["errors"]] == ["hard time limit (0.4 s) exceeded"]


def test_the_kill_deadline_is_the_hard_limit_or_the_soft_limit_plus_grace_whichever_is_first():
    assert job_limit(None, None, 30.0) is None
    assert job_limit(None, 5.0, 30.0) == (5.0, "hard time limit (5 s) exceeded")
    soft_only = (3.0, "soft time limit (2 s) exceeded and the task did not stop within 1 s of grace")
    assert job_limit(2.0, None, 1.0) == soft_only
    assert job_limit(2.0, 10.0, 1.0)[0] == 3.0
    assert job_limit(2.0, 3.0, 1.0) == (3.0, "hard time limit (3 s) exceeded")  # a tie: the hard limit says why
    assert KEYS["soft_time_limit_grace"].default == SOFT_LIMIT_GRACE_S
