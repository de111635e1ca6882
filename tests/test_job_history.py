"""A job's error history stays bounded however often it fails, and says what it left out.

Given a job close to ``max_job_size`` whose task fails with long tracebacks and retries,
when it runs until its retries run out, then it ends in ``failed/`` as a job (not refused as
an oversized file), ``spoolq show`` finds it, and its history holds the first error, the
latest ones and a summary of those between.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from conftest import run_spoolq, subprocess_env
from hypothesis import given, settings
from hypothesis import strategies as st
from worker_helpers import Worker, listing, read_job
from worker_tasks import lines as noted

import spoolq
from spoolq.codec import encode_json
from spoolq.history import MAX_ERRORS_KEPT, MAX_HISTORY_BYTES, bound_history
from spoolq.job import Job, make_error

NOW = datetime(2026, 11, 30, 7, 0, tzinfo=timezone.utc)

entries = st.fixed_dictionaries(
    {
        "at": st.text(max_size=40),
        "attempt": st.integers(0, 10**6),
        "type": st.text(max_size=400),
        "message": st.text(max_size=3000),
        "traceback": st.text(max_size=9000),
    },
    optional={"extra": st.text(max_size=20000), "summarised": st.integers(-3, 50)},
)


@settings(max_examples=200, deadline=None)
@given(st.lists(entries, max_size=40))
def test_any_history_is_bounded_and_keeps_the_first_and_the_latest(errors: list[dict]) -> None:
    bounded = bound_history(errors)
    assert len(encode_json(list(bounded))) <= MAX_HISTORY_BYTES
    assert len(bounded) <= MAX_ERRORS_KEPT
    if errors and len(bounded) > 1:
        # the original cause and the latest error are kept (cut, but recognisably)
        assert bounded[0]["attempt"] == errors[0]["attempt"]
        assert bounded[-1]["attempt"] == errors[-1]["attempt"]


def test_a_hundred_retries_keep_the_file_small_and_count_every_error() -> None:
    job = Job(id="j", task="t", args=["x" * 1000])
    for attempt in range(100):
        job = job.retried(make_error("ConnectionError", "m" * 5000, "tb\n" * 4000, attempt=attempt, at=NOW), NOW)
    assert job.error_count() == 100
    assert len(job.to_json()) < 1000 + MAX_HISTORY_BYTES
    summary = [e for e in job.errors if e["type"] == "SummarisedErrors"]
    assert len(summary) == 1 and summary[0]["summarised"] == 100 - (MAX_ERRORS_KEPT - 1)
    assert "ConnectionError x" in summary[0]["message"]
    assert "characters cut" in job.errors[-1]["traceback"]  # it says so, and keeps the end
    assert job.errors[-1]["traceback"].endswith("tb\n")


def test_a_job_near_the_size_limit_retries_until_it_fails_as_a_job(tmp_path) -> None:
    # Given a spool limited to 8 KiB jobs and a job of almost that size whose task fails
    # loudly (long message, deep traceback) and retries 12 times
    limit = 8192
    spool, log = tmp_path / "spool", str(tmp_path / "ran")
    app = spoolq.App(spool, max_job_size=limit)
    probe = app.make_job("wt.loud", [log, "big", ""], task_id="big")
    pad = "p" * (limit - len(probe.to_json()) - 8)
    app.send_task("wt.loud", args=[log, "big", pad], task_id="big")
    assert limit - 16 < len((spool / "new" / "big.json").read_bytes()) <= limit
    # When a worker runs it to the end
    w = Worker(spool, "--burst", "-c", "1", env=subprocess_env(SPOOLQ_MAX_JOB_SIZE=str(limit)))
    assert w.wait(120) == 0, w.text()[-3000:]
    # Then it ran 13 times and is in failed/ as a job, with its whole story
    assert [ln.split()[1] for ln in noted(log)] == [str(i) for i in range(13)]
    names = listing(spool)["failed"]
    assert len(names) == 1 and not names[0].endswith(".bad"), names
    record = read_job(spool, "failed", "big")
    assert record["retries"] == 12 and record["args"][2] == pad
    assert Job.from_dict(record).error_count() == 13
    assert record["errors"][0]["attempt"] == 0 and record["errors"][-1]["attempt"] == 12
    assert record["errors"][1]["type"] == "SummarisedErrors"
    assert "ERROR] rejected" not in w.text() and ", 0 rejected" in w.text()
    # and `spoolq show` finds it
    shown = run_spoolq("--spool", str(spool), "show", "big", cwd=tmp_path, env=subprocess_env())
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["state"] == "failed"
    app.spool.close()
