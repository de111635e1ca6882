"""``spoolq fsck``: find (and with ``repair``, fix) what a crash, a bug or a hand left behind.

What is checked, and what a repair does:

- ``stale-tmp``: a file in ``tmp/`` older than ``tmp_max_age``, left by a writer that died.
  Repair removes it; this is the one repair that is safe while a supervisor runs (a live
  writer renames its file within milliseconds).
- ``orphaned-active``: a job in ``active/`` while no supervisor holds the lock.  Repair runs
  the crash recovery a supervisor runs when it starts (:func:`spoolq.recovery.recover`): back
  to ``ready/``, or dropped when its outcome was already recorded elsewhere.  Recovery also
  puts right what else a crash left (a second name of one file is removed, a copy superseded
  by a later record is moved aside); the report says so beside the finding it answers.
- ``foreign``: not a job file: a name not ending in ``.json``, a directory, a symlink, a
  FIFO, a socket, a hard link.  Repair rejects it into ``failed/`` (renamed, never followed,
  opened or read), except a job left under two names of the live states by a move that a
  power loss half undid: repair keeps the later name (:func:`spoolq.recovery.drop_twins`).
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
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime

from .clock import utcnow
from .errors import JobFormatError, JobGone, NameTaken, SpoolError, SpoolLocked
from .job import Job
from .layout import (
    ACTIVE,
    DELAYED,
    FAILED,
    LIVE_STATES,
    NEW,
    READY,
    STATES,
    TMP,
    file_kind,
    is_bad,
    job_name,
    parse_name,
    plain_name,
    printable,
)
from .recovery import Recovery, drop_twins, recover, sweep_tmp, tmp_twin
from .spool import Entry, Spool

log = logging.getLogger("spoolq.fsck")

STALE_TMP, ORPHANED, FOREIGN, UNPARSEABLE, MISNAMED, DUPLICATE = (
    "stale-tmp",
    "orphaned-active",
    "foreign",
    "unparseable",
    "misnamed",
    "duplicate",
)
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
    name: str
    job: Job

    @property
    def rel(self) -> str:
        return _rel(self.state, self.name)


def check(spool: Spool, *, repair: bool = False, now: datetime | None = None, tmp_max_age: float = 3600.0) -> Report:
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
        report.findings = [
            _repair_tmp(spool, f, now, tmp_max_age) if f.kind == STALE_TMP else f for f in report.findings
        ]
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
        for e in spool.entries(state):
            finding, job = _examine(spool, e, now)
            if finding is not None:
                findings.append(finding)
                continue
            if job is not None and state in LIVE_STATES:
                records.setdefault(job.id, []).append(_Record(state, e.name, job))
            if job is not None and state == ACTIVE and not supervisor_running:
                findings.append(Finding(ORPHANED, _rel(state, e.name), "in active/ but no supervisor holds the lock"))
    for job_id, recs in sorted(records.items()):
        if len(recs) > 1:
            keep = _most_advanced(recs)
            for r in recs:
                if r is not keep:
                    detail = f"id {job_id!r} is also live in {keep.rel}, which is kept"
                    findings.append(Finding(DUPLICATE, r.rel, detail))
    return findings


def _stale_tmp(spool: Spool, now: datetime, tmp_max_age: float) -> Iterator[Finding]:
    now_s = now.timestamp()
    for e in spool.entries(TMP):
        try:
            st = spool.lstat(TMP, e.name)
        except JobGone:
            continue
        if stat.S_ISDIR(st.st_mode):
            yield Finding(FOREIGN, _rel(TMP, e.name), "a directory in tmp/")
        elif now_s - st.st_mtime > tmp_max_age:
            age = now_s - st.st_mtime
            yield Finding(STALE_TMP, _rel(TMP, e.name), f"left by a writer that died ({age:.0f} s old)")


def _examine(spool: Spool, e: Entry, now: datetime) -> tuple[Finding | None, Job | None]:
    """A finding about one entry of a state directory, or the job it holds."""
    state, name, rel = e.state, e.name, _rel(e.state, e.name)
    try:
        st = spool.lstat(state, name)
    except JobGone:  # moved meanwhile
        return None, None
    if state == FAILED and is_bad(name):
        return None, None  # already rejected, kept as it was found
    kind = _kind(st.st_mode)
    if kind:
        return Finding(FOREIGN, rel, f"a {kind}, not a job file"), None
    if not name.endswith(".json") or name.startswith("."):
        return Finding(FOREIGN, rel, "not a job file (a job's name ends in .json)"), None
    if st.st_nlink > 1:
        if state == NEW and (now.timestamp() - st.st_ctime < LINK_GRACE_S or tmp_twin(spool, st) is not None):
            return None, None  # a producer between its link() and its unlink(), or killed there
        return Finding(FOREIGN, rel, f"a hard link ({st.st_nlink} links): may belong outside the spool"), None
    try:
        job = spool.read(state, name)
    except JobGone:
        return None, None
    except (JobFormatError, SpoolError) as exc:
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
    return max(recs, key=lambda r: (r.job.error_count(), r.job.retries, _STATE_RANK[r.state], r.name))


def _rel(state: str, name: str) -> str:
    """A file's place as findings name it: relative to the spool."""
    return f"{state}/{name}"


