"""spoolq fsck: each kind of damage made by hand, found, then repaired."""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path

from click.testing import CliRunner
from conftest import files_in

from spoolq import fsck
from spoolq.cli import main
from spoolq.clock import utcnow
from spoolq.job import Job, make_error
from spoolq.layout import ACTIVE, DELAYED, DONE, FAILED, NEW, READY, TMP, job_name
from spoolq.spool import Spool


def _job(job_id: str = "j1", **kw) -> Job:
    return Job(id=job_id, task="tests.echo", args=["hi"], **kw)


def _put(spool: Spool, state: str, name: str, job: Job | bytes) -> Path:
    path = spool.dir(state) / name
    path.write_bytes(job if isinstance(job, bytes) else job.to_json())
    return path


def _kinds(report: fsck.Report) -> list[tuple[str, str]]:
    return [(f.kind, f.path) for f in report.findings]


def _live(spool: Spool) -> dict[str, list[str]]:
    return {s: files_in(spool.dir(s)) for s in (NEW, READY, ACTIVE, DELAYED)}


def test_a_clean_spool_is_clean(spool: Spool) -> None:
    # Given a spool with a job in each state where a job may rest
    job = _job()
    _put(spool, READY, job_name(READY, job), job)
    later = _job("j2", eta=utcnow() + timedelta(hours=1))
    _put(spool, DELAYED, job_name(DELAYED, later, later.eta), later)
    _put(spool, DONE, "j3.json", _job("j3"))
    # When it is checked
    report = fsck.check(spool)
    # Then nothing is reported
    assert report.clean and report.findings == []
    assert report.summary().endswith("clean")


def test_stale_tmp_found_and_removed_but_young_kept(spool: Spool) -> None:
    old = spool.dir(TMP) / "1.2.3.abc"
    old.write_bytes(b"half a job")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    young = spool.dir(TMP) / "4.5.6.def"
    young.write_bytes(b"being written")
    report = fsck.check(spool)
    assert _kinds(report) == [(fsck.STALE_TMP, "tmp/1.2.3.abc")]
    assert not report.clean
    report = fsck.check(spool, repair=True)
    assert report.findings[0].action == "removed" and report.clean
    assert files_in(spool.dir(TMP)) == ["4.5.6.def"]


def test_orphaned_active_returns_to_ready(spool: Spool) -> None:
    job = _job()
    _put(spool, ACTIVE, "j1.json", job)
    report = fsck.check(spool)
    assert _kinds(report) == [(fsck.ORPHANED, "active/j1.json")]
    report = fsck.check(spool, repair=True)
    assert report.clean, report.remaining
    assert report.findings[0].action.startswith("returned to ready/")
    assert files_in(spool.dir(READY)) == [job_name(READY, job)]
    assert files_in(spool.dir(ACTIVE)) == []


def test_orphaned_active_whose_outcome_was_recorded_is_dropped(spool: Spool) -> None:
    # Given a crash after the retry record was written but before active/ was removed
    job = _job()
    _put(spool, ACTIVE, "j1.json", job)
    due = utcnow() + timedelta(minutes=5)
    retried = job.retried(make_error("E", "m", "", attempt=0, at=utcnow()), due)
    _put(spool, DELAYED, job_name(DELAYED, retried, due), retried)
    # When repaired, then the active copy is dropped and the retry record kept
    report = fsck.check(spool, repair=True)
    assert report.clean, report.remaining
    assert files_in(spool.dir(ACTIVE)) == []
    assert files_in(spool.dir(DELAYED)) == [job_name(DELAYED, retried, due)]
    assert files_in(spool.dir(READY)) == []


def test_unparseable_files_are_rejected_with_the_reason(spool: Spool) -> None:
    _put(spool, NEW, "bad.json", b"{not json")
    _put(spool, READY, job_name(READY, _job("j9")), b'{"v": 1, "id": "j9"}')
    _put(spool, DONE, "j8.json", b"\xff\xfe")
    report = fsck.check(spool)
    assert sorted(k for k, _ in _kinds(report)) == [fsck.UNPARSEABLE] * 3
    report = fsck.check(spool, repair=True)
    assert report.clean, report.remaining
    assert all(f.action.startswith("moved to failed/") for f in report.findings)
    failed = files_in(spool.dir(FAILED))
    assert len([n for n in failed if n.endswith(".bad")]) == 3
    reasons = [(spool.dir(FAILED) / n).read_text() for n in failed if n.endswith(".reason")]
    assert any("not valid JSON" in r for r in reasons)
    assert any("missing field" in r for r in reasons)
    assert any("not UTF-8" in r for r in reasons)
    assert (spool.dir(FAILED) / next(n for n in failed if "bad.json" in n and n.endswith(".bad"))).read_bytes() == (
        b"{not json"
    )


def test_misnamed_files_are_renamed_for_their_state(spool: Spool) -> None:
    job = _job("real")
    later = _job("later", eta=utcnow() + timedelta(hours=1))
    _put(spool, NEW, "wrong.json", job)
    _put(spool, DELAYED, "later.json", later)  # no due stamp in the name
    _put(spool, DONE, "other.json", _job("kept"))
    report = fsck.check(spool)
    assert sorted(_kinds(report)) == [
        (fsck.MISNAMED, "delayed/later.json"),
        (fsck.MISNAMED, "done/other.json"),
        (fsck.MISNAMED, "new/wrong.json"),
    ]
    report = fsck.check(spool, repair=True)
    assert report.clean, report.remaining
    assert files_in(spool.dir(NEW)) == ["real.json"]
    assert files_in(spool.dir(DELAYED)) == [job_name(DELAYED, later, later.eta)]
    assert files_in(spool.dir(DONE)) == ["kept.json"]


