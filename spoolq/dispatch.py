"""Handing jobs to the pool: delayed jobs whose time has come, then ready jobs in order.

A delayed job is promoted (``delayed/`` → ``ready/``) when its due time comes; ready jobs go
to the children with room, in dispatch order (the names' sort order: priority, then due
time), one per child per round so idle children are served first.  A child claims its job
itself (``ready/`` → ``active/``); what is handed over stays in ``ready/`` until then, so a
child that dies leaves its unclaimed jobs ready.  A ``ready/`` file that is gone, not a job,
or expired is dealt with here and never reaches a child.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from .bookkeeping import CLAIM, PROMOTE, Bookkeeper
from .clock import Clock
from .errors import JobFormatError, JobGone, SpoolError
from .faults import Faults
from .index import Index
from .job import Job
from .layout import DELAYED, READY, job_name, parse_name
from .pool import Pool, Slot
from .spool import Spool
from .task import Task

log = logging.getLogger("spoolq.supervisor")


class Dispatcher:
    """Promotes due delayed jobs and hands ready ones to the pool.

    Parameters:
        spool, index, books, faults, clock, pool: the supervisor's.
        task_of: the task of a name, if this worker has it (its limits and result policy).
        time_limit, soft_time_limit: the worker's limits, for tasks that set none.
    """

    def __init__(
        self,
        spool: Spool,
        index: Index,
        books: Bookkeeper,
        faults: Faults,
        clock: Clock,
        pool: Pool,
        task_of: Callable[[str], Task | None],
        *,
        time_limit: float | None,
        soft_time_limit: float | None,
    ) -> None:
        self.spool = spool
        self.index = index
        self.books = books
        self.faults = faults
        self.clock = clock
        self.pool = pool
        self.task_of = task_of
        self.time_limit = time_limit
        self.soft_time_limit = soft_time_limit

    def promote_due(self, now: datetime) -> None:
        """Move every delayed job whose time has come into ``ready/``."""
        mono = self.clock.mono()
        if not self.faults.ready(PROMOTE, mono):
            return
        moved = False
        while (item := self.index.pop_due(now)) is not None:
            due, name = item
            job_id = parse_name(DELAYED, name)[0] or ""
            try:
                job = self.spool.read(DELAYED, name)
                target = job_name(READY, job, due)
                self.spool.move(DELAYED, name, READY, target)
            except JobGone:
                self.index.gone(job_id)
                continue  # an operator removed or moved it
            except JobFormatError as exc:
                self.index.gone(job_id)
                self.books.reject(DELAYED, name, f"delayed/{name}: {exc}", now)
                continue
            except SpoolError as exc:
                self.index.unpop_due(due, name)
                self.faults.failed(PROMOTE, f"cannot move delayed/{name} to ready/: {exc}", mono)
                return
            self.index.push_ready(target, job)
            moved = True
        if moved:
            self.books.moved()
            if self.faults:
                self.faults.ok(PROMOTE, mono)

    def dispatch(self, now: datetime) -> None:
        """Hand ready jobs, in order, to children with room (one per child per round, so
        idle children are served first); each child claims its job itself."""
        mono = self.clock.mono()
        if not self.faults.ready(CLAIM, mono):
            return
        if self.index.wants_refill():
            try:
                self.index.refill(self.pool.handed())
            except SpoolError as exc:
                self.faults.failed(CLAIM, f"cannot list ready/: {exc}", mono)
                return
        while len(self.index):
            slots = self.pool.free()
            if not slots:
                return
            for slot in slots:
                taken = None
                while taken is None and len(self.index) and self.faults.ready(CLAIM, mono):
                    taken = self._take(now)
                if taken is None:
                    return
                self._submit(slot, *taken)

    def _take(self, now: datetime) -> tuple[Job, str] | None:
        """The next job to hand out and its ``ready/`` name; None if the first name has
        nothing to run: gone, not a job (rejected), or expired (failed)."""
        popped = self.index.pop_ready()
        if popped is None:
            return None
        name, job = popped
        if job is None:  # indexed from a listing (a refill, a restart): read and check it now
            job_id = parse_name(READY, name)[0]
            if job_id is None:
                return None
            try:
                job = self.spool.read(READY, name)
            except JobGone:
                self.index.gone(job_id)
                return None
            except JobFormatError as exc:
                self.index.gone(job_id)
                self.books.reject(READY, name, f"ready/{name}: {exc}", now)
                return None
            except SpoolError as exc:  # the disk failed the read: the job waits, untouched
                self.index.push_ready(name)
                self.faults.failed(CLAIM, f"cannot read ready/{name}: {exc}", self.clock.mono())
                return None
            if job.id != job_id:
                self.index.gone(job_id)
                self.books.reject(READY, name, f"ready/{name}: its content says id {job.id!r}", now)
                return None
        if job.is_expired(now):
            self.index.gone(job.id)
            self.books.fail_unrun(READY, name, job, "Expired", f"expired at {job.expires}", now)
            return None
        return job, name

    def _submit(self, slot: Slot, job: Job, name: str) -> None:
        """Hand a job to a child, which claims it from ``ready/<name>``."""
        task = self.task_of(job.task)
        soft = (task.soft_time_limit if task else None) or self.soft_time_limit
        hard = job.time_limit or (task.time_limit if task else None) or self.time_limit
        # A success that keeps no result is the child's to remove (see runner.py).
        ttl = job.result_ttl if job.result_ttl is not None else (task.result_ttl if task else None)
        self.pool.submit(slot, job, name, soft_limit=soft, hard_limit=hard, discard=ttl is None)
        self.books.emit("started", job)
        if log.isEnabledFor(logging.INFO):
            log.info("%s %s: started (attempt %d)", job.id, job.task, job.retries + 1)
