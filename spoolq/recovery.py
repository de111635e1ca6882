"""What a crash left behind, put right: run by the supervisor at start and by ``fsck --repair``.

The caller holds ``spoolq.lock``, so no other process moves files meanwhile:

- ``tmp/``: files of writers that died (older than ``tmp_max_age``) and finished jobs a
  child renamed there but had not unlinked yet are removed;
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

import os
import stat
from dataclasses import dataclass, field
from datetime import datetime

from .errors import JobFormatError, JobGone, SpoolError
from .job import Job
from .layout import ACTIVE, DELAYED, DONE, FAILED, READY, TMP, is_discarded
from .spool import Spool


@dataclass
class Recovery:
    """What :func:`recover` did, for the log and for ``fsck``'s report."""

    swept: list[str] = field(default_factory=list)  # tmp/ names removed
    requeued: list[tuple[Job, str]] = field(default_factory=list)  # (job, its ready/ name)
    dropped: list[Job] = field(default_factory=list)  # active/ copies whose outcome was recorded
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (active/ name, reason)
    stuck: list[tuple[str, str]] = field(default_factory=list)  # (active/ name, why it could not move)


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
    out = Recovery(swept=sweep_tmp(spool, tmp_max_age_s, now.timestamp()))
    active = [e for e in spool.scan(ACTIVE)]
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
                spool.reject(ACTIVE, e.name, reason, now)
                out.rejected.append((e.name, reason))
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
