"""Sending failed jobs back to run (``spoolq retry``), safe against a kill half-way.

A replay is two steps: publish the reset job into ``new/``, then remove its copy in
``failed/``.  A kill between them leaves both.  So the published job names its failed copy
in the field ``replay_of`` (unknown fields are kept through every move), and whoever comes
next finishes the second step instead of repeating the first:

- the supervisor, taking the job in from ``new/``, removes ``failed/<replay_of>``
  (:func:`drop_replayed_copy`) before the job can run, so once it ran no stale copy is left
  to replay;
- a second ``spoolq retry`` that finds the failed copy while a live job (new, ready, active,
  delayed) of that id names it removes the copy instead of replaying it (:func:`replay`).

A live job of the same id that does *not* name the copy is another run (a producer reused
the id, or the job was sent back by hand): the copy is neither replayed (the id would run
twice) nor removed (its history is not in the live job); the caller says so.
"""

from __future__ import annotations

import dataclasses
import logging

from .errors import DuplicateJob, JobFormatError, JobGone, SpoolError
from .job import REPLAY_OF, Job
from .layout import ACTIVE, DELAYED, FAILED, NEW, READY, parse_name, plain_name, printable
from .spool import Entry, Spool

log = logging.getLogger("spoolq.replay")

# What replay() did.
SENT = "sent"  # published into new/, failed copy removed
CLEANED = "cleaned"  # a live job already replays this copy: the copy was removed
GONE = "gone"  # the copy vanished meanwhile (a supervisor took its replay in): nothing to do
CONFLICT = "conflict"  # a live job of this id is another run: nothing done

# The live states in the order a job moves through them, so that a job moving forward while
# we look is found in the next state looked at.
_LIVE_IN_ORDER = (NEW, READY, ACTIVE, DELAYED)


@dataclasses.dataclass(frozen=True)
class Replayed:
    """The outcome of :func:`replay` for one failed copy."""

    outcome: str  # SENT, CLEANED, GONE or CONFLICT
    job_id: str
    live_state: str | None = None  # where the live job of this id is (CLEANED, CONFLICT)


def replay(spool: Spool, entry: Entry, live: dict[str, str] | None = None) -> Replayed:
    """Send the failed job of ``entry`` back to ``new/``, or finish an earlier replay of it.

    The live states are looked at *before* the failed copy is read: the supervisor removes
    the copy before it moves a replay out of ``new/``, so a copy that still exists after a
    look that found nothing cannot have a replay past ``new/`` that the look missed.

    Parameters:
        live: the ids of :func:`live_ids`, listed before this call, for many replays at the
            cost of one listing; updated with the job sent.  None: look for this id alone.
    Raises:
        JobFormatError: the failed copy is not a valid job.
        SpoolError: the spool cannot be written.
    """
    assert entry.job_id is not None and entry.state == FAILED
    job_id = entry.job_id
    found = _live_copy(spool, job_id) if live is None or job_id in live else None
    if found is not None:
        state, job = found
        if job is not None and job.extra.get(REPLAY_OF) == entry.name:
            _remove(spool, entry)
            return Replayed(CLEANED, job_id, state)
        return Replayed(CONFLICT if spool.has(FAILED, entry.name) else GONE, job_id, state)
    try:
        failed = spool.read(FAILED, entry.name)
    except JobGone:
        return Replayed(GONE, job_id)
    reset = failed.reset_for_replay()
    try:
        spool.publish(dataclasses.replace(reset, extra={**reset.extra, REPLAY_OF: entry.name}))
    except DuplicateJob as exc:  # a producer (or another retry) was quicker
        return Replayed(CONFLICT, job_id, exc.where)
    if live is not None:
        live[job_id] = NEW
    _remove(spool, entry)
    return Replayed(SENT, job_id)


def live_ids(spool: Spool) -> dict[str, str]:
    """Every id in a live state, with its state: one listing per state, in the order jobs
    move, for :func:`replay` of many failed jobs."""
    ids: dict[str, str] = {}
    for state in _LIVE_IN_ORDER:
        for name in spool.names(state):
            job_id, _ = parse_name(state, name)
            if job_id is not None:
                ids.setdefault(job_id, state)
    return ids


def _live_copy(spool: Spool, job_id: str) -> tuple[str, Job | None] | None:
    """The state and contents of a live job with this id, or None.  ``Job`` is None when the
    file cannot be read as a job (it is still a live file of that id)."""
    for state in _LIVE_IN_ORDER:
        for entry in _matches(spool, state, job_id):
            try:
                return state, spool.read(state, entry.name)
            except JobGone:
                continue  # moved on while we looked: a later state of the loop finds it
            except JobFormatError:
                return state, None
    return None


def _matches(spool: Spool, state: str, job_id: str) -> list[Entry]:
    if state in (NEW, ACTIVE):
        name = plain_name(job_id)
        return [Entry(state, name, job_id, None, spool.path_of(state, name))] if spool.has(state, name) else []
    return [e for e in spool.scan(state) if e.job_id == job_id]


def _remove(spool: Spool, entry: Entry) -> None:
    try:
        spool.remove(entry.state, entry.name)
    except JobGone:
        pass  # the supervisor removed it as it took the replay in
    spool.barrier()


def drop_replayed_copy(spool: Spool, job: Job) -> bool:
    """Remove the failed copy a job taken in from ``new/`` replays, if it is still there.

    ``replay_of`` comes from a file anyone can write, so it is used only if it is exactly
    the name of a failed copy of this same job id (no path, no other job's file).

    Returns:
        True if a copy was removed.
    """
    name = job.extra.get(REPLAY_OF)
    if not isinstance(name, str) or "/" in name or "\0" in name:
        return False
    job_id, when = parse_name(FAILED, name)
    if job_id != job.id or when is None:
        return False
    try:
        spool.remove(FAILED, name)
    except JobGone:
        return False
    except SpoolError as exc:  # not a file (a directory put there by hand): leave it, run the job
        log.warning("%s: cannot remove its replayed copy failed/%s: %s", job.id, printable(name), exc)
        return False
    return True