def test_misnamed_onto_a_taken_name_is_rejected(spool: Spool) -> None:
    _put(spool, DONE, "a.json", _job("a", result_ttl=5))
    _put(spool, DONE, "b.json", _job("a"))
    report = fsck.check(spool, repair=True)
    assert report.clean, report.remaining
    assert files_in(spool.dir(DONE)) == ["a.json"]
    assert "is taken" in report.findings[0].action or report.findings[0].action.startswith("moved to failed/")


def test_duplicate_id_keeps_the_most_advanced_record(spool: Spool) -> None:
    # Given the same job in new/ and, one retry further along, in delayed/
    job = _job()
    due = utcnow() + timedelta(minutes=5)
    retried = job.retried(make_error("E", "m", "", attempt=0, at=utcnow()), due)
    _put(spool, NEW, "j1.json", job)
    _put(spool, READY, job_name(READY, job), job)
    _put(spool, DELAYED, job_name(DELAYED, retried, due), retried)
    report = fsck.check(spool)
    assert sorted(_kinds(report)) == [
        (fsck.DUPLICATE, "new/j1.json"),
        (fsck.DUPLICATE, f"ready/{job_name(READY, job)}"),
    ]
    report = fsck.check(spool, repair=True)
    assert report.clean, report.remaining
    assert _live(spool) == {NEW: [], READY: [], ACTIVE: [], DELAYED: [job_name(DELAYED, retried, due)]}
    reasons = [(spool.dir(FAILED) / n).read_text() for n in files_in(spool.dir(FAILED)) if n.endswith(".reason")]
    assert len(reasons) == 2 and all("duplicate" in r for r in reasons)


def test_foreign_things_are_rejected_and_nothing_outside_is_touched(spool: Spool, tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    content = _job("outside").to_json()
    outside.write_bytes(content)
    before = outside.stat()
    (spool.dir(NEW) / "notes.txt").write_text("hello")
    (spool.dir(NEW) / "adir").mkdir()
    (spool.dir(NEW) / "adir" / "x.json").write_text("inner")
    os.symlink(outside, spool.dir(READY) / "link.json")
    os.mkfifo(spool.dir(DELAYED) / "fifo.json")
    os.link(outside, spool.dir(DONE) / "outside.json")
    report = fsck.check(spool)
    assert sorted(_kinds(report)) == [
        (fsck.FOREIGN, "delayed/fifo.json"),
        (fsck.FOREIGN, "done/outside.json"),
        (fsck.FOREIGN, "new/adir"),
        (fsck.FOREIGN, "new/notes.txt"),
        (fsck.FOREIGN, "ready/link.json"),
    ]
    report = fsck.check(spool, repair=True)
    assert report.clean, report.remaining
    assert _live(spool) == {NEW: [], READY: [], ACTIVE: [], DELAYED: []}
    assert files_in(spool.dir(DONE)) == []
    failed = files_in(spool.dir(FAILED))
    assert len([n for n in failed if n.endswith(".bad")]) == 5
    # The outside file is as it was: same bytes, same inode, now with two links (ours moved).
    after = outside.stat()
    assert outside.read_bytes() == content
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
    link = next(spool.dir(FAILED) / n for n in failed if "link.json" in n and n.endswith(".bad"))
    assert link.is_symlink() and os.readlink(link) == str(outside)


def test_repair_is_refused_while_a_supervisor_holds_the_lock(spool: Spool) -> None:
    _put(spool, NEW, "bad.json", b"garbage")
    old = spool.dir(TMP) / "1.2.3.abc"
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    _put(spool, ACTIVE, "running.json", _job("running"))
    with spool.lock():
        report = fsck.check(spool, repair=True)
    # active/ is the running supervisor's business: not reported
    assert sorted(_kinds(report)) == [(fsck.STALE_TMP, "tmp/1.2.3.abc"), (fsck.UNPARSEABLE, "new/bad.json")]
    assert report.supervisor_running and report.notes and "stop it" in report.notes[0]
    assert files_in(spool.dir(TMP)) == []  # safe concurrently: done
    assert files_in(spool.dir(NEW)) == ["bad.json"]  # not safe: left
    assert [f.kind for f in report.remaining] == [fsck.UNPARSEABLE]


def test_rejected_files_in_failed_are_not_findings(spool: Spool) -> None:
    _put(spool, NEW, "x.txt", b"junk")
    spool.reject(NEW, "x.txt", "not a job", utcnow())
    failed_job = _job("f")
    _put(spool, FAILED, job_name(FAILED, failed_job, utcnow()), failed_job)
    assert fsck.check(spool).clean


def test_cli_exit_status_and_json(spool: Spool) -> None:
    runner = CliRunner()
    args = ["--spool", str(spool.path), "fsck"]
    clean = runner.invoke(main, args)
    assert clean.exit_code == 0, clean.output
    assert "clean" in clean.output
    _put(spool, NEW, "bad.json", b"[")
    found = runner.invoke(main, args)
    assert found.exit_code == 1
    assert found.output.splitlines()[0].startswith("unparseable")
    as_json = runner.invoke(main, [*args, "--json"])
    assert as_json.exit_code == 1
    data = json.loads(as_json.output)
    assert data["clean"] is False and data["findings"][0]["path"] == "new/bad.json"
    repaired = runner.invoke(main, [*args, "--repair"])
    assert repaired.exit_code == 0, repaired.output
    assert "1 repaired, 0 remaining" in repaired.output
    assert runner.invoke(main, args).exit_code == 0
    help_text = runner.invoke(main, ["fsck", "--help"]).output
    assert "Exit status" in help_text and "remaining after --repair" in help_text
