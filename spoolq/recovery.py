"""What a crash left behind, put right: run by the supervisor at start and by ``fsck --repair``.

The caller holds ``spoolq.lock``, so no other process moves files meanwhile:

- ``tmp/``: files of writers that died (older than ``tmp_max_age``) and finished jobs a
  child renamed there but had not unlinked yet are removed;
- a file left under two names of the live states (``new/``, ``delayed/``, ``ready/``,
  ``active/``): a move is one rename, but its two directories are flushed one after the
  other, and on btrfs a power cut between the two flushes keeps both names.  The later name
  is kept, as the move had been made (:func:`drop_twins`);
- a job in ``ready/`` or ``delayed/`` whose later record is also there (a power loss undid
  the move out of it but kept the outcome written after it): the earlier copy is removed
  (:func:`drop_superseded`), so one id never names two live jobs;
- ``active/``: every job there was running when its supervisor died.  One whose outcome was
  already recorded (the same job, further along, in ``ready/``, ``delayed/``, ``failed/`` or
  ``done/``: the crash fell between writing the record and removing this copy) is dropped;
  the others go back to ``ready/`` to run again (at-least-once delivery); one that cannot be
  read is moved aside into ``failed/`` with the reason.

A crash between a producer's ``link`` into ``new/`` and its ``unlink`` of the ``tmp/`` name
(producers of older versions, and other languages' Maildir writers) leaves one file with two
names; :func:`tmp_twin` finds the leftover name.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from .errors import JobFormatError, JobGone, SpoolError
from .job import Job
from .layout import ACTIVE, DELAYED, DONE, FAILED, NEW, READY, TMP, is_discarded
from .spool import Spool


@dataclass
class Recovery:
    """What :func:`recover` did, for the log and for ``fsck``'s report."""

    swept: list[str] = field(default_factory=list)  # tmp/ names removed
    untwinned: list[str] = field(default_factory=list)  # "state/name" of second names removed
    superseded: list[tuple[str, str]] = field(default_factory=list)  # ("state/name", its failed/ name)
    requeued: list[tuple[Job, str]] = field(default_factory=list)  # (job, its ready/ name)
    dropped: list[Job] = field(default_factory=list)  # active/ copies whose outcome was recorded
    rejected: list[tuple[str, str, str]] = field(default_factory=list)  # (active/ name, failed/ name, reason)
    stuck: list[tuple[str, str]] = field(default_factory=list)  # (active/ name, why it could not move)

    def lines(self) -> Iterator[tuple[int, str]]:
        """What was done, one ``(logging level, line)`` per file, for the supervisor's log."""
        for name in self.swept:
            yield logging.INFO, f"removed stale temporary file {name}"
        for name in self.untwinned:
            yield logging.WARNING, f"removed {name}: the old name of a job that a power loss left half moved"
        for name, bad in self.superseded:
            yield logging.WARNING, f"moved {name} to failed/{bad}: an old copy of a job whose later record was kept"
        for job in self.dropped:
            yield logging.INFO, f"{job.id} {job.task}: outcome already recorded before the crash; dropped active copy"
        for job, _ in self.requeued:
            yield logging.INFO, f"{job.id} {job.task}: back to ready/ (recovered after a crash)"
        for name, bad, reason in self.rejected:
            yield logging.ERROR, f"rejected active/{name} (now failed/{bad}): {reason}"
        for name, why in self.stuck:
            yield logging.ERROR, f"cannot recover active/{name} ({why}); it stays there until the next start"


def recover(spool: Spool, now: datetime, *, tmp_max_age_s: float) -> Recovery:
    """Undo what a crash left half done (see the module's docstring).

    Parameters:
        spool: the spool; its caller holds the lock.
        now: the current time, for the names of rejected files and the age of ``tmp/`` files.
        tmp_max_age_s: seconds after which a writer's file in ``tmp/`` is stale.
    Returns:
        What was done.
    Raises:
        SpoolError: a directory cannot be listed (a file that cannot be moved is reported
            in ``stuck`` instead).
    """
    out = Recovery(swept=sweep_tmp(spool, tmp_max_age_s, now.timestamp()), untwinned=drop_twins(spool))
    out.superseded = drop_superseded(spool, now)
    active = list(spool.scan(ACTIVE))
    if not active:
        return out
    finished = _records_of(spool, {e.job_id for e in active if e.job_id})
    for e in active:
        try:
            job = spool.read(ACTIVE, e.name)
        except JobGone:
            continue
        except (JobFormatError, SpoolError) as exc:
            reason = f"unreadable file in active/ after a crash: {exc}"
            try:
                out.rejected.append((e.name, spool.reject(ACTIVE, e.name, reason, now), reason))
            except SpoolError as exc2:
                out.stuck.append((e.name, str(exc2)))
            continue
        try:
            if outcome_recorded(job, finished.get(job.id, [])):
                spool.remove(ACTIVE, e.name)
                out.dropped.append(job)
            else:
                out.requeued.append((job, spool.requeue(job)))
        except JobGone:
            continue
        except SpoolError as exc:
            out.stuck.append((e.name, str(exc)))
    return out


_MOVE_ORDER = (NEW, DELAYED, READY, ACTIVE)  # where moves lead: a later name wins over an earlier one


