"""Result handles: where an enqueued job is, and its kept result once it has one.

A handle is a job id and the spool to look in; it never writes.  The job's state is the
directory its file is in (SPEC §1), so a handle answers by listing, never by asking the
supervisor.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

from .errors import JobFormatError, JobGone, JobNotFound, ResultTimeout, TaskFailed
from .layout import ACTIVE, DELAYED, DONE, FAILED, NEW, READY

if TYPE_CHECKING:  # only for types: task.py (and so retry.py) imports this module
    from .spool import Entry, Spool

# The states in the order jobs move through them (see AsyncResult._locate).
_MOVE_ORDER = (NEW, READY, ACTIVE, DELAYED, DONE, FAILED)
_STATE_NAMES = {
    NEW: "PENDING",
    READY: "PENDING",
    DELAYED: "RETRY",
    ACTIVE: "STARTED",
    DONE: "SUCCESS",
    FAILED: "FAILURE",
}


class HasSpool(Protocol):
    """What a handle needs of its App: the spool."""

    @property
    def spool(self) -> Spool: ...


class AsyncResult:
    """A handle on an enqueued job: its id, its state, and its result when kept.

    Parameters:
        job_id: the job's id (already checked).
        app: the App it was sent through (or any object with its ``spool``).
    """

    def __init__(self, job_id: str, app: HasSpool) -> None:
        self.id = job_id
        self.app = app

    def __repr__(self) -> str:
        return f"<AsyncResult {self.id}>"

    @property
    def state(self) -> str:
        """``PENDING`` (new/ready), ``RETRY`` (delayed), ``STARTED`` (active), ``SUCCESS``
        (result kept in done/), ``FAILURE`` (failed/), or ``UNKNOWN`` (finished without
        a kept result, or never existed)."""
        try:
            entry = self.app.spool.find(self.id, (ACTIVE, NEW, READY, DELAYED, DONE, FAILED))
        except JobNotFound:
            return "UNKNOWN"
        return _STATE_NAMES[entry.state]

    def ready(self) -> bool:
        """Whether the job has finished with a kept result or failed."""
        return self.state in ("SUCCESS", "FAILURE")

    def get(self, timeout: float | None = None, interval: float = 0.02) -> Any:
        """Wait for the kept result and return it.

        Parameters:
            timeout: seconds to wait at most (None: forever).
            interval: seconds between looks.
        Raises:
            ResultTimeout: no result within ``timeout``.
            TaskFailed: the job ended in ``failed/``; its last error is attached.
            JobNotFound: the job is in no state: it finished without keeping a result (no
                ``result_ttl``), its result expired, or it never existed.  Said at once,
                not after ``timeout``.
        """
        spool = self.app.spool
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            entry = self._locate()
            if entry is None:
                raise JobNotFound(self.id)
            if entry.state == DONE:
                try:
                    return spool.read(DONE, entry.name).result
                except JobGone:
                    continue  # expired just now: the next look says so
            if entry.state == FAILED:
                try:
                    job = spool.read(FAILED, entry.name)
                except (JobGone, JobFormatError):
                    raise TaskFailed(self.id, None) from None
                raise TaskFailed(self.id, job.errors[-1] if job.errors else None)
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeout(f"no result for job {self.id!r} within {timeout:g} s")
            time.sleep(interval)

    def _locate(self) -> Entry | None:
        """Where the job is, or None once two looks in a row found it nowhere.

        One look checks the states one after another, so a job that moves between two of
        them can be missed.  The order is the one jobs move through (new, ready, active,
        delayed, then done or failed), so only a move against it (delayed or active back to
        ready, failed back to new) can hide a job from one look; a second look would have
        to meet another such move at the same moment to miss it too.
        """
        for _ in range(2):
            try:
                return self.app.spool.find(self.id, _MOVE_ORDER)
            except JobNotFound:
                continue
        return None
