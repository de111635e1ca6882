"""Crash recovery (:func:`spoolq.recovery.recover`) on spools crafted as a crash leaves them.

Each test lays out files the way a crash (or a power loss) can leave them, runs recovery
once, and looks at the directories: every job in exactly one live place, nothing foreign
touched.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import files_in

from spoolq.job import Job, make_error
from spoolq.layout import ACTIVE, DELAYED, DONE, FAILED, NEW, READY, TMP, discarded_name, job_name, plain_name
from spoolq.recovery import Recovery, recover
from spoolq.spool import Spool

UTC = timezone.utc
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)
TMP_MAX_AGE_S = 3600.0


@pytest.fixture
def spool(spool_dir: Path):
    s = Spool(spool_dir, fsync=False)
    yield s
    s.close()


def a_job(job_id: str = "j1", *, errors: int = 0, enqueued_at: datetime = T0, **fields: Any) -> Job:
    """A job enqueued at ``enqueued_at`` with ``errors`` errors in its history."""
    history = tuple(make_error("E", f"m{i}", "", attempt=i, at=T0) for i in range(errors))
    return Job(id=job_id, task="t", enqueued_at=enqueued_at, errors=history, retries=errors, **fields)


def put(spool: Spool, state: str, job: Job, when: datetime | None = None) -> str:
    """Write ``job`` into ``state`` under its name there; the name."""
    name = job_name(state, job, when or (T0 if state in (DELAYED, FAILED) else None))
    spool.write(state, name, job)
    return name


def listing(spool: Spool) -> dict[str, list[str]]:
    return {s: files_in(spool.dir(s)) for s in (TMP, NEW, READY, ACTIVE, DELAYED, FAILED, DONE)}


def age(path: Path, seconds: float) -> None:
    """Make ``path`` look last modified ``seconds`` before NOW."""
    t = NOW.timestamp() - seconds
    os.utime(path, (t, t))


# -- tmp/ -----------------------------------------------------------------------------------


def test_a_stale_tmp_file_is_swept_and_a_fresh_one_kept(spool):
    # Given a file a writer left two hours ago, and one being written now
    stale, fresh = spool.dir(TMP) / "1.100.1.abc", spool.dir(TMP) / "2.200.1.def"
    stale.write_bytes(b"half a job")
    fresh.write_bytes(b"being written")
    age(stale, 2 * TMP_MAX_AGE_S)
    age(fresh, 10)
    # When recovery runs
    done = recover(spool, NOW, tmp_max_age_s=TMP_MAX_AGE_S)
    # Then only the stale one is gone
    assert done.swept == [stale.name]
    assert listing(spool)[TMP] == [fresh.name]


def test_a_discarded_job_in_tmp_is_swept_whatever_its_age(spool):
    # Given a finished job a child renamed into tmp/ a moment ago, without unlinking it yet
    name = discarded_name(int(NOW.timestamp() * 1e9), 4242, "j1.json")
    path = spool.dir(TMP) / name
    path.write_bytes(a_job().to_json())
    age(path, 1)
    # When recovery runs, Then it is removed (never run again)
    done = recover(spool, NOW, tmp_max_age_s=TMP_MAX_AGE_S)
    assert done.swept == [name]
    assert listing(spool)[TMP] == []


def test_a_directory_in_tmp_is_left_alone_however_old(spool):
    d = spool.dir(TMP) / "somebodys-dir"
    d.mkdir()
    age(d, 10 * TMP_MAX_AGE_S)
    assert recover(spool, NOW, tmp_max_age_s=TMP_MAX_AGE_S).swept == []
    assert d.is_dir()


# -- active/ --------------------------------------------------------------------------------


def test_a_job_left_in_active_goes_back_to_ready_uncharged(spool):
    # Given a job that was running when its supervisor died
    job = a_job(errors=1, priority=3)
    put(spool, ACTIVE, job)
    # When recovery runs
    done = recover(spool, NOW, tmp_max_age_s=TMP_MAX_AGE_S)
    # Then it is back in ready/ under its ready name, as it was (no attempt charged)
    ready = job_name(READY, job)
    assert done.requeued == [(job, ready)]
    assert listing(spool)[ACTIVE] == [] and listing(spool)[READY] == [ready]
    assert spool.read(READY, ready) == job


@pytest.mark.parametrize(
    ("state", "later"),
    [
        (DELAYED, a_job(errors=2)),  # its retry was recorded
        (FAILED, a_job(errors=2)),  # its failure was recorded
        (READY, a_job(errors=2)),  # its retry, due at once, was recorded
        (DONE, a_job(errors=1).succeeded({"r": 1}, T0, 60)),  # its result was kept
    ],
    ids=["delayed", "failed", "ready", "done"],
)
def test_an_active_job_whose_outcome_was_recorded_is_dropped(spool, state, later):
    # Given a job in active/ and its later record (the same enqueue, further along): the crash
    # fell between writing the record and removing the active/ copy
    running = a_job(errors=1)
    put(spool, ACTIVE, running)
    record = put(spool, state, later)
    # When recovery runs
    done = recover(spool, NOW, tmp_max_age_s=TMP_MAX_AGE_S)
    # Then the active/ copy goes (it would run the job once more), and the record stays
    assert done.dropped == [running]
    assert done.requeued == []
    after = listing(spool)
    assert after[ACTIVE] == []
    assert after[state] == [record]
    assert sum(len(names) for s, names in after.items() if s != TMP) == 1


def test_an_active_job_is_requeued_when_the_other_record_is_of_another_enqueue(spool):
    # Given a job in active/ and, in failed/, a job with the same id enqueued earlier that
    # failed with more errors: a different job that happens to share the id
    running = a_job(errors=0)
    put(spool, ACTIVE, running)
    other = put(spool, FAILED, a_job(errors=3, enqueued_at=T0 - timedelta(days=1)))
    # When recovery runs, Then the running one is requeued, the other left alone
    done = recover(spool, NOW, tmp_max_age_s=TMP_MAX_AGE_S)
    assert done.dropped == []
    assert [j for j, _ in done.requeued] == [running]
    assert listing(spool)[FAILED] == [other]


def test_an_active_job_is_requeued_when_the_other_record_is_not_further_along(spool):
    # The same enqueue with as many errors is not a later record (e.g. an older copy)
    put(spool, ACTIVE, a_job(errors=1))
    put(spool, FAILED, a_job(errors=1))
    done = recover(spool, NOW, tmp_max_age_s=TMP_MAX_AGE_S)
    assert done.dropped == [] and len(done.requeued) == 1


def test_an_unreadable_file_in_active_is_moved_aside_with_the_reason(spool):
    # Given garbage under a job's name in active/
    (spool.dir(ACTIVE) / "j1.json").write_bytes(b"{not json")
    # When recovery runs
    done = recover(spool, NOW, tmp_max_age_s=TMP_MAX_AGE_S)
    # Then it is in failed/, untouched, with a reason beside it; nothing was requeued
    assert [(name, bad) for name, bad, _ in done.rejected] == [("j1.json", "20300101T130000.000000Z-j1.json.bad")]
    failed = listing(spool)[FAILED]
    assert failed == ["20300101T130000.000000Z-j1.json.bad", "20300101T130000.000000Z-j1.json.bad.reason"]
    assert (spool.dir(FAILED) / failed[0]).read_bytes() == b"{not json"
    assert "unreadable file in active/ after a crash" in (spool.dir(FAILED) / failed[1]).read_text()
    assert listing(spool)[ACTIVE] == [] and listing(spool)[READY] == []


# -- twins: one file under two names ------------------------------------------------------------


def test_a_file_left_in_ready_and_active_keeps_its_later_name_only(spool):
    # Given a claim (ready → active) that a power loss half undid: one file, two names
    job = a_job()
    ready = put(spool, READY, job)
    os.link(spool.path_of(READY, ready), spool.path_of(ACTIVE, plain_name(job.id)))
    # When recovery runs
    done = recover(spool, NOW, tmp_max_age_s=TMP_MAX_AGE_S)
    # Then the earlier name (ready/) went; the job, in active/, was then requeued as usual:
    # it is in ready/ once, a file of its own
    assert done.untwinned == [f"ready/{ready}"]
    assert [j for j, _ in done.requeued] == [job]
    assert listing(spool)[ACTIVE] == [] and listing(spool)[READY] == [ready]
    assert os.stat(spool.path_of(READY, ready)).st_nlink == 1


def test_a_file_left_in_new_and_delayed_keeps_its_delayed_name(spool):
    job = a_job(eta=T0 + timedelta(days=1))
    spool.write(NEW, plain_name(job.id), job)
    delayed = job_name(DELAYED, job, job.eta)
    os.link(spool.path_of(NEW, plain_name(job.id)), spool.path_of(DELAYED, delayed))
    done = recover(spool, NOW, tmp_max_age_s=TMP_MAX_AGE_S)
    assert done.untwinned == [f"new/{plain_name(job.id)}"]
    assert listing(spool)[NEW] == [] and listing(spool)[DELAYED] == [delayed]


def test_a_file_linked_from_outside_the_live_states_is_left_alone(spool, tmp_path):
    # Given a file in ready/ that is also linked from outside the spool, and one that is also
    # in failed/ (a name outside the live states)
    job, other = a_job("in"), a_job("out")
    ready = put(spool, READY, job)
    os.link(spool.path_of(READY, ready), tmp_path / "elsewhere.json")
    ready2 = put(spool, READY, other)
    failed = job_name(FAILED, other, T0)
    os.link(spool.path_of(READY, ready2), spool.path_of(FAILED, failed))
    # When recovery runs, Then no name is removed (the files are refused unread later)
    done = recover(spool, NOW, tmp_max_age_s=TMP_MAX_AGE_S)
    assert done.untwinned == []
    assert (tmp_path / "elsewhere.json").exists()
    assert listing(spool)[READY] == sorted([ready, ready2])
    assert listing(spool)[FAILED] == [failed]


# -- superseded copies ------------------------------------------------------------------------


@pytest.mark.parametrize("state", [DELAYED, FAILED])
def test_a_ready_copy_is_set_aside_when_a_later_record_of_the_job_exists(spool, state):
    # Given a job in ready/ and its record further along in delayed/ or failed/: a power loss
    # undid the move out of ready/ but kept the record written after it
    stale = put(spool, READY, a_job(errors=1))
    later = put(spool, state, a_job(errors=2))
    # When recovery runs, Then the earlier copy leaves the live states for failed/, untouched
    # and with its reason (as fsck sets a duplicate aside), and the record stays
    done = recover(spool, NOW, tmp_max_age_s=TMP_MAX_AGE_S)
    [(where, bad)] = done.superseded
    assert where == f"ready/{stale}" and bad.endswith(f"{stale}.bad")
    assert listing(spool)[READY] == []
    assert later in listing(spool)[state]
    assert "a power loss kept both" in (spool.dir(FAILED) / f"{bad}.reason").read_text()


def test_a_delayed_copy_is_set_aside_when_the_job_finished(spool):
    stale = put(spool, DELAYED, a_job(errors=1, eta=T0 + timedelta(minutes=1)), T0 + timedelta(minutes=1))
    put(spool, DONE, a_job(errors=1).succeeded(None, T0, 60))
    done = recover(spool, NOW, tmp_max_age_s=TMP_MAX_AGE_S)
    assert [where for where, _ in done.superseded] == [f"delayed/{stale}"]
    assert listing(spool)[DELAYED] == []


def test_a_ready_copy_of_another_enqueue_of_the_same_id_is_kept(spool):
    # Given a job in ready/ and, in failed/, a job of the same id from an earlier enqueue that
    # failed with more errors (e.g. sent again after it failed)
    fresh = put(spool, READY, a_job(errors=0))
    old = put(spool, FAILED, a_job(errors=4, enqueued_at=T0 - timedelta(days=2)))
    # When recovery runs, Then both stay: they are two jobs
    done = recover(spool, NOW, tmp_max_age_s=TMP_MAX_AGE_S)
    assert done.superseded == []
    assert listing(spool)[READY] == [fresh]
    assert listing(spool)[FAILED] == [old]


def test_recovery_of_a_clean_spool_does_nothing(spool):
    # Given jobs where they belong, each under one name
    put(spool, READY, a_job())
    put(spool, DELAYED, a_job("d"))
    put(spool, FAILED, a_job("f", errors=1))
    before = listing(spool)
    # When recovery runs, Then it reports nothing and changes nothing
    done = recover(spool, NOW, tmp_max_age_s=TMP_MAX_AGE_S)
    assert done == Recovery()
    assert listing(spool) == before
