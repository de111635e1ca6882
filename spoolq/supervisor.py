"""The supervisor: one process per spool that moves jobs and feeds the pool.

::

      producers                     supervisor (this module)                 pool children
    ─────────────┐   ingest      ┌──────────┐  dispatch   ┌──────────┐  claim ┌──────────┐
    tmp/ ─► new/ ├──────────────►│  ready/  ├─ (pipe) ───►│ active/  │◄───────┤ runner   │
                 │   (future eta)└──────────┘             └────┬─────┘        │ (task)   │
                 └──────────────►┌──────────┐                  │ answer ◄─────┤          │
                                 │ delayed/ ├─► ready/ when due│ settle       └────┬─────┘
                                 └──────────┘◄─────────────────┤ retry             │
                        failed/ ◄── invalid, unknown task,     ├─► failed/         │
                                    duplicate id                ├─► done/           │
                                                                └─ plain success: ──┘
                                                                   removed by the child

Producers only ever write ``new/``.  Under ``spoolq.lock`` this process moves new →
ready/delayed/failed (ingest), delayed → ready (promote) and active → delayed/ready/failed/
done (settle); a pool child, handed a ``ready/`` name through its pipe (dispatch), claims it
(ready → active) right before running it and removes it itself when it succeeds with no
result to keep (see :mod:`spoolq.runner`).  Every other outcome is written into a new file
in its destination before the ``active/`` file is removed, so a crash at any point leaves
the job in at least one state, never none; recovery at start removes the stale ``active/``
copy when a newer record exists, and returns the others to ``ready/``.  Hence
at-least-once delivery.

The loop is :meth:`Supervisor.tick` of named steps, repeated by :meth:`Supervisor.run`,
which sleeps until a child answers or dies, something lands in ``new/``, a signal arrives,
the next delayed job is due, or the periodic rescan is due.  Signal handlers only set flags.
"""

from __future__ import annotations

import heapq
import logging
import os
import random
import select
import signal
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from .errors import HardLinked, JobFormatError, JobNotFound, SpoolError, SpoolGone
from .faults import Faults
from .job import STAMP_LEN, Job, make_error, utcnow
from .pool import SOFT_LIMIT_GRACE_S, Pool
from .registry import Registry
from .replay import drop_replayed_copy
from .retry import CLASH, DELAY, DELETE, DIED, FAIL, GONE, KEEP, SUCCESS, UNCLAIMED, Outcome, decide
from .spool import ACTIVE, DELAYED, DONE, FAILED, NEW, READY, Readahead, Spool, job_name, parse_name, printable
from .task import Task
from .watch import NewWatcher, Waker

log = logging.getLogger("spoolq.worker")

# A Maildir-style producer (another language's, or spoolq before it renamed) may link its
# file into new/ and then unlink the temporary name; between the two the file has two
# links.  Only a link count that stays above one this long means a hard link to a file
# elsewhere, which is refused unread.
LINK_GRACE_S = 2.0
PRUNE_INTERVAL_S = 60.0
INGEST_BATCH = 1000  # names listed from new/ at once
# Ingest gives the loop back after this long when children could use work: a thousand reads
# in one go would leave every child idle behind an empty prefetch queue for ~100 ms.
INGEST_SLICE_S = 0.0005
READY_BACKLOG = 5000  # with this many ready, ingest only keeps pace with dispatch
# Moves (ingest, claim, promote, delete after success) are flushed in batches: a move that a
# power loss undoes leaves the job in its previous state, to be taken again (at least once).
# New records (outcomes) are flushed at once by Spool.write before the old copy goes.
BARRIER_INTERVAL_S = 0.2
# Jobs parsed at ingest are kept for dispatch (files never change once they land), up to
# this many, so a job is read and validated once; past it, dispatch reads the file again.
PARSED_CACHE_MAX = 20_000
# How many ready/ names the loop keeps in memory; the rest wait on disk (see _refill_ready).
READY_WINDOW = 100_000
READY_ID_AT = STAMP_LEN + 3  # where the id starts in a ready/ name: "R-<stamp>-<id>.json"
# The steps that touch the disk, as the I/O-failure policy (spoolq.faults) names them in logs.
INGEST, SETTLE, CLAIM, PROMOTE, TO_FAILED, FLUSH, LOOP = (
    "taking jobs in from new/", "recording outcomes", "claiming jobs from ready/", "promoting due delayed/ jobs",
    "writing to failed/", "flushing directories", "the supervisor loop",
)  # fmt: skip
# How often the supervisor checks that its spool is still at its path (see Spool.check_place):
# at most this often while it works, and it wakes for it this often while idle.
PLACE_CHECK_INTERVAL_S = 0.2
PLACE_CHECK_IDLE_S = 1.0
# With --burst, give up (exit 3) after this long without progress while I/O keeps failing.
BURST_STALL_S = 10.0
EXIT_SPOOL = 3  # the CLI's status for a spool that is missing, unusable or gone
# A job file read slower than this came from the disk, not from memory: the next batch of
# the pass over new/ is read ahead in parallel (see spool.Readahead).
SLOW_READ_S = 0.0005

