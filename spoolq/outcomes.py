"""Recording what became of a job: the answers of the pool, turned into files.

Each answer is settled by :func:`spoolq.retry.decide` (a pure decision) and written the safe
way: the new record (``delayed/``, ``ready/``, ``failed/``, ``done/``) is written and flushed
before the ``active/`` copy is removed (STYLE habit 4), so a crash at any point leaves the job
in at least one state.  An answer that cannot be recorded now (a full disk) is kept and tried
again under the I/O-failure policy's ``SETTLE`` step; the job waits in ``active/`` meanwhile.
A job the pool hands back unfinished (its child died before claiming it, or the supervisor is
stopping) goes back to ``ready/`` without an attempt charged.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime

from .bookkeeping import CLAIM, SETTLE, Bookkeeper
from .clock import Clock
from .errors import JobFormatError, JobGone, SpoolError
from .faults import Faults
from .index import Index
from .job import Job, make_error
from .layout import ACTIVE, DELAYED, DONE, READY, job_name, plain_name
from .protocol import Answer, Kind
from .registry import Registry
from .retry import Action, Decision, decide
from .spool import Spool
from .task import Task

log = logging.getLogger("spoolq.supervisor")

Ended = tuple[Job, Answer, str]  # (the job as dispatched, what became of it, its ready/ name)


class Outcomes:
    """Settles the pool's answers.

    Parameters:
        spool, registry, index, books, faults, clock: the supervisor's.
        rnd: the random source for retry jitter.
    """

    def __init__(
        self,
        spool: Spool,
        registry: Registry,
        index: Index,
        books: Bookkeeper,
        faults: Faults,
        clock: Clock,
        rnd: random.Random,
    ) -> None:
        self.spool = spool
        self.registry = registry
        self.index = index
        self.books = books
        self.faults = faults
        self.clock = clock
        self.rnd = rnd
        self.unsettled: list[Ended] = []  # answers that could not be recorded yet

    def task(self, name: str) -> Task | None:
        """The task of that name, if this worker has it."""
        return self.registry.get(name) if name in self.registry else None

    def settle(self, ended: list[Ended], now: datetime) -> None:
        """Record every answer, with those that could not be recorded before once their
        backoff is over; what fails again waits for the next try."""
        mono = self.clock.mono()
        if self.unsettled:
            if self.faults.ready(SETTLE, mono):
                ended, self.unsettled = self.unsettled + ended, []
            else:  # answers that need no write (a success the child removed) are told now
                self.unsettled.extend(e for e in ended if not _writes_nothing(e[1]))
                ended = [e for e in ended if _writes_nothing(e[1])]
        failed = False
        for job, answer, name in ended:
            try:
                self._settle_one(job, answer, name, now)
            except SpoolError as exc:
                self.unsettled.append((job, answer, name))
                self.faults.failed(
                    SETTLE, f"{job.id} {job.task}: cannot record its outcome ({exc}); it stays in active/", mono
                )
                failed = True
        if ended and not failed:
            self.books.moved()
            if self.faults and not self.unsettled:
                self.faults.ok(SETTLE, mono)

    def _settle_one(self, job: Job, answer: Answer, name: str, now: datetime) -> None:
        """Act on one answer (or death) about the job handed over as ``ready/<name>``."""
        kind = answer.kind
        if kind is Kind.SUCCESS and answer.discarded:  # the child removed it already
            self.index.gone(job.id)
            if log.isEnabledFor(logging.INFO):
                log.info("%s %s: succeeded in %.3f s", job.id, job.task, answer.duration_s)
            self.books.count("succeeded", job)
        elif kind in (Kind.GONE, Kind.UNCLAIMED):
            # Not run.  Gone means ready/<name> was not there; if it is, the claim failed for
            # another reason: the job waits, indexed again, while claims back off.
            if self.requeue(job, name):
                self.faults.failed(CLAIM, f"{job.id} {job.task}: {answer.message}", self.clock.mono())
            else:
                self.index.gone(job.id)
                log.warning("%s %s: not run: %s", job.id, job.task, answer.message)
        elif kind is Kind.CLASH:  # the same id got into ready/ while running: a duplicate
            self.books.fail_unrun(READY, name, job, "DuplicateJob", answer.message, now)
        elif kind is Kind.DIED and not self.spool.has(ACTIVE, plain_name(job.id)):
            # Not claimed yet (still in ready/), or claimed, run and discarded just before
            # the child died: nothing was left half done.
            if not self.requeue(job, name):
                self.index.gone(job.id)
                log.info("%s %s: finished, then its pool child died (%s)", job.id, job.task, answer.message)
        else:
            if self.faults:
                self.faults.ok(CLAIM, self.clock.mono())  # the child claimed it: claims work
            self.record(job, answer, now)

    def record(self, job: Job, answer: Answer, now: datetime) -> None:
        """Record what a run produced and move the job to its next state.  Raises SpoolError."""
        decision = decide(job, answer, self.task(job.task), now, self.rnd)
        if decision.action is not Action.DELETE:
            decision = self._within_limit(job, decision, now)
        record, action, reason = decision.job, decision.action, decision.reason
        active = plain_name(job.id)
        if action is Action.DELETE:
            try:
                self.spool.discard(ACTIVE, active)
            except JobGone:
                log.warning("%s %s: was no longer in active/ when it ended (removed by hand?)", job.id, job.task)
        elif action is Action.KEEP:
            self.spool.write(DONE, plain_name(job.id), record, replace=True)
            try:
                self.spool.remove(ACTIVE, active)
            except JobGone:
                pass
        elif action is Action.DELAY:
            assert decision.due is not None
            if decision.due <= now:
                name = job_name(READY, record, decision.due)
                self.spool.record(ACTIVE, active, READY, name, record)
                self.index.push_ready(name, record)
            else:
                name = job_name(DELAYED, record, decision.due)
                self.spool.record(ACTIVE, active, DELAYED, name, record)
                self.index.push_delayed(decision.due, name, job.id)
            log.warning("%s %s: %s", job.id, job.task, reason)
            self.books.count("retry", record, reason)
            return
        else:
            self.spool.fail(ACTIVE, active, record, now)
            self.index.gone(job.id)
            log.error("%s %s: failed: %s", job.id, job.task, reason)
            self.books.count("failed", record, reason)
            return
        self.index.gone(job.id)
        log.info("%s %s: %s", job.id, job.task, reason)
        self.books.count("succeeded", record, reason)

    def _within_limit(self, job: Job, decision: Decision, now: datetime) -> Decision:
        """The decision, or a failure instead if its record would outgrow the record limit:
        only a kept result or a retry's new arguments can grow a job that much (the error
        history is bounded), and the job then fails with its original arguments."""
        size = len(decision.job.to_json())
        if size <= self.spool.record_limit:
            return decision
        what = "its result" if decision.action is Action.KEEP else "the arguments of its retry"
        message = (
            f"{what} would make the job file {size} bytes, over the limit of {self.spool.record_limit} "
            f"bytes (max_job_size {self.spool.max_job_size})"
        )
        record = job.with_error(make_error("JobTooLarge", message, "", attempt=job.retries, at=now))
        return Decision(Action.FAIL, record, reason=f"JobTooLarge: {message}")

    # -- unfinished runs -----------------------------------------------------------------

    def put_back(self, job: Job, name: str, why: str) -> None:
        """Put back a job whose child stopped before finishing it, wherever the child left
        it: claimed (``active/``) goes back to ``ready/``, unclaimed is indexed again."""
        if self.spool.has(ACTIVE, plain_name(job.id)):
            try:
                ready = self.spool.requeue(job)
            except JobGone:
                return
            except SpoolError as exc:
                log.error(
                    "%s %s: cannot return to ready/ (%s); it stays in active/ until the next start",
                    job.id,
                    job.task,
                    exc,
                )
                return
            self.index.push_ready(ready, job)
            log.info("%s %s: back to ready/ (%s)", job.id, job.task, why)
        else:
            self.requeue(job, name)

    def requeue(self, job: Job, name: str) -> bool:
        """Index again a job a child was given but did not claim; False if ``ready/<name>``
        is not there any more."""
        if not self.spool.has(READY, name):
            return False
        self.index.push_ready(name, job)
        return True

    # -- results -------------------------------------------------------------------------

    def prune(self, now: datetime) -> None:
        """Remove kept results whose time is up (a failure is logged, tried again later)."""
        try:
            for e in self.spool.scan(DONE):
                try:
                    job = self.spool.read(DONE, e.name)
                    if job.result_expires is not None and job.result_expires <= now:
                        self.spool.remove(DONE, e.name)
                except (JobFormatError, SpoolError):
                    continue
        except SpoolError as exc:
            log.error("cannot list done/ to remove expired results: %s", exc)


def _writes_nothing(answer: Answer) -> bool:
    """Whether settling this answer writes nothing (a success its child removed already)."""
    return answer.kind is Kind.SUCCESS and answer.discarded
