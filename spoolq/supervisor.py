"""The supervisor: one process per spool that moves jobs and feeds the pool.

::

      producers                      supervisor                                 pool children
    ─────────────┐    intake      ┌──────────┐  dispatch   ┌──────────┐  claim ┌──────────┐
    tmp/ ─► new/ ├───────────────►│  ready/  ├─ (pipe) ───►│ active/  │◄───────┤ runner   │
                 │   (future eta) └──────────┘             └────┬─────┘        │ (task)   │
                 └───────────────►┌──────────┐                  │ answer ◄─────┤          │
                                  │ delayed/ ├─► ready/ when due│ outcomes     └────┬─────┘
                                  └──────────┘◄─────────────────┤ retry             │
                         failed/ ◄── invalid, unknown task,     ├─► failed/         │
                                     duplicate id                ├─► done/           │
                                                                 └─ plain success: ──┘
                                                                    removed by the child

Producers only ever write ``new/``.  Under ``spoolq.lock`` this process moves new →
ready/delayed/failed (:mod:`~spoolq.intake`), delayed → ready (promote) and active →
delayed/ready/failed/done (:mod:`~spoolq.outcomes`); a pool child, handed a ``ready/`` name
through its pipe (dispatch), claims it (ready → active) right before running it and removes
it itself when it succeeds with no result to keep (:mod:`~spoolq.runner`).  Every other
outcome is written into a new file in its destination before the ``active/`` file is
removed, so a crash at any point leaves the job in at least one state, never none; recovery
at start (:mod:`~spoolq.recovery`) puts right what a crash left half done.  Hence
at-least-once delivery.

The loop is :meth:`Supervisor.tick` of named steps, repeated by :meth:`Supervisor.run`,
which sleeps until a child answers or dies, something lands in ``new/``, a signal arrives,
the next delayed job is due, or a timer is due.  Signal handlers only set flags.  Every timer
reads the injected clock; every step that touches the disk obeys :mod:`~spoolq.faults`.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .bookkeeping import CLAIM, FLUSH, LOOP, PLACE, Bookkeeper, EventHook
from .clock import Clock, SystemClock
from .dispatch import Dispatcher
from .errors import SpoolError, SpoolGone
from .faults import Faults
from .index import Index
from .intake import Intake
from .layout import ACTIVE, NEW, READY
from .outcomes import Outcomes
from .pool import SOFT_LIMIT_GRACE_S, Pool
from .recovery import recover
from .registry import Registry
from .spool import Spool
from .watch import Wakeups

log = logging.getLogger("spoolq.supervisor")

PRUNE_INTERVAL_S = 60.0
# Moves (intake, claim, promote, discard) are flushed in batches: a move that a power loss
# undoes leaves the job in its previous state, to be taken again (at least once).  New
# records (outcomes) are flushed at once by the spool before the old copy goes.
BARRIER_INTERVAL_S = 0.2
# How often the supervisor checks that its spool is still at its path (Spool.check_place):
# at most this often while it works, and it wakes for it this often while idle.
PLACE_CHECK_INTERVAL_S = 0.2
PLACE_CHECK_IDLE_S = 1.0
BURST_STALL_S = 10.0  # with --burst, give up after this long without progress while I/O fails
EXIT_SPOOL = 3  # the command's status for a spool that is missing, unusable or gone


class Supervisor:
    """Moves jobs through the spool and runs them in a pool.

    Parameters:
        spool: the spool.
        registry: the tasks (the children import ``registry.modules``).
        concurrency: pool size.
        max_tasks_per_child, time_limit, soft_time_limit, soft_time_limit_grace: see
            ``spoolq worker --help``.
        shutdown_timeout: seconds running jobs get to finish after SIGTERM/SIGINT.
        rescan_interval: seconds between safety rescans of ``new/``.
        tmp_max_age: seconds after which files in ``tmp/`` are stale.
        burst: exit when nothing is due within ``burst_horizon`` seconds and nothing runs.
        clock: wall and monotonic time (tests step a :class:`~spoolq.clock.StepClock`).
        rnd: random source for retry jitter.
        on_event: called with (event, job, detail) for received, started, succeeded,
            retry, failed and rejected; used for progress display.
    """

    def __init__(
        self,
        spool: Spool,
        registry: Registry,
        *,
        concurrency: int,
        max_tasks_per_child: int | None = None,
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
        soft_time_limit_grace: float = SOFT_LIMIT_GRACE_S,
        shutdown_timeout: float = 30.0,
        rescan_interval: float = 5.0,
        tmp_max_age: float = 3600.0,
        burst: bool = False,
        burst_horizon: float = 60.0,
        clock: Clock | None = None,
        rnd: random.Random | None = None,
        on_event: EventHook | None = None,
    ) -> None:
        self.spool = spool
        self.registry = registry
        self.clock = clock or SystemClock()
        self.shutdown_timeout = shutdown_timeout
        self.tmp_max_age = tmp_max_age
        self.burst = burst
        self.burst_horizon = burst_horizon
        parts = _assemble(
            spool,
            registry,
            self.clock,
            concurrency,
            max_tasks_per_child,
            time_limit,
            soft_time_limit,
            soft_time_limit_grace,
            rescan_interval,
            rnd,
            on_event,
        )
        self.faults, self.books, self.index = parts.faults, parts.books, parts.index
        self.intake, self.outcomes, self.pool, self.dispatcher = (
            parts.intake,
            parts.outcomes,
            parts.pool,
            parts.dispatch,
        )
        self.lock = spool.lock()
        self.wakeups = Wakeups(spool.dir(NEW))
        self.exit_status = 0
        self.stopping = False
        self.stop_now = False
        self.started = False
        self._stop_deadline: float | None = None
        self._next_place_check = 0.0
        self._next_prune = 0.0
        self._next_barrier = 0.0

    @property
    def counts(self) -> dict[str, int]:
        """Jobs received, succeeded, retried, failed and rejected so far."""
        return self.books.counts

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Take the lock, recover from a crash, start the pool and the watcher.

        Raises:
            SpoolLocked: another supervisor holds the spool.
            SpoolError: the spool cannot be used.
        """
        self.spool.ensure()
        self.lock.acquire()
        try:
            # From here on the spool is this directory, wherever it is moved (check_place).
            self.pool.spool_identity = self.spool.bind()
            self.spool.check_place()
            self.pool.prepare()  # the forkserver loads the task modules while we recover
            self._recover(self.clock.now())
            self.intake.take(self.clock.now())  # what was queued before the start, whole
            self.pool.start()
            if not self.wakeups.watch():
                log.warning(
                    "no filesystem events for %s; relying on rescans every %gs",
                    self.spool.dir(NEW),
                    self.intake.rescan_interval_s,
                )
        except BaseException:
            self.lock.release()
            self.spool.close()
            raise
        self.started = True
        self.books.moved()

    def _recover(self, now: datetime) -> None:
        for level, line in recover(self.spool, now, tmp_max_age_s=self.tmp_max_age).lines():
            log.log(level, "%s", line)
        self.index.load()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: the first asks for a graceful stop, the second for an immediate
        one.  The handlers only set flags; the wake-up fd makes the loop notice at once."""
        self.wakeups.install_signals(self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stop_now, self.stopping = self.stopping, True  # the second signal: stop now

    def run(self) -> int:
        """Run until stopped (or, with ``burst``, until idle); returns the exit status."""
        if not self.started:
            self.start()
        try:
            ready: set[int] | None = None
            while True:
                if self.faults.ready(LOOP, self.clock.mono()):
                    self._guarded_tick(ready)
                if self._finished():
                    break
                ready = self.wakeups.wait(self._sleep_time(), self.pool.waitables())
                if self.wakeups.arrived(ready):
                    self.intake.signalled = True
        finally:
            self.close()
        return self.exit_status

    def _guarded_tick(self, ready: set[int] | None) -> None:
        """A tick that neither crashes nor spins on an I/O error a step did not handle."""
        try:
            self.tick(self.clock.now(), ready)
        except SpoolGone as exc:
            self._lose_place(exc)
        except (OSError, SpoolError) as exc:
            if LOOP not in self.faults.streaks:
                log.exception("unexpected I/O error in the loop")
            self.faults.failed(LOOP, f"unexpected I/O error: {exc}", self.clock.mono())
        else:
            if self.faults:
                self.faults.ok(LOOP, self.clock.mono())

    def _lose_place(self, exc: SpoolGone) -> None:
        """Stop taking work (running jobs finish, recorded where the spool now is); exit 3."""
        if self.exit_status != EXIT_SPOOL:
            log.error("%s; this worker stops taking jobs and exits (status %d)", exc, EXIT_SPOOL)
        self.exit_status = EXIT_SPOOL
        self.stopping = True

    def close(self) -> None:
        """Return unfinished jobs to ``ready/``, stop the pool and the watcher, unlock."""
        if not self.started:
            return
        self.started = False
        # Each step runs whatever the one before did: the pool must always be stopped (its
        # children ignore SIGTERM, so multiprocessing's exit handler would wait on them for
        # ever) and the lock always released, even after an error or on a full disk.
        try:
            self.intake.close()
            # Settle the answers already in the pipes first: a job that ended is not run again.
            self._collect(self.clock.now())
            for job, name in self.pool.kill_running():
                self.outcomes.put_back(job, name, "stopped before it finished")
        except (OSError, SpoolError) as exc:
            log.error("while stopping: %s (what is left in active/ goes back to ready/ at the next start)", exc)
        finally:
            try:
                self.pool.stop()
            finally:
                self._release()

    def _release(self) -> None:
        try:
            self.spool.barrier()
        except SpoolError as exc:
            log.error("cannot flush the spool: %s", exc)
        self.spool.close()
        self.lock.release()
        self.wakeups.close()

    # -- the loop ------------------------------------------------------------------------

    def tick(self, now: datetime, ready: set[int] | None = None) -> None:
        """One step of the loop, without blocking: check the spool's place, settle what
        ended, promote, dispatch, take in new jobs, prune and flush.  ``ready``: the
        descriptors the last wait found readable (None: look at every child)."""
        mono = self.clock.mono()
        if mono >= self._next_place_check:
            self._next_place_check = mono + PLACE_CHECK_INTERVAL_S
            self._check_place()
        # Answers first: a job that answered before its deadline must not have its child
        # killed, nor the job running after it charged with its limit.
        self._collect(now, ready)
        self.pool.enforce_limits(mono)
        if self.stopping:
            self._handle_stop(mono)
        else:
            self.dispatcher.promote_due(now)
            self.dispatcher.dispatch(now)
            if self.intake.due():
                self.intake.take(now)
                self.dispatcher.dispatch(now)  # what just arrived starts now, not one loop later
            self.pool.flush()
        if mono >= self._next_prune:
            self._next_prune = mono + PRUNE_INTERVAL_S
            self.outcomes.prune(now)
        if mono >= self._next_barrier:
            self._next_barrier = mono + BARRIER_INTERVAL_S
            self.books.flush()

    def _check_place(self) -> None:
        """Stop if the spool left its path; watch ``new/`` again if it was made anew."""
        try:
            self.spool.check_place()
        except SpoolGone as exc:
            self._lose_place(exc)
            return
        except SpoolError as exc:  # a state directory replaced by a file, say: the steps back off
            self.faults.failed(PLACE, f"cannot check the spool's directories: {exc}", self.clock.mono())
            return
        if self.wakeups.follow(self.spool.identity_of(NEW)):
            self.intake.signalled = True

    def _collect(self, now: datetime, ready: set[int] | None = None) -> None:
        ended = self.pool.collect(ready)
        requeue, self.pool.requeue = self.pool.requeue, []
        for job, name in requeue:
            self.outcomes.put_back(job, name, "its pool child died before it started it")
        if ended:
            self.spool.touched(READY, ACTIVE)  # the children's claims and discards
        self.outcomes.settle(ended, now)

    def _sleep_time(self) -> float:
        """Seconds until something is due (0: work waits now)."""
        mono = self.clock.mono()
        if not self.faults.ready(LOOP, mono):
            return self.faults.retry_at(LOOP) - mono
        candidates = [self.intake.next_pass_at - mono, self._next_place_check + PLACE_CHECK_IDLE_S - mono]
        due = self.index.next_due()
        if due is not None and not self.stopping:
            candidates.append((due - self.clock.now()).total_seconds())
        for deadline in (self.pool.next_deadline(), self._stop_deadline, self.faults.next_retry(mono)):
            if deadline is not None:
                candidates.append(deadline - mono)
        if self.spool.dirty:
            candidates.append(max(self._next_barrier, self.faults.retry_at(FLUSH)) - mono)
        if self.burst and self.faults:
            candidates.append(1.0)  # to notice a stall (see _finished)
        if not self.stopping and (
            (len(self.index) and self.pool.free() and self.faults.ready(CLAIM, mono)) or self.intake.room() > 0
        ):
            candidates.append(0.0)
        return max(0.0, min(candidates))

    def _finished(self) -> bool:
        if self.stopping:
            return not self.pool.busy()
        if not self.burst:
            return False
        if not self.pool.busy() and self.books.stalled(BURST_STALL_S):
            log.error("giving up (--burst): %s", self.faults.describe())
            self.exit_status = EXIT_SPOOL
            return True
        if self.pool.busy() or len(self.index) or self.outcomes.unsettled or self.intake.waiting():
            return False
        due = self.index.next_due()
        return due is None or due > self.clock.now() + timedelta(seconds=self.burst_horizon)

    def _handle_stop(self, mono: float) -> None:
        if self._stop_deadline is None:
            self._stop_deadline = mono + self.shutdown_timeout
            log.info(
                "stopping: waiting up to %gs for %d running job(s); send the signal again to stop now",
                self.shutdown_timeout,
                len(self.pool.busy()),
            )
        if self.stop_now or mono >= self._stop_deadline:
            for job, name in self.pool.kill_running():
                self.outcomes.put_back(job, name, "stopped before it finished")


@dataclass
class _Parts:
    """The steps of the loop and what they share."""

    faults: Faults
    books: Bookkeeper
    index: Index
    intake: Intake
    outcomes: Outcomes
    pool: Pool
    dispatch: Dispatcher


def _assemble(
    spool: Spool,
    registry: Registry,
    clock: Clock,
    concurrency: int,
    max_tasks_per_child: int | None,
    time_limit: float | None,
    soft_time_limit: float | None,
    soft_grace_s: float,
    rescan_interval_s: float,
    rnd: random.Random | None,
    on_event: EventHook | None,
) -> _Parts:
    """Build the steps around one index, one set of books and one I/O-failure policy, so no
    step calls back into the supervisor (see the module's docstring)."""
    faults = Faults(log)
    books = Bookkeeper(spool, faults, clock, on_event)
    index = Index(spool)
    intake = Intake(spool, registry, index, books, faults, clock, rescan_interval_s=rescan_interval_s)
    outcomes = Outcomes(spool, registry, index, books, faults, clock, rnd or random.Random())
    options = {
        "fsync": spool.fsync,
        "max_job_size": spool.max_job_size,
        "dir_mode": spool.dir_mode,
        "file_mode": spool.file_mode,
    }
    pool = Pool(
        concurrency,
        list(registry.modules),
        max_tasks_per_child,
        spool_root=str(spool.path),
        spool_options=options,
        soft_grace_s=soft_grace_s,
        clock=clock,
    )
    dispatch = Dispatcher(
        spool, index, books, faults, clock, pool, outcomes.task, time_limit=time_limit, soft_time_limit=soft_time_limit
    )
    return _Parts(faults, books, index, intake, outcomes, pool, dispatch)


__all__ = ["Supervisor"]
