"""The supervisor's books: one log line and one count per job event, and the two ways a file
is set aside, shared by every step.

Every step of the supervisor (taking jobs in, promoting, dispatching, recording outcomes)
may meet a file it cannot run: not a job at all (it is *rejected*: moved into ``failed/``
untouched, the reason beside it), or a job that must not run (unknown task, duplicate id,
expired: it is *failed unrun*: recorded in ``failed/`` with the error).  Both are writes to
``failed/`` under the I/O-failure policy's ``TO_FAILED`` step, so a ``failed/`` that cannot
be written holds back only these files, while valid jobs go on.  The steps share this object
rather than call back into the supervisor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from .clock import Clock
from .errors import JobGone, SpoolError
from .faults import Faults
from .job import Job, make_error
from .layout import printable
from .spool import Spool

log = logging.getLogger("spoolq.supervisor")

EventHook = Callable[[str, Job | None, str], None]

# The steps that touch the disk, as the I/O-failure policy (spoolq.faults) names them in logs.
INGEST, SETTLE, CLAIM, PROMOTE, TO_FAILED, FLUSH, PLACE, LOOP = (
    "taking jobs in from new/",
    "recording outcomes",
    "claiming jobs from ready/",
    "promoting due delayed/ jobs",
    "writing to failed/",
    "flushing directories",
    "checking the spool's directories",
    "the supervisor loop",
)


class Bookkeeper:
    """Counts, job event log lines, the event hook, and setting files aside.

    Parameters:
        spool: the spool.
        faults: the I/O-failure policy the writes to ``failed/`` obey.
        clock: for the policy's monotonic time.
        on_event: called with (event, job, detail) for received, started, succeeded,
            retry, failed and rejected (the progress bar of ``--burst``); a hook that raises
            is logged, never obeyed.
    """

    def __init__(self, spool: Spool, faults: Faults, clock: Clock, on_event: EventHook | None = None) -> None:
        self.spool = spool
        self.faults = faults
        self.clock = clock
        self.on_event = on_event
        self.counts = {"received": 0, "succeeded": 0, "retried": 0, "failed": 0, "rejected": 0}
        self.progress_at = clock.mono()  # when a job last moved (for --burst's give-up)

    def moved(self) -> None:
        """Note that a job moved: the supervisor is making progress."""
        self.progress_at = self.clock.mono()

    def stalled(self, limit_s: float) -> bool:
        """Whether I/O has kept failing and nothing has moved for ``limit_s`` seconds (then
        ``--burst`` gives up rather than wait for ever); the log line says how long."""
        if not self.faults:
            return False
        mono = self.clock.mono()
        since = max(self.progress_at, self.faults.failing_since() or mono)
        if mono - since < limit_s:
            return False
        log.error("no progress for %.0f s while I/O keeps failing", mono - since)
        return True

    def emit(self, event: str, job: Job | None, detail: str = "") -> None:
        """Tell the event hook, if any (counted events go through :meth:`count`)."""
        if self.on_event is not None:
            try:
                self.on_event(event, job, detail)
            except Exception:  # noqa: BLE001 - a display hook must not stop the queue
                log.exception("event hook failed")

    def count(self, event: str, job: Job | None, detail: str = "") -> None:
        """Count an event of the ``counts`` table and tell the hook."""
        key = {"retry": "retried"}.get(event, event)
        self.counts[key] += 1
        self.emit(event, job, detail)

    def flush(self) -> None:
        """Make the moves made since the last flush durable (:meth:`Spool.barrier`), under
        the I/O-failure policy's ``FLUSH`` step."""
        mono = self.clock.mono()
        if not self.faults.ready(FLUSH, mono):
            return
        try:
            self.spool.barrier()
        except SpoolError as exc:
            self.faults.failed(FLUSH, f"cannot flush spool directories: {exc}", mono)
        else:
            if self.faults:
                self.faults.ok(FLUSH, mono)

    # -- setting aside -------------------------------------------------------------------

    def reject(self, state: str, name: str, reason: str, now: datetime) -> bool:
        """Move a file that is not a valid job into ``failed/`` untouched, with ``reason``
        beside it; True if done.  While writes to ``failed/`` back off, or when this one
        fails, the file stays where it is, untouched, to be met again later."""
        mono = self.clock.mono()
        if not self.faults.ready(TO_FAILED, mono):
            return False
        try:
            self.spool.reject(state, name, reason, now)
        except JobGone:
            return True  # someone took it away meanwhile: nothing left to do
        except SpoolError as exc:
            self.faults.failed(TO_FAILED, f"cannot move a bad file aside ({exc}): {printable(reason)}", mono)
            return False
        if self.faults:
            self.faults.ok(TO_FAILED, mono)
        self.moved()
        log.error("rejected %s", printable(reason))
        self.count("rejected", None, reason)
        return True

    def fail_unrun(self, state: str, name: str, job: Job, exc_type: str, message: str, now: datetime) -> bool:
        """Record a job that must not run (unknown task, duplicate id, expired) in ``failed/``
        with the error, and remove ``state/name``; True if done (see :meth:`reject` for when
        it is not)."""
        mono = self.clock.mono()
        if not self.faults.ready(TO_FAILED, mono):
            return False
        failed = job.with_error(make_error(exc_type, message, "", attempt=job.retries, at=now))
        try:
            self.spool.fail(state, name, failed, now)
        except SpoolError as exc:
            self.faults.failed(
                TO_FAILED, f"{job.id} {job.task}: cannot record it as failed ({exc}); it stays in {state}/", mono
            )
            return False
        if self.faults:
            self.faults.ok(TO_FAILED, mono)
        self.moved()
        log.error("%s %s: failed: %s: %s", job.id, printable(job.task), exc_type, message)
        self.count("failed", failed, message)
        return True