def _split(rel: str) -> tuple[str, str]:
    """The ``(state, name)`` of a finding's path (names never hold a ``/``)."""
    state, _, name = rel.partition("/")
    return state, name


# -- repairing ----------------------------------------------------------------------------


def _repair(spool: Spool, findings: list[Finding], now: datetime, tmp_max_age: float) -> list[Finding]:
    """Fix in an order where each step sees the previous one's result: tmp, then the
    files that are not jobs or not where their name says, then recovery, then duplicates."""
    done: dict[tuple[str, str], str] = {}
    # First one name for a job a power loss left half moved (recovery.drop_twins): its names
    # were found as hard links, but they are the spool's own, not foreign.
    twins = set(drop_twins(spool))
    for f in findings:
        if f.path in twins:
            done[f.kind, f.path] = "removed: the old name of a job a power loss left half moved"
        elif f.kind == FOREIGN and f.detail.startswith("a hard link") and _one_link(spool, f.path):
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


def _one_link(spool: Spool, rel: str) -> bool:
    try:
        return spool.lstat(*_split(rel)).st_nlink == 1
    except SpoolError:
        return False


def _repair_tmp(spool: Spool, f: Finding, now: datetime, tmp_max_age: float) -> Finding:
    removed = {_rel(TMP, name) for name in sweep_tmp(spool, tmp_max_age, now.timestamp())}
    return Finding(f.kind, f.path, f.detail, "removed" if f.path in removed else "")


def _reject(spool: Spool, f: Finding, reason: str, now: datetime) -> str:
    state, name = _split(f.path)
    try:
        bad = spool.reject(state, name, reason, now)
    except JobGone:
        return "gone meanwhile"
    except SpoolError as exc:
        log.error("cannot reject %s: %s", printable(f.path), exc)
        return ""
    return f"moved to {_rel(FAILED, bad)}"


def _rename(spool: Spool, f: Finding, now: datetime) -> str:
    state, name = _split(f.path)
    try:
        job = spool.read(state, name)
    except (JobFormatError, SpoolError):
        return _reject(spool, f, f"{f.path}: unreadable", now)
    when = parse_name(state, name)[1]
    if state == DELAYED:
        when = when or job.eta or now
    elif state == FAILED:
        when = when or now
    to_name = job_name(state, job, when)
    try:
        spool.move(state, name, state, to_name)
    except NameTaken:
        return _reject(spool, f, f"{f.path}: {f.detail}, and {state}/{to_name} is taken", now)
    except SpoolError as exc:
        log.error("cannot rename %s: %s", printable(f.path), exc)
        return ""
    return f"renamed to {state}/{to_name}"


def _recover(spool: Spool, now: datetime, tmp_max_age: float) -> dict[tuple[str, str], str]:
    """The crash recovery a supervisor runs when it starts (the caller holds the lock), when
    ``active/`` holds something: each job there goes back to ``ready/``, or is dropped when
    its outcome was already recorded, or is moved aside when it cannot be read.  What it
    does besides (see :func:`spoolq.recovery.recover`) is reported too."""
    if not spool.names(ACTIVE, 1):
        return {}
    return _what_recovery_did(recover(spool, now, tmp_max_age_s=tmp_max_age))


def _what_recovery_did(done: Recovery) -> dict[tuple[str, str], str]:
    """What became of each file recovery handled, in words, by the finding it answers."""
    out = {}
    for job, ready in done.requeued:
        out[ORPHANED, _rel(ACTIVE, plain_name(job.id))] = f"returned to {READY}/{ready}"
    for job in done.dropped:
        out[ORPHANED, _rel(ACTIVE, plain_name(job.id))] = "dropped: its outcome was already recorded"
    for name, bad, _ in done.rejected:
        out[ORPHANED, _rel(ACTIVE, name)] = f"unreadable: moved to {_rel(FAILED, bad)}"
    for name, why in done.stuck:
        out[ORPHANED, _rel(ACTIVE, name)] = f"left in active/ (cannot move it: {why})"
    for path in done.untwinned:
        out[FOREIGN, path] = "removed: a second name of a file moved by a crash (the later name is kept)"
    for path, bad in done.superseded:
        out[DUPLICATE, path] = f"moved to {_rel(FAILED, bad)}: a later record of the same job is kept"
    return out


__all__ = ["DUPLICATE", "FOREIGN", "MISNAMED", "ORPHANED", "STALE_TMP", "UNPARSEABLE", "Finding", "Report", "check"]
