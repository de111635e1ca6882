"""Taking jobs in: the pass over ``new/``, the only directory producers write.

Each file is read and validated once: a due job moves to ``ready/``, a future one to
``delayed/``; one that is not a job is rejected into ``failed/`` with the reason, one whose
task is unknown or whose id is already queued is failed unrun.  One bad file never stops the
others.  A pass lists ``new/`` once, through a cursor, and is taken in over many ticks in
short slices, so that collecting answers and feeding children never wait behind a thousand
reads; at most :data:`READY_BACKLOG` jobs are kept ready ahead of the children, the rest
wait in ``new/`` at no cost in memory.  The first pass, at start, is taken whole, so that
what was queued before the start is dispatched in priority order.

Filesystem events only hint that a pass is worth making now; a rescan every
``rescan_interval`` seconds is the safety net.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import stat
import threading
from collections.abc import Iterable
from datetime import datetime

from .bookkeeping import INGEST, Bookkeeper
from .clock import Clock
from .errors import HardLinked, JobFormatError, JobGone, SpoolError
from .faults import Faults
from .index import Index
from .job import Job
from .layout import DELAYED, NEW, READY, TMP, job_name, printable
from .recovery import tmp_twin
from .registry import Registry
from .replay import drop_replayed_copy
from .spool import Spool
from .syscalls import O_READ

log = logging.getLogger("spoolq.supervisor")

INGEST_BATCH = 1000  # names listed from new/ at once
INGEST_SLICE_S = 0.0005  # a tick's share of reading, once running
READY_BACKLOG = 5000  # with this many ready, intake only keeps pace with dispatch
# A Maildir-style producer (another language's, or spoolq before it renamed) may link its
# file into new/ and then unlink the temporary name; between the two the file has two
# links.  Only a link count that stays above one this long means a hard link to a file
# elsewhere, which is refused unread.
LINK_GRACE_S = 2.0
# A job file read slower than this came from the disk, not from memory: the rest of the pass
# is read ahead in parallel (see Readahead).
SLOW_READ_S = 0.0005


class Intake:
    """The pass over ``new/``.

    Parameters:
        spool, registry, index, books, faults, clock: the supervisor's.
        rescan_interval_s: seconds between passes when no event says to look.
    """

    def __init__(
        self,
        spool: Spool,
        registry: Registry,
        index: Index,
        books: Bookkeeper,
        faults: Faults,
        clock: Clock,
        *,
        rescan_interval_s: float,
    ) -> None:
        self.spool = spool
        self.registry = registry
        self.index = index
        self.books = books
        self.faults = faults
        self.clock = clock
        self.rescan_interval_s = rescan_interval_s
        self.signalled = True  # something may have arrived: start a pass at the next chance
        self.next_pass_at = 0.0  # monotonic time of the next rescan
        self._cursor = spool.cursor(NEW)
        self._pending: list[str] = []  # names listed, not yet taken in (reversed)
        self._more = False  # the current pass has more names
        self._cold = False  # this pass reads its files from the disk
        self._slow_reads = 0.0  # moving share of recent reads slower than SLOW_READ_S
        self._readahead: Readahead | None = None
        self._whole = True  # the next pass is taken whole (the first, at start)
        self._linked: dict[str, float] = {}  # new/ names with two links, and when first seen

    def room(self, stopping: bool = False) -> int:
        """How many more due jobs to take in now from what this pass still holds: up to
        :data:`READY_BACKLOG` ready (0 when the pass is over or taking in backs off)."""
        if stopping or not (self._pending or self._more):
            return 0
        if not self.faults.ready(INGEST, self.clock.mono()):
            return 0
        return max(0, READY_BACKLOG - len(self.index))

    def waiting(self) -> bool:
        """Whether ``new/`` holds anything (True when that cannot be told: intake's own
        failures say why, and ``--burst`` gives up on them)."""
        try:
            return bool(self.spool.names(NEW, limit=1))
        except SpoolError:
            return True

    def due(self) -> bool:
        """Whether :meth:`take` has something to do now."""
        return self.signalled or self.clock.mono() >= self.next_pass_at or self.room() > 0

    def take(self, now: datetime) -> None:
        """Take in part of a pass over ``new/`` (see the module's docstring)."""
        mono = self.clock.mono()
        self.next_pass_at = mono + self.rescan_interval_s
        if not self.faults.ready(INGEST, mono):
            return
        pending = self._pending
        if not pending:
            if not self._more:  # a new pass: what was signalled until now will be seen
                self.signalled = False
                self._cold = False
            try:
                listed, self._more = self._cursor.take(INGEST_BATCH)
            except SpoolError as exc:
                self._more = False
                self.faults.failed(INGEST, f"cannot list new/: {exc}", mono)
                return
            if self._cold:
                self._read_ahead(listed)
            pending.extend(reversed(listed))
        room = self.room()
        end = float("inf") if self._whole else mono + INGEST_SLICE_S
        self._whole = False
        took = False
        while pending and room > 0:
            name = pending.pop()
            try:
                room -= self._take_one(name, now)
            except SpoolError as exc:  # a move or a write failed (disk full, read-only...)
                pending.append(name)
                self.faults.failed(INGEST, f"cannot take in new/{printable(name)}: {exc}", self.clock.mono())
                return
            took = True
            if self.clock.mono() >= end:
                break
        if took and self.faults:
            self.faults.ok(INGEST, self.clock.mono())
        if pending or self._more:
            # More to take in: the next tick goes on, or, with enough ready, in 50 ms.
            wait = 0.0 if self.room() > 0 else min(self.rescan_interval_s, 0.05)
            self.next_pass_at = self.clock.mono() + wait

    def _take_one(self, name: str, now: datetime) -> int:
        """Take in ``new/<name>``; 1 if it was a due job (moved to ``ready/``), else 0."""
        job = self._read(name, now)
        if job is None:
            return 0
        self._linked.pop(name, None)
        drop_replayed_copy(self.spool, job)  # sent back by `spoolq retry`: no stale copy to replay again
        if job.task not in self.registry:
            self.books.fail_unrun(NEW, name, job, "TaskNotFound", f"no task named {job.task!r} is registered", now)
            return 0
        if self.index.is_queued(job.id):
            self.books.fail_unrun(NEW, name, job, "DuplicateJob", f"a job with id {job.id!r} is already queued", now)
            return 0
        self.books.count("received", job)
        return self._place(name, job, now)

    def _read(self, name: str, now: datetime) -> Job | None:
        """The job in ``new/<name>``, or None when there is none to take in now (gone, set
        aside with the reason, or a hard link still in its grace period).  Raises SpoolError
        when the disk, not the file, is at fault."""
        t0 = self.clock.mono()
        try:
            try:
                job = self.spool.read(NEW, name)
            except HardLinked as exc:
                if self._still_linked(name, exc.stat):
                    return None
                job = self.spool.read(NEW, name)  # its other name was a producer's leftover, now removed
        except JobGone:
            return None
        except JobFormatError as exc:
            self.books.reject(NEW, name, f"new/{name}: {exc}", now)
            return None
        except SpoolError as exc:
            if exc.errno != errno.EACCES:
                raise
            self.books.reject(NEW, name, f"new/{name}: cannot read it: permission denied (moved aside unread)", now)
            return None
        # Most recent reads slow (not one preempted read): read the rest of this pass ahead.
        self._slow_reads = 0.9 * self._slow_reads + (0.1 if self.clock.mono() - t0 > SLOW_READ_S else 0.0)
        if self._slow_reads > 0.5 and not self._cold:
            self._cold = True
            self._read_ahead(reversed(self._pending))
        return job

    def _place(self, name: str, job: Job, now: datetime) -> int:
        """Move a valid job out of ``new/`` into ``ready/`` or ``delayed/``; 1 if it is due."""
        if job.is_due(now):
            target = job_name(READY, job)
            self.spool.move(NEW, name, READY, target)
            self.index.push_ready(target, job)
            due = 1
        else:
            assert job.eta is not None
            target = job_name(DELAYED, job, job.eta)
            self.spool.move(NEW, name, DELAYED, target)
            self.index.push_delayed(job.eta, target, job.id)
            due = 0
        self.books.moved()
        if log.isEnabledFor(logging.INFO):
            log.info("%s %s: received into %s", job.id, job.task, target)
        return due

    def _still_linked(self, name: str, st: os.stat_result) -> bool:
        """Whether a file of ``new/`` with two names must wait: a producer of an older
        spoolq (link, then unlink) between its two steps, for :data:`LINK_GRACE_S`."""
        twin = tmp_twin(self.spool, st)
        if twin is not None:  # its producer died between link and unlink: delivered whole
            try:
                self.spool.remove(TMP, twin)
                st = self.spool.lstat(NEW, name)
            except JobGone:
                pass
        if st.st_nlink > 1:
            mono = self.clock.mono()
            first = self._linked.setdefault(name, mono)
            if mono - first < LINK_GRACE_S:
                # Look again soon: the producer's unlink sends no event here.
                self.next_pass_at = min(self.next_pass_at, mono + 0.1)
                return True
        return False

    def _read_ahead(self, names: Iterable[str]) -> None:
        if self._readahead is None:
            self._readahead = Readahead(self.spool.max_job_size)
        self._readahead.put(self.spool.dirs.at(NEW, n) for n in names)

    def close(self) -> None:
        """End the pass and stop the read-ahead threads."""
        self._cursor.close()
        if self._readahead is not None:
            self._readahead.close()
            self._readahead = None


class Readahead:
    """A few threads that bring files intake is about to read into memory, in parallel.

    A job that waited long enough in a big backlog may have left the page cache; then each
    read waits on the disk (~0.7 ms on the dev VM) and the supervisor, reading one file at a
    time, is held up by that alone.  These threads only look: ``lstat`` (which loads the
    inode) and, for a regular file within the size limit, an ``O_NOFOLLOW`` open and
    ``posix_fadvise(WILLNEED)``, so the disk serves several at once and the supervisor's
    own read finds them in memory.
    """

    def __init__(self, max_size: int, threads: int = 4) -> None:
        self._max = max_size
        self._queue: queue.SimpleQueue[tuple[str, int | None] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, name="spoolq-readahead", daemon=True) for _ in range(threads)
        ]
        for t in self._threads:
            t.start()

    def put(self, where: Iterable[tuple[str, int | None]]) -> None:
        """Read these ``(name, directory fd)`` ahead (the fds stay open meanwhile)."""
        for w in where:
            self._queue.put(w)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            name, dir_fd = item
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode) or st.st_size > self._max:
                    continue
                fd = os.open(name, O_READ, dir_fd=dir_fd)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
                finally:
                    os.close(fd)
            except OSError:
                continue  # gone already, or not readable: intake says why when it gets there

    def close(self) -> None:
        """Stop the threads."""
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(5)