EventHook = Callable[[str, Job | None, str], None]


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
        clock: returns the current UTC time.
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
        clock: Callable[[], datetime] = utcnow,
        rnd: random.Random | None = None,
        on_event: EventHook | None = None,
    ) -> None:
        self.spool = spool
        self.registry = registry
        self.pool = Pool(concurrency, list(registry.modules), max_tasks_per_child, spool_root=str(spool.path),
                         fsync=spool.fsync, soft_grace_s=soft_time_limit_grace)
        self.time_limit = time_limit
        self.soft_time_limit = soft_time_limit
        self.shutdown_timeout = shutdown_timeout
        self.rescan_interval = rescan_interval
        self.tmp_max_age = tmp_max_age
        self.burst = burst
        self.burst_horizon = burst_horizon
        self.clock = clock
        self.rnd = rnd or random.Random()
        self.on_event = on_event
        self.lock = spool.lock()
        self.waker = Waker()
        self.watcher = NewWatcher(spool.dir(NEW), self.waker)
        # In-memory index of what this process moved; the directories stay the truth.
        self._ready: list[str] = []  # heap of ready/ names (they sort in dispatch order)
        self._parsed: dict[str, Job] = {}  # ready/ name -> the job as ingest read it
        self._ready_bound: str | None = None  # largest indexed name while some wait on disk
        self._ready_spilled = False  # ready/ holds names not in the index
        self._delayed: list[tuple[datetime, str]] = []  # heap of (due, delayed/ name)
        self._live: set[str] = set()  # ids in ready/, delayed/ or active/
        self._unsettled: list[tuple[Job, Outcome, str]] = []  # outcomes that could not be written yet
        self.faults = Faults(log)  # backoff and logging of I/O that keeps failing, per step
        self.exit_status = 0
        self._progress_at = 0.0  # monotonic time something last moved (for --burst's give-up)
        self._next_place_check = 0.0
        self._new_identity: tuple[int, int] | None = None  # of the new/ directory watched
        self._scan_new = True
        self._new_pending: list[str] = []  # names listed from new/, not yet taken in (reversed)
        self._new_more = False  # the current pass over new/ has more names
        self._new_cursor = spool.cursor(NEW)
        self._cold_pass = False  # this pass over new/ reads its files from the disk
        self._slow_reads = 0.0  # moving share of recent reads slower than SLOW_READ_S
        self._readahead: Readahead | None = None
        self._ingested = False  # the first ingest (a whole listing) is done
        self._next_rescan = 0.0
        self._next_prune = 0.0
        self._next_barrier = 0.0
        self._deferred_links: dict[str, float] = {}  # new/ names with 2 links, first seen
        self._saved_signals: tuple[Any, Any, Any] | None = None
        self._poller = select.poll()
        self._polled: set[int] = set()  # the descriptors registered with the poller
        self.stopping = False
        self.stop_now = False
        self._stop_deadline: float | None = None
        self.started = False
        self.counts = {"received": 0, "succeeded": 0, "retried": 0, "failed": 0, "rejected": 0}

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Take the lock, recover from a crash, start the pool and the watcher.

        Raises:
            SpoolLocked: another supervisor holds the spool.
        """
        self.spool.ensure()
        self.lock.acquire()
        try:
            # From here on the spool is this directory, wherever it is moved (check_place).
            self.pool.spool_identity = self.spool.bind()
            self.spool.check_place()
            self.pool.prepare()  # the forkserver loads the task modules while we recover
            self.recover(self.clock())
            self.ingest(self.clock())  # what was queued before the start, in priority order
            self.pool.start()
            if not self.watcher.start():
                log.warning("no filesystem events for %s; relying on rescans every %gs",
                            self.spool.dir(NEW), self.rescan_interval)
        except BaseException:
            self.lock.release()
            self.spool.close()
            raise
        self.started = True
        self._progress_at = time.monotonic()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: the first asks for a graceful stop, the second for an immediate
        one.  The handlers only set flags; the wake-up fd makes the loop notice at once."""
        self._saved_signals = (
            signal.set_wakeup_fd(self.waker.write_fd, warn_on_full_buffer=False),
            signal.signal(signal.SIGTERM, self._on_signal),
            signal.signal(signal.SIGINT, self._on_signal),
        )

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.stopping:
            self.stop_now = True
        self.stopping = True

    def run(self) -> int:
        """Run until stopped (or, with ``burst``, until idle); returns the exit status."""
        if not self.started:
            self.start()
        try:
            ready: set[int] | None = None
            while True:
                if self.faults.ready(LOOP, time.monotonic()):
                    try:
                        self.tick(self.clock(), ready)
                    except SpoolGone as exc:
                        self._lose_place(exc)
                    except (OSError, SpoolError) as exc:
                        # A step that did not say how to handle this: never crash or spin on it.
                        if LOOP not in self.faults.streaks:
                            log.exception("unexpected I/O error in the loop")
                        self.faults.failed(LOOP, f"unexpected I/O error: {exc}", time.monotonic())
                    else:
                        if self.faults:
                            self.faults.ok(LOOP, time.monotonic())
                if self._finished():
                    break
                ready = self._wait(self._sleep_time(self.clock()))
                if self.waker.read_fd in ready:
                    self.waker.drain()
                if self.watcher.take_pending():
                    self._scan_new = True
        finally:
            self.close()
        return self.exit_status

    def _follow_new_dir(self) -> None:
        """Watch ``new/`` again if it was removed and created anew (its events stopped)."""
        identity = self.spool.identity_of(NEW)
        if identity != self._new_identity:
            if self._new_identity is not None:
                self.watcher.stop()
                self.watcher.start()
                self._scan_new = True
            self._new_identity = identity

    def _lose_place(self, exc: SpoolGone) -> None:
        """The spool is no longer at its path: stop taking work (running jobs finish and are
        recorded in the spool where it now is) and exit with status 3."""
        if self.exit_status != EXIT_SPOOL:
            log.error("%s; this worker stops taking jobs and exits (status %d)", exc, EXIT_SPOOL)
        self.exit_status = EXIT_SPOOL
        self.stopping = True

    def _wait(self, timeout_s: float) -> set[int]:
        """Sleep until a descriptor is readable or ``timeout_s`` passes; the readable ones.

        One poll object for the whole run, updated only when a child is replaced: building a
        selector per wait (``multiprocessing.connection.wait``) cost more than a job.
        """
        fds = {*self.pool.waitables(), self.waker.read_fd, *self.watcher.fds()}
        if fds != self._polled:
            for fd in self._polled - fds:
                self._poller.unregister(fd)
            for fd in fds - self._polled:
                self._poller.register(fd, select.POLLIN)
            self._polled = fds
        return {fd for fd, _ in self._poller.poll(max(0.0, timeout_s) * 1000.0)}

    def close(self) -> None:
        """Return unfinished jobs to ``ready/``, stop the pool and the watcher, unlock."""
        if not self.started:
            return
        self.started = False
        # Each step runs whatever the one before did: the pool must always be stopped (its
        # children ignore SIGTERM, so multiprocessing's exit handler would wait on them for
        # ever) and the lock always released, even after an error or on a full disk.
        try:
            self._new_cursor.close()
            if self._readahead is not None:
                self._readahead.close()
            self.watcher.stop()
            # Settle the answers already in the pipes first: a job that ended is not run again.
            self._collect_and_settle(self.clock())
            for job, name in self.pool.kill_running("supervisor stopping"):
                self._unassign(job, name, "stopped before it finished")
        except (OSError, SpoolError) as exc:
            log.error("while stopping: %s (what is left in active/ goes back to ready/ at the next start)",
                      printable(str(exc)))  # fmt: skip
        finally:
            try:
                self.pool.stop()
            finally:
                self._release()

    def _release(self) -> None:
        try:
            self.spool.barrier()
        except (OSError, SpoolError) as exc:
            log.error("cannot flush the spool: %s", exc)
        self.spool.close()
        self.lock.release()
        if self._saved_signals is not None:
            # The wake-up fd is about to be closed (and its number reused): give it back.
            wakeup_fd, term, intr = self._saved_signals
            signal.set_wakeup_fd(wakeup_fd)
            signal.signal(signal.SIGTERM, term)
            signal.signal(signal.SIGINT, intr)
            self._saved_signals = None
        self.waker.close()

    # -- the loop -----------------------------------------------------------------------

    def tick(self, now: datetime, ready: set[int] | None = None) -> None:
        """One step of the loop, without blocking: settle what ended, take in new jobs,
        promote due ones, dispatch, and flush the directories touched.  ``ready``: the
        descriptors the last wait found readable (None: look at every child)."""
        mono = time.monotonic()
        if mono >= self._next_place_check:
            self._next_place_check = mono + PLACE_CHECK_INTERVAL_S
            try:
                self.spool.check_place()
            except SpoolGone as exc:
                self._lose_place(exc)
            else:
                self._follow_new_dir()
        self.pool.enforce_limits(mono)
        self._collect_and_settle(now, ready)
        if self.stopping:
            self._handle_stop(mono)
        else:
            self.promote_due(now)
            self.dispatch(now)
            if self._scan_new or mono >= self._next_rescan or self._ingest_room() > 0:
                self.ingest(now)
                self.dispatch(now)  # what just arrived starts now, not one loop later
            self.pool.flush()
        if mono >= self._next_prune:
            self._next_prune = mono + PRUNE_INTERVAL_S
            self.prune_results(now)
        if mono >= self._next_barrier and self.faults.ready(FLUSH, mono):
            self._next_barrier = mono + BARRIER_INTERVAL_S
            try:
                self.spool.barrier()
            except (OSError, SpoolError) as exc:
                self.faults.failed(FLUSH, f"cannot flush spool directories: {exc}", mono)
            else:
                self.faults.ok(FLUSH, mono)

    def _sleep_time(self, now: datetime) -> float:
        mono = time.monotonic()
        if not self.faults.ready(LOOP, mono):
            return self.faults.retry_at(LOOP) - mono
        candidates = [max(0.0, self._next_rescan - mono), self._next_place_check + PLACE_CHECK_IDLE_S - mono]
        if self._delayed and not self.stopping:
            candidates.append((self._delayed[0][0] - now).total_seconds())
        deadline = self.pool.next_deadline()
        if deadline is not None:
            candidates.append(deadline - mono)
        if self._stop_deadline is not None:
            candidates.append(self._stop_deadline - mono)
        if self.spool.dirty:
            candidates.append(max(self._next_barrier, self.faults.retry_at(FLUSH)) - mono)
        retry_at = self.faults.next_retry(mono)
        if retry_at is not None:
            candidates.append(retry_at - mono)
        if self.burst and self.faults:
            candidates.append(1.0)  # to notice a stall (see _finished)
        if not self.stopping and (
            (self._ready and self.pool.free() and self.faults.ready(CLAIM, mono)) or self._ingest_room() > 0
        ):
            candidates.append(0.0)
        return max(0.0, min(candidates))

    def _finished(self) -> bool:
        if self.stopping:
            return not self.pool.busy()
        if self.burst and self.faults and not self.pool.busy():
            mono = time.monotonic()
            stalled_since = max(self._progress_at, self.faults.failing_since() or mono)
            if mono - stalled_since >= BURST_STALL_S:
                log.error("giving up (--burst): no progress for %.0f s while I/O keeps failing: %s",
                          mono - stalled_since, self.faults.describe())  # fmt: skip
                self.exit_status = EXIT_SPOOL
                return True
        if not self.burst or self.pool.busy() or self._ready or self._unsettled:
            return False
        if self._has_new():
            return False
        if self._delayed:
            horizon = self.clock() + timedelta(seconds=self.burst_horizon)
            return self._delayed[0][0] > horizon
        return True

    def _has_new(self) -> bool:
        try:
            return bool(self.spool.names(NEW, limit=1))
        except (OSError, SpoolError):
            return True  # cannot tell: ingest's own failures say why (and --burst gives up on them)

    def _handle_stop(self, mono: float) -> None:
        if self._stop_deadline is None:
            self._stop_deadline = mono + self.shutdown_timeout
            log.info("stopping: waiting up to %gs for %d running job(s); send the signal again to stop now",
                     self.shutdown_timeout, len(self.pool.busy()))
        if self.stop_now or mono >= self._stop_deadline:
            for job, name in self.pool.kill_running("shutdown timeout"):
                self._unassign(job, name, "stopped before it finished")

    # -- recovery -----------------------------------------------------------------------

    def recover(self, now: datetime) -> None:
        """Rebuild the index from the listings and undo what a crash left half done:
        stale ``tmp/`` files are removed, ``active/`` jobs go back to ``ready/`` (or are
        dropped when their outcome was already written elsewhere)."""
        for path in self.spool.sweep_tmp(self.tmp_max_age, time.time()):
            log.info("removed stale temporary file %s", path.name)
        for name in self.spool.drop_twins():
            log.warning("removed %s: the old name of a job that a power loss left half moved", name)
        for e in self.spool.scan(DELAYED):
            if e.job_id is None or e.when is None:
                log.warning("ignoring foreign file delayed/%s (spoolq fsck reports it)", e.name)
                continue
            heapq.heappush(self._delayed, (e.when, e.name))
            self._live.add(e.job_id)
        for e in self.spool.scan(READY):
            if e.job_id is None:
                log.warning("ignoring foreign file ready/%s (spoolq fsck reports it)", e.name)
        self._refill_ready()
        active = list(self.spool.scan(ACTIVE))
        if not active:
            return
        finished = self._finished_records({e.job_id for e in active if e.job_id})
        for e in active:
            try:
                job = self.spool.read(e.path)
            except (JobFormatError, OSError) as exc:
                self._reject(e.path, f"unreadable file in active/ after a crash: {exc}", now)
                continue
            if self._outcome_recorded(job, finished.get(job.id, [])):
                self.spool.remove(e.path)
                log.info("%s %s: outcome already recorded before the crash; dropped the active copy", job.id, job.task)
                continue
            self._return_to_ready(job, "recovered after a crash")

    def _finished_records(self, ids: set[str]) -> dict[str, list[Job]]:
        found: dict[str, list[Job]] = {}
        for state in (READY, DELAYED, FAILED, DONE):
            for e in self.spool.scan(state):
                if e.job_id in ids:
                    try:
                        found.setdefault(e.job_id, []).append(self.spool.read(e.path))
                    except (JobFormatError, OSError):
                        continue
        return found

    @staticmethod
    def _outcome_recorded(job: Job, others: list[Job]) -> bool:
        # The same job (same enqueue time) further along: more errors, or finished.
        return any(
            o.enqueued_at == job.enqueued_at and (o.error_count() > job.error_count() or o.finished_at is not None)
            for o in others
        )

    def _unassign(self, job: Job, name: str, why: str) -> None:
        """Put back a job whose child stopped before finishing it, wherever the child left
        it: claimed (``active/``) goes back to ``ready/``, unclaimed is indexed again."""
        if self.spool.has(ACTIVE, f"{job.id}.json"):
            self._return_to_ready(job, why)
        else:
            self._requeue(job, name)

    def _requeue(self, job: Job, name: str) -> bool:
        """Index again a job a child was given but did not claim; False if ``ready/<name>``
        is not there any more."""
        if not self.spool.has(READY, name):
            return False
        self._push_ready(name, job)
        return True

    def _return_to_ready(self, job: Job, why: str) -> None:
        name = job_name(READY, job)
        try:
            self.spool.move(self.spool.file(ACTIVE, f"{job.id}.json"), READY, name)
        except FileNotFoundError:
            return
        except (OSError, SpoolError) as exc:
            log.error("%s %s: cannot return to ready/ (%s); it stays in active/ until the next start",
                      job.id, job.task, exc)  # fmt: skip
            return
        self._push_ready(name, job)
        log.info("%s %s: back to ready/ (%s)", job.id, job.task, why)

    # -- ingest -------------------------------------------------------------------------

    def _ingest_room(self) -> int:
        """How many more jobs ingest should take in now from what ``new/`` still holds
        (listed or not): up to :data:`READY_BACKLOG` ready; the rest waits in ``new/``,
        costing no memory (0 when nothing is left or I/O is backing off)."""
        if not (self._new_pending or self._new_more) or self.stopping:
            return 0
        if not self.faults.ready(INGEST, time.monotonic()):
            return 0
        return max(0, READY_BACKLOG - len(self._ready))

    def ingest(self, now: datetime) -> None:
        """Validate what is in ``new/`` and move it on: due → ready, future → delayed,
        anything wrong → failed with the reason.  One bad file never stops the others.  Due
        jobs are taken in as :meth:`_ingest_room` says; the others all are."""
        mono = time.monotonic()
        self._next_rescan = mono + self.rescan_interval
        if not self.faults.ready(INGEST, mono):
            return
        # One pass over new/ is taken in over many ticks, a batch of names at a time, without
        # listing the directory again until the pass is over (see spool.NameCursor).
        pending = self._new_pending
        if not pending:
            if not self._new_more:
                # A new pass sees what was signalled until now; an arrival signalled while a
                # pass goes on may not be in its listing, so it asks for the next one.
                self._scan_new = False
                self._cold_pass = False  # a new pass: hot until a read says otherwise
            try:
                listed, self._new_more = self._new_cursor.take(INGEST_BATCH)
            except (OSError, SpoolError) as exc:
                self._new_cursor.close()
                self._new_more = False
                self.faults.failed(INGEST, f"cannot list new/: {exc}", mono)
                return
            if self._cold_pass:
                self._read_ahead(listed)
            pending.extend(reversed(listed))
        room = self._ingest_room()
        # Short slices once running: collecting answers and feeding children must not wait
        # for a thousand reads.  The first ingest takes a whole listing, so that what was
        # queued before the start is dispatched in priority order.
        end = time.monotonic() + INGEST_SLICE_S if self._ingested else float("inf")
        self._ingested = True
        took = False
        while pending and room > 0:
            name = pending.pop()
            try:
                room -= self._ingest_one(self.spool.file(NEW, name), name, now)
            except (OSError, SpoolError) as exc:  # SpoolError: a write failed (disk full)
                pending.append(name)
                self.faults.failed(INGEST, f"cannot take in new/{printable(name)}: {exc}", time.monotonic())
                return
            took = True
            if time.monotonic() >= end:
                break
        if took and self.faults:
            self.faults.ok(INGEST, time.monotonic())
        if not pending and not self._new_more:
            return
        if self._ingest_room() == 0:
            # Enough is ready: look again once dispatch has drained some (or in 50 ms).
            self._next_rescan = time.monotonic() + min(self.rescan_interval, 0.05)
        else:
            self._next_rescan = time.monotonic()  # more to take in: the next tick goes on

    def _read_ahead(self, names: Iterable[str]) -> None:
        if self._readahead is None:
            self._readahead = Readahead(self.spool.max_job_size)
        self._readahead.put(self.spool.file(NEW, n) for n in names)

    def _ingest_one(self, path: Any, name: str, now: datetime) -> int:
        """Take in one file of ``new/``; 1 if it was a due job (moved to ``ready/``), else 0."""
        t0 = time.perf_counter()
        try:
            job = self.spool.read(path)
            # Most recent reads slow (not one preempted read): read the rest of this pass ahead.
            self._slow_reads = 0.9 * self._slow_reads + (0.1 if time.perf_counter() - t0 > SLOW_READ_S else 0.0)
            if self._slow_reads > 0.5 and not self._cold_pass:
                self._cold_pass = True
                self._read_ahead(reversed(self._new_pending))
        except FileNotFoundError:
            return 0
        except HardLinked as exc:
            if self._still_linked(path, name, exc.stat):
                return 0
            try:  # its other name was a producer's leftover, now removed
                job = self.spool.read(path)
            except FileNotFoundError:
                return 0
            except (JobFormatError, PermissionError) as exc2:
                self._reject(path, f"new/{name}: {_why(exc2)}", now)
                return 0
        except (JobFormatError, PermissionError) as exc:
            self._reject(path, f"new/{name}: {_why(exc)}", now)
            return 0
        if self._deferred_links:
            self._deferred_links.pop(name, None)
        drop_replayed_copy(self.spool, job)  # sent back by `spoolq retry`: no stale copy to replay again
        task = self._task(job.task)
        if task is None:
            self._fail_unrun(path, job, "TaskNotFound", f"no task named {job.task!r} is registered", now)
            return 0
        if self._is_queued(job.id):
            self._fail_unrun(path, job, "DuplicateJob", f"a job with id {job.id!r} is already queued", now)
            return 0
        self.counts["received"] += 1
        self._emit("received", job, "")
        return self._place(path, job, now)

    def _still_linked(self, path: Any, name: str, st: os.stat_result) -> bool:
        """Whether a file of ``new/`` with two names must wait: a producer of an older
        spoolq (link, then unlink) between its two steps, for :data:`LINK_GRACE_S`."""
        twin = self.spool.tmp_twin(st)
        if twin is not None:  # its producer died between link and unlink: delivered whole
            try:
                self.spool.remove(twin)
                st = self.spool.lstat(path)
            except FileNotFoundError:
                pass
        if st.st_nlink > 1:
            mono = time.monotonic()
            first = self._deferred_links.setdefault(name, mono)
            if mono - first < LINK_GRACE_S:
                # Look again soon: the producer's unlink sends no event here.
                self._next_rescan = min(self._next_rescan, mono + 0.1)
                return True
        return False

    def _place(self, path: Any, job: Job, now: datetime) -> int:
        """Move a valid job out of ``new/`` into ``ready/`` or ``delayed/``; 1 if it is due
        (it took room), else 0."""
        if job.is_due(now):
            target = job_name(READY, job)
            self.spool.move(path, READY, target, NEW)
            self._push_ready(target, job)
            self._progress_at = time.monotonic()
        else:
            assert job.eta is not None
            target = job_name(DELAYED, job, job.eta)
            self.spool.move(path, DELAYED, target)
            heapq.heappush(self._delayed, (job.eta, target))
            self._live.add(job.id)
            self._progress_at = time.monotonic()
            log.info("%s %s: received into %s", job.id, job.task, target)
            return 0
        if log.isEnabledFor(logging.INFO):
            log.info("%s %s: received into %s", job.id, job.task, target)
        return 1

    def _is_queued(self, job_id: str) -> bool:
        """Whether a job with this id is in ``ready/``, ``delayed/`` or ``active/`` now.  The
        index is only a hint: an operator may have moved the file away (``mv delayed/… new/``
        to run a job now), so a hit is confirmed in the listings before a duplicate is failed.
        (A child claims with RENAME_NOREPLACE, so an id that got past this into ready/ still
        never runs twice at once: see the CLASH answer.)"""
        if job_id not in self._live:
            return False
        try:
            self.spool.find(job_id, (ACTIVE, READY, DELAYED))
        except JobNotFound:
            self._live.discard(job_id)
            return False
        return True

    def _task(self, name: str) -> Task | None:
        return self.registry.tasks.get(name) or (self.registry.get(name) if name in self.registry else None)

    def _fail_unrun(self, path: Any, job: Job, exc_type: str, message: str, now: datetime) -> None:
        """Fail a job that never ran (unknown task, duplicate id, expired): record it in
        ``failed/`` with the error, then remove ``path``.  If that cannot be done now, the
        job stays where it is (met again later) and the step backs off."""
        mono = time.monotonic()
        if not self.faults.ready(TO_FAILED, mono):
            return
        failed = job.with_error(make_error(exc_type, message, "", attempt=job.retries, at=now))
        try:
            self.spool.record(path, FAILED, job_name(FAILED, failed, now), failed)
        except (OSError, SpoolError) as exc:
            self.faults.failed(TO_FAILED, f"{job.id} {job.task}: cannot record it as failed ({exc}); it stays "
                               f"in {os.path.basename(os.path.dirname(path))}/", mono)  # fmt: skip
            return
        if self.faults:
            self.faults.ok(TO_FAILED, mono)
        self._progress_at = mono
        self.counts["failed"] += 1
        log.error("%s %s: failed: %s: %s", job.id, job.task, exc_type, message)
        self._emit("failed", failed, message)

    def _reject(self, path: Any, reason: str, now: datetime) -> None:
        mono = time.monotonic()
        if not self.faults.ready(TO_FAILED, mono):
            return  # the file stays where it is, untouched; met again after the backoff
        try:
            self.spool.reject(path, reason, now)
        except FileNotFoundError:
            return
        except (OSError, SpoolError) as exc:
            # Cannot write the reason (disk full): the file stays where it is, untouched;
            # ingest meets it again later, a start or fsck deals with it elsewhere.
            self.faults.failed(TO_FAILED, f"cannot move a bad file aside ({exc}): {printable(reason)}", mono)
            return
        if self.faults:
            self.faults.ok(TO_FAILED, mono)
        self._progress_at = mono
        self.counts["rejected"] += 1
        log.error("rejected %s", printable(reason))
        self._emit("rejected", None, reason)

    # -- delayed → ready ----------------------------------------------------------------

    def promote_due(self, now: datetime) -> None:
        """Move every delayed job whose time has come into ``ready/``."""
        mono = time.monotonic()
        if not self.faults.ready(PROMOTE, mono):
            return
        moved = False
        while self._delayed and self._delayed[0][0] <= now:
            due, name = heapq.heappop(self._delayed)
            path = self.spool.file(DELAYED, name)
            job_id = parse_name(DELAYED, name)[0]
            try:
                job = self.spool.read(path)
                target = job_name(READY, job, due)
                self.spool.move(path, READY, target)
            except FileNotFoundError:
                self._live.discard(job_id or "")
                continue  # an operator removed or moved it
            except (JobFormatError, PermissionError) as exc:
                self._live.discard(job_id or "")
                self._reject(path, f"delayed/{name}: {_why(exc)}", now)
                continue
            except (OSError, SpoolError) as exc:
                heapq.heappush(self._delayed, (due, name))
                self.faults.failed(PROMOTE, f"cannot move delayed/{name} to ready/: {exc}", mono)
                return
            self._push_ready(target, job)
            moved = True
        if moved:
            self._progress_at = mono
            if self.faults:
                self.faults.ok(PROMOTE, mono)

    # -- ready → active → pool ----------------------------------------------------------

    def dispatch(self, now: datetime) -> None:
        """Claim ready jobs in order (rename into ``active/``) and hand them to children
        with room, one per child per round so idle children are served first."""
        mono = time.monotonic()
        if not self.faults.ready(CLAIM, mono):
            return
        if self._ready_spilled and len(self._ready) < READY_WINDOW // 2:
            try:
                self._refill_ready()
            except (OSError, SpoolError) as exc:
                self.faults.failed(CLAIM, f"cannot list ready/: {exc}", mono)
                return
        while self._ready:
            slots = self.pool.free()
            if not slots:
                return
            for slot in slots:
                job = None
                while job is None and self._ready and self.faults.ready(CLAIM, mono):
                    name = heapq.heappop(self._ready)
                    job = self._take(name, now)
                if job is None:
                    return
                self._submit(slot, job, name)

    def _submit(self, slot: Any, job: Job, name: str) -> None:
        """Hand a job to a child, which claims it from ``ready/<name>`` (a dead child's
        unclaimed jobs come back through :meth:`Pool.collect`)."""
        task = self._task(job.task)
        soft = (task.soft_time_limit if task else None) or self.soft_time_limit
        hard = job.time_limit or (task.time_limit if task else None) or self.time_limit
        # A success that keeps no result is the child's to remove (see runner.py).
        ttl = job.result_ttl if job.result_ttl is not None else (task.result_ttl if task else None)
        self.pool.submit(slot, job, name, soft_limit=soft, hard_limit=hard, discard=ttl is None)
        self._emit("started", job, "")
        if log.isEnabledFor(logging.INFO):
            log.info("%s %s: started (attempt %d)", job.id, job.task, job.retries + 1)

    def _push_ready(self, name: str, job: Job | None = None) -> None:
        """Index a file that just landed in ``ready/``, unless it sorts after the window."""
        if self._ready_bound is not None and name > self._ready_bound:
            self._ready_spilled = True  # on disk only, found again by _refill_ready
            return
        heapq.heappush(self._ready, name)
        self._live.add(name[READY_ID_AT:-5])
        if job is not None and len(self._parsed) < PARSED_CACHE_MAX:
            self._parsed[name] = job
        if self._ready_bound is None and len(self._ready) > READY_WINDOW:
            # Too many to index: keep the first READY_WINDOW names and leave the rest on disk.
            self._refill_ready()

    def _refill_ready(self) -> None:
        """Index the first :data:`READY_WINDOW` names of ``ready/`` in dispatch order.

        With a million jobs queued, indexing them all would cost hundreds of MB; instead the
        index holds a window and remembers its largest name (``_ready_bound``): a new arrival
        that sorts before it (a higher priority, say) joins the window, later ones wait on
        disk.  Everything indexed sorts before everything spilled, so order is kept, and one
        listing of ``ready/`` per half window drained refills it.
        """
        room = READY_WINDOW - len(self._ready)
        if room < 0:  # the window overflowed: keep its first names, the rest wait on disk
            self._ready = heapq.nsmallest(READY_WINDOW, self._ready)  # a sorted list is a heap
            self._ready_spilled = True
        else:
            indexed = set(self._ready)
            # A cheap filter: a foreign name that slips through is refused by _claim.
            names = (n for n in self.spool.names(READY) if n.endswith(".json") and n not in indexed)
            extra = heapq.nsmallest(room + 1, names)  # one more than fits, to learn whether more remain
            self._ready_spilled = len(extra) > room
            for name in extra[:room]:
                heapq.heappush(self._ready, name)
                self._live.add(name[READY_ID_AT:-5])
        self._ready_bound = max(self._ready) if self._ready_spilled and self._ready else None
        if self._ready_spilled:
            keep = set(self._ready)
            self._parsed = {k: v for k, v in self._parsed.items() if k in keep}

    def _take(self, name: str, now: datetime) -> Job | None:
        """The job of ``ready/<name>``, to hand to a child (which claims it); None if there
        is nothing to run: gone, not a job (rejected), or expired (failed)."""
        cached = self._parsed.pop(name, None)
        if cached is not None:  # a name this loop made: read and checked at ingest
            job = cached
        else:  # indexed from a listing (a refill, a restart): read and check it now
            job_id = parse_name(READY, name)[0]
            if job_id is None:
                return None
            path = self.spool.file(READY, name)
            try:
                job = self.spool.read(path)
            except FileNotFoundError:
                self._live.discard(job_id)
                return None
            except (JobFormatError, PermissionError) as exc:
                self._live.discard(job_id)
                self._reject(path, f"ready/{name}: {_why(exc)}", now)
                return None
            except OSError as exc:  # the disk failed the read: the job waits, untouched
                heapq.heappush(self._ready, name)
                self.faults.failed(CLAIM, f"cannot read ready/{name}: {exc}", time.monotonic())
                return None
            if job.id != job_id:
                self._reject(path, f"ready/{name}: its content says id {job.id!r}", now)
                self._live.discard(job_id)
                return None
        if job.is_expired(now):
            self._live.discard(job.id)
            try:
                self._fail_unrun(self.spool.file(READY, name), job, "Expired", f"expired at {job.expires}", now)
            except FileNotFoundError:
                pass
            return None
        return job

    # -- outcomes -----------------------------------------------------------------------

    def _collect_and_settle(self, now: datetime, ready: set[int] | None = None) -> None:
        ended = self.pool.collect(ready)
        requeue, self.pool.requeue = self.pool.requeue, []
        for job, name in requeue:
            self._unassign(job, name, "its worker died before it started it")
        if ended:
            self.spool.touched(READY, ACTIVE)  # the children's claims and discards
        mono = time.monotonic()
        if self._unsettled:
            if not self.faults.ready(SETTLE, mono):
                # Answers that need no write (a success the child removed) are still told now.
                self._unsettled.extend(e for e in ended if not _needs_no_write(e[1]))
                ended = [e for e in ended if _needs_no_write(e[1])]
            else:
                ended, self._unsettled = self._unsettled + ended, []
        failed = False
        for job, outcome, name in ended:
            try:
                self._settle_answer(job, outcome, name, now)
            except (OSError, SpoolError) as exc:  # SpoolError: a write failed (disk full)
                self._unsettled.append((job, outcome, name))
                self.faults.failed(SETTLE, f"{job.id} {job.task}: cannot record its outcome ({exc}); it stays in "
                                   "active/", mono)  # fmt: skip
                failed = True
        if ended and not failed:
            self._progress_at = mono
            if self.faults and not self._unsettled:
                self.faults.ok(SETTLE, mono)

    def _settle_answer(self, job: Job, outcome: Outcome, name: str, now: datetime) -> None:
        """Act on one child's answer (or death) about the job it was given as ``ready/<name>``."""
        kind = outcome.kind
        if kind == SUCCESS and outcome.discarded:  # the child removed it already
            self._live.discard(job.id)
            self.counts["succeeded"] += 1
            if log.isEnabledFor(logging.INFO):
                log.info("%s %s: succeeded in %.3f s", job.id, job.task, outcome.duration_s)
            self._emit("succeeded", job, "")
        elif kind in (GONE, UNCLAIMED):
            # Not run.  Gone means ready/<name> was not there; if it is, the claim failed
            # for another reason: the job waits, indexed again, while claims back off.
            if self._requeue(job, name):
                self.faults.failed(CLAIM, f"{job.id} {job.task}: {outcome.message}", time.monotonic())
            else:
                self._live.discard(job.id)
                log.warning("%s %s: not run: %s", job.id, job.task, outcome.message)
        elif kind == CLASH:  # the same id got into ready/ while running: a duplicate
            self._fail_unrun(self.spool.file(READY, name), job, "DuplicateJob", outcome.message, now)
        elif kind == DIED and not self.spool.has(ACTIVE, f"{job.id}.json"):
            # Not claimed yet (still in ready/), or claimed, run and discarded just before
            # the child died: nothing was left half done.
            if not self._requeue(job, name):
                self._live.discard(job.id)
                log.info("%s %s: finished, then its worker died (%s)", job.id, job.task, outcome.message)
        else:
            if self.faults:
                self.faults.ok(CLAIM, time.monotonic())  # the child claimed it: claims work
            self.settle(job, outcome, now)

    def settle(self, job: Job, outcome: Outcome, now: datetime) -> None:
        """Record what a run produced and move the job to its next state."""
        decision = decide(job, outcome, self._task(job.task), now, self.rnd)
        action, record = decision.action, decision.job
        reason = decision.reason
        if action != DELETE:
            size = len(record.to_json())
            if size > self.spool.record_limit:
                # Only a kept result or a retry's new arguments can grow a job this much (the
                # error history is bounded): fail it with its original arguments instead.
                what = "its result" if action == KEEP else "the arguments of its retry"
                message = (f"{what} would make the job file {size} bytes, over the limit of "
                           f"{self.spool.record_limit} bytes (max_job_size {self.spool.max_job_size})")  # fmt: skip
                action, record = FAIL, job.with_error(make_error("JobTooLarge", message, "", attempt=job.retries,
                                                                 at=now))  # fmt: skip
                reason = f"JobTooLarge: {message}"
        self._settle_decision(job, action, record, decision.due, now, reason)

    def _settle_decision(self, job: Job, action: str, record: Job, due: datetime | None, now: datetime,
                         reason: str) -> None:  # fmt: skip
        active = self.spool.file(ACTIVE, f"{job.id}.json")
        if action == DELETE:
            try:
                self.spool.discard(active)
            except FileNotFoundError:
                log.warning("%s %s: was no longer in active/ when it ended (removed by hand?)", job.id, job.task)
        elif action == KEEP:
            self.spool.write(DONE, f"{job.id}.json", record, replace=True)
            try:
                self.spool.remove(active)
            except FileNotFoundError:
                pass
        elif action == DELAY:
            assert due is not None
            if due <= now:
                name = job_name(READY, record, due)
                self.spool.record(active, READY, name, record)
                self._push_ready(name, record)
            else:
                name = job_name(DELAYED, record, due)
                self.spool.record(active, DELAYED, name, record)
                heapq.heappush(self._delayed, (due, name))
            self.counts["retried"] += 1
            log.warning("%s %s: %s", job.id, job.task, reason)
            self._emit("retry", record, reason)
            return
        else:
            assert action == FAIL
            self.spool.record(active, FAILED, job_name(FAILED, record, now), record)
            self._live.discard(job.id)
            self.counts["failed"] += 1
            log.error("%s %s: failed: %s", job.id, job.task, reason)
            self._emit("failed", record, reason)
            return
        self._live.discard(job.id)
        self.counts["succeeded"] += 1
        log.info("%s %s: %s", job.id, job.task, reason)
        self._emit("succeeded", record, reason)

    # -- results ------------------------------------------------------------------------

    def prune_results(self, now: datetime) -> None:
        """Remove kept results whose time is up."""
        try:
            for e in self.spool.scan(DONE):
                try:
                    job = self.spool.read(e.path)
                except (JobFormatError, OSError):
                    continue
                if job.result_expires is not None and job.result_expires <= now:
                    try:
                        self.spool.remove(e.path)
                    except OSError:
                        continue
        except (OSError, SpoolError) as exc:
            log.error("cannot list done/ to remove expired results (tried again in %.0f s): %s", PRUNE_INTERVAL_S, exc)

    def _emit(self, event: str, job: Job | None, detail: str) -> None:
        if self.on_event is not None:
            try:
                self.on_event(event, job, detail)
            except Exception:  # noqa: BLE001 - a display hook must not stop the queue
                log.exception("event hook failed")



def _needs_no_write(outcome: Outcome) -> bool:
    """Whether settling this answer writes nothing (a success its child removed already)."""
    return outcome.kind == SUCCESS and outcome.discarded


def _why(exc: BaseException) -> str:
    """The reason a file cannot be taken, for its ``.reason`` file."""
    if isinstance(exc, PermissionError):
        return f"cannot read it: {exc.strerror} (moved aside unread)"
    return str(exc)


def run_worker(*args: Any, **kwargs: Any) -> int:
    """``spoolq worker``'s entry; see :func:`spoolq.worker.run_worker`."""
    from .worker import run_worker as _run_worker

    return _run_worker(*args, **kwargs)


__all__ = ["Supervisor", "run_worker"]
