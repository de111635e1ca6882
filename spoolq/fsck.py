"""``spoolq fsck``: find (and with ``repair``, fix) what a crash, a bug or a hand left behind.

What is checked, and what a repair does:

- ``stale-tmp``: a file in ``tmp/`` older than ``tmp_max_age``, left by a writer that died.
  Repair removes it; this is the one repair that is safe while a supervisor runs (a live
  writer renames its file within milliseconds).
- ``orphaned-active``: a job in ``active/`` while no supervisor holds the lock.  Repair runs
  the supervisor's own crash recovery: back to ``ready/``, or dropped when its outcome was
  already recorded elsewhere.
- ``foreign``: not a job file: a name not ending in ``.json``, a directory, a symlink, a
  FIFO, a socket, a hard link.  Repair rejects it into ``failed/`` (renamed, never followed,
  opened or read), except a job left under two names of the live states by a move that a
  power loss half undid: repair keeps the later name (:meth:`Spool.drop_twins`).
- ``unparseable``: a ``.json`` file that is not a valid job.  Repair rejects it.
- ``misnamed``: the name does not carry the id the content says.  Repair renames it to the
  right name for its state, or rejects it if that name is taken.
- ``duplicate``: one id in two live files (``new/ ready/ active/ delayed/``).  Repair keeps
  the most advanced record (the longer error history, then the later state) and rejects the
  other copy.

Rejected things keep their original bytes in ``failed/<stamp>-<name>.bad`` with the reason in
``.bad.reason`` beside it (:meth:`Spool.reject`).  Everything but stale ``tmp/`` files is
moved by the supervisor too, so a repair takes the supervisor's lock for its duration and
refuses to touch anything else while a supervisor holds it.  Nothing outside the spool is
opened, followed, changed or removed: symlinks are renamed, not followed, and a file is read
only after ``lstat`` says it is a regular file with one link (and then through ``O_NOFOLLOW``).
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from .errors import JobFormatError, SpoolLocked
from .job import Job, utcnow
from .spool import (
    ACTIVE,
    BAD_SUFFIX,
    DELAYED,
    FAILED,
    LIVE_STATES,
    NEW,
    READY,
    REASON_SUFFIX,
    STATES,
    TMP,
    Spool,
    file_kind,
    job_name,
    parse_name,
    printable,
)

log = logging.getLogger("spoolq.fsck")

STALE_TMP, ORPHANED, FOREIGN, UNPARSEABLE, MISNAMED, DUPLICATE = (
    "stale-tmp", "orphaned-active", "foreign", "unparseable", "misnamed", "duplicate",
)  # fmt: skip
# A producer's file in new/ has two links between its link() and its unlink() of the tmp name.
LINK_GRACE_S = 2.0
# When one id is in two live files, the further along wins ties on the error history.
_STATE_RANK = {NEW: 0, READY: 1, DELAYED: 2, ACTIVE: 3}


@dataclass(frozen=True)
class Finding:
    """One problem: its kind, the path relative to the spool, what is wrong, and what a
    repair did about it (empty when nothing was done)."""

    kind: str
    path: str
    detail: str
    action: str = ""

    def line(self) -> str:
        """One line for a terminal."""
        tail = f"  -> {self.action}" if self.action else ""
        return printable(f"{self.kind:<16} {self.path}: {self.detail}{tail}")


@dataclass
class Report:
    """What :func:`check` found.

    ``findings`` are the problems seen first (with the action taken when repairing);
    ``remaining`` is what a fresh check finds afterwards (the same list without repair);
    ``notes`` says what was not attempted and why.
    """

    spool: str
    repair: bool
    supervisor_running: bool
    findings: list[Finding] = field(default_factory=list)
    remaining: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """No problem left."""
        return not self.remaining

    def summary(self) -> str:
        """One line: how many found, repaired, remaining."""
        repaired = sum(1 for f in self.findings if f.action)
        if not self.findings:
            return f"{self.spool}: clean"
        if not self.repair:
            return f"{self.spool}: {len(self.findings)} problem(s) found; run with --repair to fix them"
        return (
            f"{self.spool}: {len(self.findings)} problem(s) found, {repaired} repaired, {len(self.remaining)} remaining"
        )

    def to_dict(self) -> dict:
        """The report as JSON-ready data."""
        return {
            "spool": self.spool,
            "repair": self.repair,
            "supervisor_running": self.supervisor_running,
            "clean": self.clean,
            "findings": [asdict(f) for f in self.findings],
            "remaining": [asdict(f) for f in self.remaining],
            "notes": list(self.notes),
        }


@dataclass
class _Record:
    state: str
    path: Path
    job: Job


def check(spool: Spool, *, repair: bool = False, now: datetime | None = None,
          tmp_max_age: float = 3600.0) -> Report:  # fmt: skip
    """Check a spool, and with ``repair`` fix what can be fixed.

    Parameters:
        spool: the spool (it must exist).
        repair: fix the problems found (see the module's table).
        now: the current UTC time (default: the clock); stale ``tmp/`` files are those
            older than ``now - tmp_max_age``.
        tmp_max_age: seconds after which a ``tmp/`` file is stale.
    Returns:
        The report; ``report.clean`` is whether nothing is (left) wrong.
    Raises:
        SpoolError: the spool is unsafe (owner, modes) when repairing.
    """
    now = now or utcnow()
    lock = spool.lock()
    held = lock.is_held()
    report = Report(str(spool.path), repair, held)
    report.findings = _scan(spool, now, tmp_max_age, supervisor_running=held)
    if not repair or not report.findings:
        report.remaining = list(report.findings)
        return report
    spool.ensure()
    if held:
        report.findings = [_repair_tmp(spool, f, now, tmp_max_age) if f.kind == STALE_TMP else f
                           for f in report.findings]  # fmt: skip
        if any(f.kind != STALE_TMP for f in report.findings):
            report.notes.append(
                f"a supervisor (pid {lock.holder() or '?'}) holds the spool: only stale tmp/ files were removed; "
                "stop it to repair the rest"
            )
    else:
        try:
            lock.acquire()
        except SpoolLocked as exc:  # a supervisor started meanwhile
            report.notes.append(f"not repaired: {exc}")
            report.remaining = _scan(spool, now, tmp_max_age, supervisor_running=True)
            return report
        try:
            report.findings = _repair(spool, report.findings, now, tmp_max_age)
        finally:
            spool.barrier()
            lock.release()
    report.remaining = _scan(spool, now, tmp_max_age, supervisor_running=lock.is_held())
    return report


# -- finding ------------------------------------------------------------------------------


def _scan(spool: Spool, now: datetime, tmp_max_age: float, *, supervisor_running: bool) -> list[Finding]:
    findings = list(_stale_tmp(spool, now, tmp_max_age))
    records: dict[str, list[_Record]] = {}
    for state in STATES:
        for de in _listing(spool.dir(state)):
            finding, job = _examine(spool, state, de)
            if finding is not None:
                findings.append(finding)
                continue
            if job is not None and state in LIVE_STATES:
                records.setdefault(job.id, []).append(_Record(state, Path(de.path), job))
            if job is not None and state == ACTIVE and not supervisor_running:
                findings.append(Finding(ORPHANED, _rel(spool, de.path), "in active/ but no supervisor holds the lock"))
    for job_id, recs in sorted(records.items()):
        if len(recs) > 1:
            keep = _most_advanced(recs)
            for r in recs:
                if r is not keep:
                    findings.append(
                        Finding(
                            DUPLICATE,
                            _rel(spool, r.path),
                            f"id {job_id!r} is also live in {_rel(spool, keep.path)}, which is kept",
                        )
                    )
    return findings


def _listing(d: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(d) as it:
            return sorted(it, key=lambda de: de.name)
    except FileNotFoundError:
        return []


def _stale_tmp(spool: Spool, now: datetime, tmp_max_age: float) -> Iterator[Finding]:
    now_s = now.timestamp()
    for de in _listing(spool.dir(TMP)):
        try:
            st = de.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            yield Finding(FOREIGN, _rel(spool, de.path), "a directory in tmp/")
        elif now_s - st.st_mtime > tmp_max_age:
            age = now_s - st.st_mtime
            yield Finding(STALE_TMP, _rel(spool, de.path), f"left by a writer that died ({age:.0f} s old)")


def _examine(spool: Spool, state: str, de: os.DirEntry) -> tuple[Finding | None, Job | None]:
    """A finding about one entry of a state directory, or the job it holds."""
    rel = _rel(spool, de.path)
    try:
        st = de.stat(follow_symlinks=False)
    except FileNotFoundError:  # moved meanwhile
        return None, None
    name = de.name
    if state == FAILED and (name.endswith(BAD_SUFFIX) or name.endswith(BAD_SUFFIX + REASON_SUFFIX)):
        return None, None  # already rejected, kept as it was found
    kind = _kind(st.st_mode)
    if kind:
        return Finding(FOREIGN, rel, f"a {kind}, not a job file"), None
    if not name.endswith(".json") or name.startswith("."):
        return Finding(FOREIGN, rel, "not a job file (a job's name ends in .json)"), None
    if st.st_nlink > 1:
        if state == NEW and (time.time() - st.st_ctime < LINK_GRACE_S or spool.tmp_twin(st) is not None):
            return None, None  # a producer between its link() and its unlink(), or killed there
        return Finding(FOREIGN, rel, f"a hard link ({st.st_nlink} links): may belong outside the spool"), None
    try:
        job = spool.read(Path(de.path))
    except FileNotFoundError:
        return None, None
    except (JobFormatError, OSError) as exc:
        return Finding(UNPARSEABLE, rel, str(exc)), None
    name_id, _ = parse_name(state, name)
    if name_id != job.id:
        what = f"the name says id {name_id!r}" if name_id is not None else f"not a {state}/ job name"
        return Finding(MISNAMED, rel, f"{what} but the content says id {job.id!r}"), None
    return None, job


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return ""
    kind = file_kind(mode)
    return "symlink (not followed)" if kind == "symlink" else kind


def _most_advanced(recs: list[_Record]) -> _Record:
    # More history means further along (a retry was recorded); then the later state.
    return max(recs, key=lambda r: (r.job.error_count(), r.job.retries, _STATE_RANK[r.state], r.path.name))


def _rel(spool: Spool, path: str | Path) -> str:
    return os.path.relpath(path, spool.path)


# -- repairing ----------------------------------------------------------------------------


def _repair(spool: Spool, findings: list[Finding], now: datetime, tmp_max_age: float) -> list[Finding]:
    """Fix in an order where each step sees the previous one's result: tmp, then the
    files that are not jobs or not where their name says, then recovery, then duplicates."""
    done: dict[tuple[str, str], str] = {}
    # First one name for a job a power loss left half moved (Spool.drop_twins): its names
    # were found as hard links, but they are the spool's own, not foreign.
    twins = set(spool.drop_twins())
    for f in findings:
        if f.path in twins:
            done[f.kind, f.path] = "removed: the old name of a job a power loss left half moved"
        elif f.kind == FOREIGN and f.detail.startswith("a hard link") and _one_link(spool.path / f.path):
            done[f.kind, f.path] = "kept: its other name was the old name of a half-done move"
        elif f.kind == STALE_TMP:
            done[f.kind, f.path] = _repair_tmp(spool, f, now, tmp_max_age).action
        elif f.kind in (FOREIGN, UNPARSEABLE) and not f.path.startswith(TMP + "/"):
            done[f.kind, f.path] = _reject(spool, f, f"{f.path}: {f.detail}", now)
        elif f.kind == MISNAMED:
            done[f.kind, f.path] = _rename(spool, f, now)
    done.update(_recover(spool, now, tmp_max_age))
    # Duplicates are judged again now that names and active/ are settled.
    for d in _scan(spool, now, tmp_max_age, supervisor_running=True):
        if d.kind == DUPLICATE:
            done[DUPLICATE, d.path] = _reject(spool, d, f"{d.path}: duplicate: {d.detail}", now)
    out = [Finding(f.kind, f.path, f.detail, done.get((f.kind, f.path), "")) for f in findings]
    seen = {(f.kind, f.path) for f in findings}
    # Duplicates that only showed once the rest was fixed (a misnamed copy of a live id).
    out += [Finding(k, p, "found during the repair", a) for (k, p), a in done.items() if (k, p) not in seen and a]
    return out


def _one_link(path: Path) -> bool:
    try:
        return os.lstat(path).st_nlink == 1
    except OSError:
        return False


def _repair_tmp(spool: Spool, f: Finding, now: datetime, tmp_max_age: float) -> Finding:
    removed = {_rel(spool, p) for p in spool.sweep_tmp(tmp_max_age, now.timestamp())}
    return Finding(f.kind, f.path, f.detail, "removed" if f.path in removed else "")


def _reject(spool: Spool, f: Finding, reason: str, now: datetime) -> str:
    path = spool.path / f.path
    try:
        target = spool.reject(path, reason, now)
    except FileNotFoundError:
        return "gone meanwhile"
    except OSError as exc:
        log.error("cannot reject %s: %s", f.path, exc)
        return ""
    return f"moved to {_rel(spool, target)}"


def _rename(spool: Spool, f: Finding, now: datetime) -> str:
    path = spool.path / f.path
    state = path.parent.name
    try:
        job = spool.read(path)
    except (JobFormatError, OSError):
        return _reject(spool, f, f"{f.path}: unreadable", now)
    when = parse_name(state, path.name)[1]
    if state == DELAYED:
        when = when or job.eta or now
    elif state == FAILED:
        when = when or now
    name = job_name(state, job, when)
    try:
        spool.move(path, state, name)
    except FileExistsError:
        return _reject(spool, f, f"{f.path}: {f.detail}, and {state}/{name} is taken", now)
    except OSError as exc:
        log.error("cannot rename %s: %s", f.path, exc)
        return ""
    return f"renamed to {state}/{name}"


def _recover(spool: Spool, now: datetime, tmp_max_age: float) -> dict[tuple[str, str], str]:
    """The supervisor's own crash recovery (the caller holds the lock): each ``active/``
    job goes back to ``ready/``, or is dropped when its outcome was already recorded."""
    from .registry import Registry
    from .supervisor import Supervisor

    before = {de.name for de in _listing(spool.dir(ACTIVE))}
    if not before:
        return {}
    sup = Supervisor(spool, Registry(), concurrency=1, tmp_max_age=tmp_max_age, clock=lambda: now)
    try:
        sup.recover(now)
    finally:
        sup.waker.close()
    after = {de.name for de in _listing(spool.dir(ACTIVE))}
    out = {}
    for name in before:
        where = "left in active/ (cannot move it; see the log)" if name in after else _whereabouts(spool, name)
        out[ORPHANED, f"{ACTIVE}/{name}"] = where
    return out


def _whereabouts(spool: Spool, active_name: str) -> str:
    job_id = active_name[:-5]
    for e in spool.scan(READY):
        if e.job_id == job_id:
            return f"returned to {READY}/{e.name}"
    for e in spool.scan(FAILED):
        if e.job_id is None and job_id in e.name and e.name.endswith(BAD_SUFFIX):
            return f"unreadable: moved to {FAILED}/{e.name}"
    return "dropped: its outcome was already recorded"


__all__ = ["DUPLICATE", "FOREIGN", "MISNAMED", "ORPHANED", "STALE_TMP", "UNPARSEABLE", "Finding", "Report", "check"]
