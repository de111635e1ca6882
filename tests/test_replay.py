"""``spoolq retry`` killed between its two steps (publish the reset job, remove the failed
copy) is finished by whoever comes next, and the job runs once.

The crash state is made by the real command: a complete ``spoolq retry --all``, then the
failed copy put back as it was, which is exactly what a kill after the publish leaves.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from conftest import files_in, run_spoolq
from worker_helpers import burst
from worker_tasks import lines

from spoolq.cli import EXIT_JOB
from spoolq.job import Job, make_error
from spoolq.layout import FAILED, NEW
from spoolq.replay import REPLAY_OF, drop_replayed_copy
from spoolq.spool import Spool

T0 = datetime(2026, 11, 25, 3, 15, tzinfo=timezone.utc)
FAILED_NAME = "20261125T031500.000000Z-j1.json"


def failed_copy(spool: Path, runs: Path, job_id: str = "j1", name: str = FAILED_NAME) -> Path:
    """A job that failed for good: it appends its id to ``runs`` when it runs."""
    err = make_error("ConnectionError", "refused", "Traceback ...", attempt=3, at=T0)
    job = Job(
        id=job_id, task="wt.record", args=[str(runs), job_id], retries=3, max_retries=3, errors=(err,), enqueued_at=T0
    )
    s = Spool(spool)
    try:
        s.write(FAILED, name, job)
        return s.path_of(FAILED, name)
    finally:
        s.close()


def runs_of(runs: Path) -> list[str]:
    """The tokens of the runs noted (each line is "token pid")."""
    return [line.split()[0] for line in lines(str(runs))]


def retry_all(spool: Path, cwd: Path):
    return run_spoolq("--spool", str(spool), "retry", "--all", cwd=cwd)


def crash_state(spool: Path, runs: Path, cwd: Path) -> None:
    """What `spoolq retry --all` leaves when killed after the publish: both copies."""
    copy = failed_copy(spool, runs)
    data = copy.read_bytes()
    first = retry_all(spool, cwd)
    assert first.returncode == 0, first.stderr
    copy.write_bytes(data)  # the removal never happened
    assert files_in(spool / FAILED) == [FAILED_NAME] and files_in(spool / NEW) == ["j1.json"]


@pytest.mark.slow
def test_retry_rerun_after_a_kill_finishes_the_replay_and_the_job_runs_once(tmp_path: Path) -> None:
    spool, runs = tmp_path / "spool", tmp_path / "runs.txt"
    # Given the state of a `spoolq retry --all` killed between publishing and removing
    crash_state(spool, runs, tmp_path)
    # When it is run again, twice
    again = retry_all(spool, tmp_path)
    twice = retry_all(spool, tmp_path)
    # Then both succeed: the first removes the leftover failed copy (and says so), the second
    # finds nothing to do; the job is queued once
    assert again.returncode == 0, again.stderr
    assert "already sent back (in new/); removed its leftover failed copy" in again.stdout
    assert twice.returncode == 0 and twice.stdout == "" and "retried 0 jobs" in twice.stderr
    assert files_in(spool / FAILED) == [] and files_in(spool / NEW) == ["j1.json"]
    # And a worker runs it once; a later retry --all and worker have nothing to run
    assert burst(spool)[0] == 0
    assert retry_all(spool, tmp_path).returncode == 0
    assert burst(spool)[0] == 0
    assert runs_of(runs) == ["j1"]
    assert files_in(spool / FAILED) == []


@pytest.mark.slow
def test_a_worker_taking_a_replay_in_removes_its_failed_copy(tmp_path: Path) -> None:
    spool, runs = tmp_path / "spool", tmp_path / "runs.txt"
    # Given the state of a `spoolq retry --all` killed between publishing and removing
    crash_state(spool, runs, tmp_path)
    # When a worker runs before anyone retries again
    status, _, log = burst(spool)
    # Then the job ran, and no stale failed copy is left to replay
    assert status == 0, log
    assert runs_of(runs) == ["j1"]
    assert files_in(spool / FAILED) == []
    # So a later retry --all replays nothing, and the job ran exactly once
    later = retry_all(spool, tmp_path)
    assert later.returncode == 0 and "retried 0 jobs" in later.stderr
    assert burst(spool)[0] == 0
    assert runs_of(runs) == ["j1"]


def test_a_failed_copy_whose_id_another_live_job_uses_is_left_alone(tmp_path: Path) -> None:
    spool, runs = tmp_path / "spool", tmp_path / "runs.txt"
    # Given a failed job, and a new job with the same id that is not its replay
    failed_copy(spool, runs)
    Spool(spool).publish(Job(id="j1", task="wt.record", args=[str(runs), "fresh"], enqueued_at=T0))
    # When every failed job is retried
    result = retry_all(spool, tmp_path)
    # Then that one is neither replayed (the id would run twice) nor removed (its history is
    # not in the live job); the command says so and how to remove it, with exit 1
    assert result.returncode == EXIT_JOB
    assert (
        f"j1: not retried: another job with this id is in new/; its failed copy stays (spoolq delete {FAILED_NAME}"
        in result.stderr
    )
    assert files_in(spool / FAILED) == [FAILED_NAME]
    assert json.loads((spool / NEW / "j1.json").read_bytes())["args"][1] == "fresh"
    # And the name it gives removes exactly that copy
    assert run_spoolq("--spool", str(spool), "delete", FAILED_NAME, cwd=tmp_path).returncode == 0
    assert files_in(spool / FAILED) == [] and files_in(spool / NEW) == ["j1.json"]


def test_a_replay_names_its_failed_copy_and_keeps_unknown_fields(spool: Spool, tmp_path: Path) -> None:
    copy = failed_copy(spool.path, tmp_path / "runs.txt")
    data = json.loads(copy.read_bytes())
    copy.write_bytes(json.dumps({**data, "x-trace": "abc"}).encode())
    assert run_spoolq("--spool", str(spool.path), "retry", "j1", cwd=tmp_path).returncode == 0
    sent = json.loads((spool.path / NEW / "j1.json").read_bytes())
    assert sent[REPLAY_OF] == FAILED_NAME and sent["x-trace"] == "abc" and sent["retries"] == 0
    assert [e["type"] for e in sent["errors"]] == ["ConnectionError"]


@pytest.mark.parametrize(
    "replay_of",
    [
        None,
        42,
        "../new/j1.json",  # a path
        "20261125T031500.000000Z-j2.json",  # another job's failed copy
        "20261125T031500.000000Z-j1.json/x",
        "j1.json",  # not a failed/ name
        "garbage-j1.json",
    ],
)
def test_the_supervisor_removes_only_a_failed_copy_of_the_same_id(
    spool: Spool, tmp_path: Path, replay_of: object
) -> None:
    # Given failed copies of j1 and j2, and files elsewhere a crafted replay_of could name
    for job_id in ("j1", "j2"):
        failed_copy(spool.path, tmp_path / "runs.txt", job_id, f"20261125T031500.000000Z-{job_id}.json")
    spool.publish(Job(id="j1", task="t", enqueued_at=T0))
    before = {d: files_in(spool.path / d) for d in (FAILED, NEW)}
    # When a job of id j1 naming anything but its own failed copy is taken in
    job = Job(id="j1", task="t", enqueued_at=T0, extra={} if replay_of is None else {REPLAY_OF: replay_of})
    # Then nothing is removed
    assert drop_replayed_copy(spool, job) is False
    assert {d: files_in(spool.path / d) for d in (FAILED, NEW)} == before
    # While its own copy is removed
    own = Job(id="j1", task="t", enqueued_at=T0, extra={REPLAY_OF: FAILED_NAME})
    assert drop_replayed_copy(spool, own) is True
    assert files_in(spool.path / FAILED) == ["20261125T031500.000000Z-j2.json"]


def test_two_failed_copies_of_one_id_are_sent_back_once(tmp_path: Path) -> None:
    spool, runs = tmp_path / "spool", tmp_path / "runs.txt"
    # Given two failed copies of one id (it failed, was sent again by a producer, failed again)
    failed_copy(spool, runs, "j1", "20261125T031500.000000Z-j1.json")
    failed_copy(spool, runs, "j1", "20261125T041500.000000Z-j1.json")
    # When every failed job is retried
    result = retry_all(spool, tmp_path)
    # Then the first is sent back, the second is named and kept (exit 1)
    assert result.returncode == EXIT_JOB
    assert result.stdout == "j1 -> new/\n"
    assert "j1: not retried: another job with this id is in new/" in result.stderr
    assert files_in(spool / FAILED) == ["20261125T041500.000000Z-j1.json"]
    assert json.loads((spool / NEW / "j1.json").read_bytes())[REPLAY_OF] == "20261125T031500.000000Z-j1.json"