def drop_twins(spool: Spool) -> list[str]:
    """Remove the earlier name of each file a crash left under two names of the live states;
    the names removed, as ``state/name``.  Only a file whose every name is in ``new/``,
    ``delayed/``, ``ready/`` or ``active/`` is touched (a link from elsewhere may belong
    outside the spool, and is refused as before)."""
    # The listings carry each name's inode number: only names that share one are looked at,
    # so a start with a million jobs queued costs no lstat per job.
    by_inode: dict[int, list[tuple[int, str, str]]] = {}
    for rank, state in enumerate(_MOVE_ORDER):
        for e in spool.scan(state):
            by_inode.setdefault(e.inode, []).append((rank, state, e.name))
    names: dict[tuple[int, int], list[tuple[int, str, str]]] = {}
    links: dict[tuple[int, int], int] = {}
    for candidates in (c for c in by_inode.values() if len(c) > 1):
        for rank, state, name in candidates:
            try:
                st = spool.lstat(state, name)
            except JobGone:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                names.setdefault(key, []).append((rank, state, name))
                links[key] = st.st_nlink
    removed = []
    for key, found in names.items():
        if len(found) != links[key]:
            continue  # a name outside the live states: left to be refused
        for _, state, name in sorted(found)[:-1]:
            try:
                spool.remove(state, name)
            except SpoolError:
                continue
            removed.append(f"{state}/{name}")
    return removed


def drop_superseded(spool: Spool, now: datetime) -> list[tuple[str, str]]:
    """Set aside a ``ready/`` or ``delayed/`` copy of a job when a later record of the same
    job (the same enqueue, further along) is in ``delayed/``, ``failed/`` or ``done/``: moved
    into ``failed/`` untouched with the reason beside it, as ``fsck --repair`` does with a
    duplicate, so that one id never names two live jobs and nothing is deleted.  Returns
    ``("state/name", its name in failed/)`` for each.  Only files whose ids meet are read."""
    by_id: dict[str, list[tuple[str, str]]] = {}
    for state in (READY, DELAYED, FAILED, DONE):
        for e in spool.scan(state):
            if e.job_id is not None:
                by_id.setdefault(e.job_id, []).append((state, e.name))
    out = []
    for places in by_id.values():
        if len(places) < 2 or not any(state in (READY, DELAYED) for state, _ in places):
            continue
        jobs = []
        for state, name in places:
            try:
                jobs.append((state, name, spool.read(state, name)))
            except (JobFormatError, SpoolError):
                continue
        for state, name, job in jobs:
            later = [(s, o) for s, n, o in jobs if (s, n) != (state, name)]
            if state in (READY, DELAYED) and outcome_recorded(job, [o for _, o in later]):
                where = next(s for s, o in later if outcome_recorded(job, [o]))
                reason = (
                    f"{state}/{name}: an older copy of job {job.id!r}, whose later record is in {where}/ "
                    "(a power loss kept both)"
                )
                try:
                    out.append((f"{state}/{name}", spool.reject(state, name, reason, now)))
                except SpoolError:
                    continue
    return out


def outcome_recorded(job: Job, others: list[Job]) -> bool:
    """Whether one of ``others`` is ``job`` (the same enqueue) further along: more errors
    recorded, or finished with a result."""
    return any(
        o.enqueued_at == job.enqueued_at and (o.error_count() > job.error_count() or o.finished_at is not None)
        for o in others
    )


def _records_of(spool: Spool, ids: set[str]) -> dict[str, list[Job]]:
    found: dict[str, list[Job]] = {}
    for state in (READY, DELAYED, FAILED, DONE):
        for e in spool.scan(state):
            if e.job_id in ids:
                try:
                    found.setdefault(e.job_id, []).append(spool.read(state, e.name))
                except (JobFormatError, SpoolError):
                    continue
    return found


def sweep_tmp(spool: Spool, older_than_s: float, now_s: float) -> list[str]:
    """Remove the files in ``tmp/`` older than ``older_than_s`` seconds (writers that died)
    and the finished jobs waiting there for their unlink, whatever their age (only pool
    children make those, and only under the one supervisor); their names.

    A live writer renames its file within milliseconds, so an hour-old one is stale.
    """
    removed = []
    for e in spool.scan(TMP):
        try:
            st = spool.lstat(TMP, e.name)
        except JobGone:
            continue
        if stat.S_ISDIR(st.st_mode):
            continue
        if now_s - st.st_mtime > older_than_s or is_discarded(e.name):
            try:
                spool.remove(TMP, e.name)
            except SpoolError:
                continue
            removed.append(e.name)
    return removed


def tmp_twin(spool: Spool, st: os.stat_result) -> str | None:
    """The ``tmp/`` name of a file (given its ``lstat``) that also sits elsewhere in the
    spool: a producer killed between its link into ``new/`` and its unlink of the temporary
    name.  The job was delivered whole; only its second name is left over."""
    for e in spool.scan(TMP):
        try:
            s = spool.lstat(TMP, e.name)
        except JobGone:
            continue
        if s.st_ino == st.st_ino and s.st_dev == st.st_dev:
            return e.name
    return None
