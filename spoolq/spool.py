"""Jobs moving between the spool's states: the disk object the rest of spoolq uses.

Built on :class:`spoolq.store.Store` (bytes in named files), this adds what a job's life
needs: delivering into ``new/`` (the acknowledgement), reading and writing job records,
recording an outcome before the copy it replaces goes (STYLE habit 4), failing a job,
claiming and requeueing, discarding a finished job, and moving what is not a job aside with
its reason.  Every failure is a :class:`~spoolq.errors.SpoolError` (see :mod:`spoolq.store`).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Iterable
from datetime import datetime

from .dirs import os_error
from .errors import DuplicateJob, JobGone, JobNotFound, JobTooLarge, NameTaken, SpoolError
from .job import Job
from .layout import (
    ACTIVE,
    DONE,
    FAILED,
    NEW,
    READY,
    STATES,
    TMP,
    bad_name,
    discarded_name,
    job_name,
    plain_name,
    printable,
    reason_name,
    timed_name,
)
from .store import DEFAULT_MAX_JOB_SIZE, Entry, Store
from .syscalls import O_DIR, rename_noreplace, sync_filesystem

__all__ = ["DEFAULT_MAX_JOB_SIZE", "Entry", "Spool"]
log = logging.getLogger("spoolq.spool")


class Spool(Store):
    """A spool directory, as jobs see it; parameters as :class:`~spoolq.store.Store`."""

    _trash: _Trash | None = None

    def find(self, job_id: str, states: Iterable[str] = STATES) -> Entry:
        """The entry of a job by id, searching the given states in order.

        Raises:
            JobNotFound: in none of them.
        """
        for state in states:
            if state in (NEW, ACTIVE, DONE):
                name = plain_name(job_id)
                if self.has(state, name):
                    return Entry(state, name, job_id, None, self.path_of(state, name))
                continue
            for e in self.scan(state):
                if e.job_id == job_id:
                    return e
        raise JobNotFound(job_id)

    def _encode(self, job: Job) -> bytes:
        data = job.to_json()
        if len(data) > self.max_job_size:
            raise JobTooLarge(job.id, len(data), self.max_job_size)
        return data

    def publish(self, job: Job) -> str:
        """Deliver one job into ``new/``; see :meth:`deliver`.  Returns its name there."""
        return self.deliver([job])[0]

    def deliver(self, jobs: Iterable[Job], *, fresh_ids: bool = False) -> list[str]:
        """Deliver jobs into ``new/`` atomically and durably: the enqueue is acknowledged
        when this returns.  Many jobs share one durability barrier; each is all-or-nothing.

        Every job is encoded and size-checked before anything is written.  With fsync on and
        several jobs, the files are written unflushed, the filesystem is flushed once
        (``syncfs``), then each is renamed into ``new/`` and the directory is flushed once; no
        job is visible before its bytes are on disk.  On an error, the jobs published before
        it stay published; the failing one and those after it leave nothing behind.

        Parameters:
            fresh_ids: the ids were just generated (a random one cannot be running: the
                ``active/`` check is skipped).
        Returns:
            The names in ``new/``, in order.
        Raises:
            JobTooLarge: a job is over ``max_job_size``.
            DuplicateJob: a job with this id is in ``new/`` or ``active/`` (two producers
                racing on one id: exactly one wins).
            SpoolError: the write failed (disk or inodes full, read-only, permissions).
        """
        self.ensure()
        encoded = [(job, self._encode(job)) for job in jobs]
        bulk = self.fsync and len(encoded) > 1
        out: list[str] = []
        tmps: list[str] = []
        # One new/ directory for this call: the entries are flushed where they were made,
        # even if the spool is replaced meanwhile.
        own = not self.dirs.bound
        try:
            new_fd = os.open(f"{self._root}/{NEW}", O_DIR) if own else self.dirs.fd(NEW)
        except OSError as exc:
            raise os_error(exc, f"cannot deliver to spool {self.path}") from None
        try:
            for job, data in encoded:
                if not fresh_ids and self.has(ACTIVE, plain_name(job.id)):
                    raise DuplicateJob(job.id, ACTIVE)
                tmps.append(self._write_tmp(data, flush=not bulk))
            if bulk:
                sync_filesystem(new_fd)
            for (job, _), tmp in zip(encoded, tmps, strict=True):
                src, src_fd = self.dirs.at(TMP, tmp)
                try:
                    rename_noreplace(src, plain_name(job.id), src_fd, new_fd)
                except FileExistsError:
                    raise DuplicateJob(job.id, NEW) from None
                out.append(plain_name(job.id))
        except OSError as exc:
            raise os_error(exc, f"cannot deliver to spool {self.path}") from None
        finally:
            for tmp in tmps[len(out) :]:  # not delivered; a delivered one has no tmp/ name left
                self._unlink_quietly(TMP, tmp)
            try:
                if out and self.fsync:  # those delivered before an error are acknowledged too
                    os.fsync(new_fd)
            except OSError as exc:
                raise os_error(exc, f"cannot flush spool {self.path}") from None
            finally:
                if own:
                    os.close(new_fd)
        return out

    def write(self, state: str, name: str, job: Job, *, replace: bool = False) -> None:
        """Write ``job`` as a new file ``state/name``, flushed with its directory before this
        returns (a record is durable before the caller removes the copy it replaces).

        Raises:
            NameTaken: ``state/name`` exists and ``replace`` is false (nothing written).
            SpoolError: the write failed.
        """
        self.write_bytes(state, name, job.to_json(), replace=replace)

    def record(self, state: str, name: str, to_state: str, to_name: str, job: Job) -> None:
        """Write ``job`` as ``to_state/to_name``, then remove ``state/name``, the copy it
        replaces: an outcome recorded (STYLE habit 4).  A copy already gone (removed by
        hand) counts as removed.  If the copy cannot be removed, the new record is removed
        again before the error is raised, so a step that fails this way and is tried later
        leaves one record, not one per try.

        Raises:
            NameTaken: ``to_state/to_name`` exists (nothing written).
            SpoolError: the write or the removal failed (nothing left of the record).
        """
        self.write(to_state, to_name, job)
        try:
            self.remove(state, name)
        except JobGone:
            pass
        except SpoolError:
            try:
                self._at_unlink(to_state, to_name)
                self._sync_dir(to_state)
            except (OSError, SpoolError):  # pragma: no cover - the disk refuses both: recovery sorts it out
                log.error("cannot remove %s/%s again after a failed move; spoolq fsck reports it", to_state, to_name)
            raise

    def fail(self, state: str, name: str, job: Job, now: datetime) -> str:
        """Record ``job`` (its last error already in its history) in ``failed/`` and remove
        ``state/name``; returns its name in ``failed/``.  Raises as :meth:`record`."""
        failed = timed_name(job.id, now)
        self.record(state, name, FAILED, failed, job)
        return failed

    def read(self, state: str, name: str) -> Job:
        """Read and validate a job file; see :meth:`read_bytes` for what is refused."""
        return Job.from_json(self.read_bytes(state, name))

    def claim(self, ready: str, job_id: str) -> None:
        """A pool child takes the job ``ready/<ready>`` to run it: into ``active/<id>.json``.
        Raises JobGone (not there), NameTaken (the id is running already), SpoolError."""
        self.move(READY, ready, ACTIVE, plain_name(job_id))

    def requeue(self, job: Job) -> str:
        """Put ``active/<id>.json`` back into ``ready/`` (a run that did not end: a crash, a
        shutdown); returns its name there.  Raises JobGone, SpoolError."""
        name = job_name(READY, job)
        self.move(ACTIVE, plain_name(job.id), READY, name)
        return name

    def discard(self, state: str, name: str) -> None:
        """Take a finished job out of its state now and unlink it in the background.

        Freeing a file's blocks can cost milliseconds (the journal, online discard) while a
        rename costs microseconds, so the state change is a rename into ``tmp/`` (where no
        one but its writer reads) and a helper thread does the unlink.  A crash before that
        leaves a file in ``tmp/`` that the next start sweeps; never a job to run again.
        """
        trash = discarded_name(time.time_ns(), os.getpid(), name)
        self._rename(state, name, TMP, trash, replace=True)
        self._dirty.add(state)
        if self._trash is None or self._pid != os.getpid():
            self._pid, self._trash = os.getpid(), _Trash()
        self._trash.put(self.dirs.at(TMP, trash))

    def reject(self, state: str, name: str, reason: str, now: datetime) -> str:
        """Move something that is not a valid job into ``failed/`` untouched, with the reason
        beside it; returns its name there.

        The original is renamed, never read or rewritten: it may be a FIFO, a directory or a
        symlink pointing outside the spool (renaming moves the link, not its target).  Its
        name may be any bytes; the reason file says it readably.  Raises JobGone, SpoolError.
        """
        text = (printable(reason.rstrip()) + "\n").encode("utf-8")
        for n in range(1000):
            bad = bad_name(now, name, n)
            try:
                self.write_bytes(FAILED, reason_name(bad), text)
            except NameTaken:
                continue
            try:
                self.move(state, name, FAILED, bad)
            except BaseException:
                self._unlink_quietly(FAILED, reason_name(bad))
                raise
            return bad
        raise SpoolError(f"cannot find a free name in failed/ for {printable(name)!r}")  # pragma: no cover

    def close(self) -> None:
        """Finish pending background unlinks, then release the directories."""
        if self._trash is not None:
            self._trash.close()
            self._trash = None
        super().close()


class _Trash:
    """A daemon thread that unlinks discarded files off the supervisor's hot path."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[str, int | None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="spoolq-trash", daemon=True)
        self._thread.start()

    def put(self, where: tuple[str, int | None]) -> None:
        """Unlink ``(name, directory fd)`` (or ``(path, None)``) soon; the fd stays open
        until :meth:`close` returns."""
        self._queue.put(where)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                os.unlink(item[0], dir_fd=item[1])
            except OSError:
                pass  # already gone, or the disk is unhappy: the tmp/ sweep removes it later

    def close(self, timeout_s: float = 10.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout_s)
