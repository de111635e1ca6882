"""The pool: N child processes, each running one job at a time.

Children are started through ``multiprocessing``'s forkserver, with the task modules
preloaded, so a replacement starts in milliseconds and inherits none of the supervisor's file
descriptors (its spool lock in particular).  Each child has a duplex pipe; the supervisor waits
on the pipes and on the process sentinels at once, so an answer and a death are both seen
without polling.  A dead child fails (or retries) only its own job and is replaced.

Each child leads its own process group, killed whole (see :mod:`spoolq.procs`).  Time is
the injected clock's: a test steps it past a job's limit and sees the child killed.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from .clock import Clock, SystemClock
from .job import Job
from .procs import FORKSERVER_EOF, FORKSERVER_LOST, await_forkserver_exit, forkserver_dying, kill_group, kill_leftovers
from .protocol import Answer, JobMessage, Kind, frame, unframe
from .runner import child_main

# Jobs a child may hold at once while jobs are short (see Pool.capacity).
PREFETCH = 16
PREFETCH_BELOW_S = 0.005

# How long a task that does not stop at its soft time limit is given before it is killed,
# unless configured (``soft_time_limit_grace``).
SOFT_LIMIT_GRACE_S = 30.0

Limit = tuple[float, str]  # (seconds after the job starts, why the child is killed then)


def job_limit(soft_s: float | None, hard_s: float | None, grace_s: float) -> Limit | None:
    """When a job's child is killed, and the cause to record: at the hard limit, or at the
    soft limit plus the grace, whichever comes first (None: never).

    A soft limit only raises inside the task, which can catch it, ignore SIGALRM or sit in C
    code; without this deadline such a task would hold its pool child for ever.
    """
    limits = []
    if hard_s:
        limits.append((hard_s, f"hard time limit ({hard_s:g} s) exceeded"))
    if soft_s:
        limits.append(
            (
                soft_s + grace_s,
                f"soft time limit ({soft_s:g} s) exceeded and the task did not stop within {grace_s:g} s of grace",
            )
        )
    return min(limits, key=lambda limit: limit[0]) if limits else None


@dataclass
class Slot:
    """One child process and the jobs handed to it, the running one first.

    A job handed to a child stays in ``ready/`` until the child claims it (renames it into
    ``active/``) just before running it.  Jobs behind the first are prefetched: in the
    child's pipe, not yet claimed, so when the child dies they are simply still ready; only
    the first can have been claimed, and only it is charged.
    """

    index: int
    process: Any = None
    conn: Connection | None = None
    sock: socket.socket | None = None  # the same pipe, for non-blocking reads of answers
    buf: bytearray = field(default_factory=bytearray)  # answer bytes not yet a whole frame
    outbox: bytearray = field(default_factory=bytearray)  # jobs handed over, sent by Pool.flush
    queue: deque[tuple[Job, Limit | None, str]] = field(default_factory=deque)  # (job, limit, ready/ name)
    started: float = 0.0  # monotonic seconds the first job started
    deadline: float | None = None  # monotonic seconds when the first job's child is killed
    limit: Limit | None = None
    tasks_done: int = 0
    killed_for: str = ""  # set when the supervisor killed the child, for the outcome

    @property
    def busy(self) -> bool:
        return bool(self.queue)

    @property
    def job(self) -> Job | None:
        """The job the child is running now."""
        return self.queue[0][0] if self.queue else None

    def _start_head(self, now: float) -> None:
        self.started = now
        self.limit = self.queue[0][1] if self.queue else None
        self.deadline = now + self.limit[0] if self.limit else None


@dataclass
class Pool:
    """A fixed number of child processes.

    Parameters:
        size: how many children.
        modules: task modules each child imports (the supervisor's registry's list).
        max_tasks_per_child: replace a child after this many jobs (None: never).
        soft_grace_s: seconds a job may run past its soft time limit before its child is
            killed.
    """

    size: int
    modules: list[str]
    max_tasks_per_child: int | None = None
    soft_grace_s: float = SOFT_LIMIT_GRACE_S
    spool_root: str = ""  # children claim and discard jobs in this spool
    spool_options: dict[str, Any] = field(default_factory=dict)  # its fsync, max_job_size, modes
    spool_identity: tuple[int, int] | None = None  # (st_dev, st_ino) the children check they found
    prefetch: int = PREFETCH
    slots: list[Slot] = field(default_factory=list)
    requeue: list[tuple[Job, str]] = field(default_factory=list)  # unclaimed jobs of a dead child
    avg_duration_s: float = 1.0  # moving average of job run times; starts pessimistic
    clock: Clock = field(default_factory=SystemClock)
    _retiring: list[Any] = field(default_factory=list)
    _ctx: Any = None

    def prepare(self) -> None:
        """Start the forkserver, which imports the task modules, without waiting for it: the
        supervisor's own start-up (recovery, the first read of ``new/``) runs meanwhile."""
        if self._ctx is not None:
            return
        self._ctx = multiprocessing.get_context("forkserver")
        # spoolq._forkserver makes the forkserver immune to a process-group SIGTERM.
        self._ctx.set_forkserver_preload(["spoolq._forkserver", "spoolq.runner", *self.modules])
        from multiprocessing import forkserver

        forkserver.ensure_running()

    def start(self) -> None:
        """Start every child."""
        self.prepare()
        self.slots = [Slot(i) for i in range(self.size)]
        for slot in self.slots:
            self._spawn(slot)

    def _spawn(self, slot: Slot) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=child_main,
            args=(child, self.modules, self.spool_root, self.spool_options, self.spool_identity),
            name=f"spoolq-child-{slot.index}",
            daemon=True,
        )
        proc.start()
        child.close()
        if slot.sock is not None:
            slot.sock.close()
        slot.process, slot.conn = proc, parent
        # A duplex Pipe is a socketpair: recv(MSG_DONTWAIT) on a duplicate of its descriptor
        # takes every answer waiting in one call, without a poll first and without making
        # the sending side non-blocking.
        slot.sock = socket.socket(fileno=os.dup(parent.fileno()))
        slot.buf.clear()
        slot.outbox.clear()
        slot.queue.clear()
        slot.deadline, slot.tasks_done, slot.killed_for = None, 0, ""

    def capacity(self) -> int:
        """How many jobs a child may hold: one, or a few when jobs are short.

        Prefetching hides the supervisor's round trip when jobs take microseconds; with long
        jobs it would make a job wait behind another while a child sits idle, so it is only
        used while the recent average run time is under :data:`PREFETCH_BELOW_S`.
        """
        if self.max_tasks_per_child or self.avg_duration_s >= PREFETCH_BELOW_S:
            return 1
        return self.prefetch

    def room(self) -> int:
        """How many more jobs the children can take now."""
        cap = self.capacity()
        return sum(max(0, cap - len(s.queue)) for s in self.slots)

    def free(self) -> list[Slot]:
        """The slots that can take one more job, idle ones first."""
        cap = self.capacity()
        return sorted((s for s in self.slots if len(s.queue) < cap), key=lambda s: len(s.queue))

    def handed(self) -> set[str]:
        """The ``ready/`` names handed to children and not yet answered for."""
        return {name for s in self.slots for _, _, name in s.queue}

    def busy(self) -> list[Slot]:
        """The slots running a job."""
        return [s for s in self.slots if s.busy]

    def submit(
        self, slot: Slot, job: Job, name: str, *, soft_limit: float | None, hard_limit: float | None, discard: bool
    ) -> None:
        """Hand ``job`` (``ready/<name>``) to a child with room for it; the child claims it
        when it gets to it, and with ``discard`` removes it itself if it succeeds.

        The message waits in the slot's outbox until :meth:`flush`, so that the jobs of one
        round go out in one write per child.  If the child turns out dead, its jobs are
        still in ``slot.queue``, unclaimed, and :meth:`collect` hands them back.
        """
        msg = JobMessage(
            job.id,
            job.task,
            job.args,
            job.kwargs,
            retries=job.retries,
            eta=job.eta,
            max_retries=job.max_retries,
            soft_time_limit=soft_limit,
            claim=name,
            discard=discard,
        )
        slot.outbox += frame(msg.encode())
        slot.queue.append((job, job_limit(soft_limit, hard_limit, self.soft_grace_s), name))
        if len(slot.queue) == 1:
            slot._start_head(self.clock.mono())

    def flush(self) -> None:
        """Send what :meth:`submit` queued; a child that died is left to :meth:`collect`."""
        for s in self.slots:
            if s.outbox and s.sock is not None:
                data, s.outbox = bytes(s.outbox), bytearray()
                try:
                    s.sock.sendall(data)
                except OSError:
                    pass  # dead: its sentinel fires and collect() takes its jobs back

    def waitables(self) -> list[int]:
        """The descriptors to wait on: each child's pipe and its process sentinel."""
        out: list[int] = []
        for s in self.slots:
            if s.sock is not None:
                out.append(s.sock.fileno())
            if s.process is not None:
                out.append(s.process.sentinel)
        return out

    def next_deadline(self) -> float | None:
        """The earliest time a running job's child is to be killed (monotonic seconds)."""
        deadlines = [s.deadline for s in self.slots if s.busy and s.deadline is not None]
        return min(deadlines) if deadlines else None

    def enforce_limits(self, now_mono: float) -> None:
        """Kill the children whose job ran past its limit (see :func:`job_limit`), with
        everything the job forked; :meth:`collect` then reports the death with that cause."""
        for s in self.slots:
            if s.busy and s.deadline is not None and now_mono >= s.deadline and not s.killed_for and s.limit:
                s.killed_for = s.limit[1]
                kill_group(s.process.pid)

    def collect(self, ready: set[int] | None = None) -> list[tuple[Job, Answer, str]]:
        """Read every answer and every death; replace dead or spent children.

        Parameters:
            ready: the descriptors the wait found readable (None: look at every slot,
                without blocking).
        Returns:
            ``(job, answer, ready/ name)`` for each job that ended.  The answer for a dead
            child's first job is a death; whether the child had claimed it yet is for the
            caller to find out on disk.
        """
        ended: list[tuple[Job, Answer, str]] = []
        now = self.clock.mono()
        for s in self.slots:
            if s.sock is None:
                continue
            if ready is not None and s.sock.fileno() not in ready and s.process.sentinel not in ready:
                continue
            # Read all pending answers first: a child may have answered and then died.
            spent = False
            for data in _answers(s):
                if not s.busy:
                    break  # pragma: no cover - an answer nobody asked for
                job, _, name = s.queue.popleft()
                s.tasks_done += 1
                answer = Answer.decode(data)
                ended.append((job, answer, name))
                self.avg_duration_s = 0.8 * self.avg_duration_s + 0.2 * answer.duration_s
                s._start_head(now)
                if answer.fatal:  # the child cannot go on (out of memory) and exits
                    spent = True
                    break
            if spent:
                self._requeue_rest(s)
                self._retire(s)
            elif (ready is None or s.process.sentinel in ready) and not s.process.is_alive():
                s.process.join(0)
                lost = s.process.exitcode == FORKSERVER_EOF and forkserver_dying()
                if lost:
                    # The forkserver, our only view of the child's exit, died: the child may
                    # still run.  Kill it, or its job would run twice at once once retried,
                    # and let the forkserver finish dying so that multiprocessing starts a new
                    # one instead of talking to the dead one.
                    kill_group(s.process.pid)
                    await_forkserver_exit()
                kill_leftovers(s.process.pid)
                if s.busy:
                    job, _, name = s.queue.popleft()
                    self._requeue_rest(s)
                    if lost:
                        answer = Answer(
                            Kind.DIED, exc_type="WorkerLost", message=FORKSERVER_LOST, duration_s=now - s.started
                        )
                    else:
                        answer = death(s, now)
                    ended.append((job, answer, name))
                self._replace(s)
            elif not s.busy and self.max_tasks_per_child and s.tasks_done >= self.max_tasks_per_child:
                self._retire(s)
        self._reap()
        return ended

    def _requeue_rest(self, slot: Slot) -> None:
        self.requeue.extend((job, name) for job, _, name in slot.queue)
        slot.queue.clear()

    def _replace(self, slot: Slot) -> None:
        if slot.conn is not None:
            slot.conn.close()
        self._spawn(slot)

    def _retire(self, slot: Slot) -> None:
        # Closing the pipe ends the child's loop cleanly; it is reaped later, not waited for.
        assert slot.conn is not None
        slot.conn.close()
        self._retiring.append(slot.process)
        self._spawn(slot)

    def _reap(self) -> None:
        still = []
        for proc in self._retiring:
            proc.join(0)
            if proc.exitcode is None:
                still.append(proc)
        self._retiring = still

    def kill_running(self) -> list[tuple[Job, str]]:
        """Kill the children that run a job (shutdown after the timeout); returns their jobs
        with their ``ready/`` names, which the caller puts back without charging an attempt."""
        jobs: list[tuple[Job, str]] = []
        for s in self.slots:
            if s.busy:
                kill_group(s.process.pid)
                s.process.join(5)
                jobs.extend((job, name) for job, _, name in s.queue)
                s.queue.clear()
        return jobs

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop every child: close the pipes (idle children exit), then kill stragglers."""
        for s in self.slots:
            if s.sock is not None:
                s.sock.close()
                s.sock = None
            if s.conn is not None:
                s.conn.close()
                s.conn = None
        # A real wait for real processes to exit, not a timer of the loop: the system clock.
        deadline = time.monotonic() + timeout_s
        for proc in [s.process for s in self.slots if s.process is not None] + self._retiring:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                kill_group(proc.pid)
                proc.join(1)
        self._retiring = []

    def pids(self) -> list[int]:
        """The children's pids (for logs and tests)."""
        return [s.process.pid for s in self.slots if s.process is not None]


def death(slot: Slot, now_mono: float) -> Answer:
    """The answer for a job whose child ended without answering, with the cause."""
    code = slot.process.exitcode
    if slot.killed_for:
        exc_type, message = "TimeLimitExceeded", slot.killed_for
    elif code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown"
        exc_type, message = "WorkerLost", f"pool child died: signal {-code} ({name})"
    else:
        exc_type, message = "WorkerLost", f"pool child exited with code {code}"
    return Answer(Kind.DIED, exc_type=exc_type, message=message, duration_s=now_mono - slot.started)


def _answers(slot: Slot) -> list[bytes]:
    """The whole answers a child has sent so far, read without blocking."""
    assert slot.sock is not None
    while True:
        try:
            chunk = slot.sock.recv(1 << 20, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            break  # the child is gone; its sentinel tells the rest
        if not chunk:
            break
        slot.buf += chunk
    return unframe(slot.buf)


__all__ = ["Pool", "Slot", "death", "job_limit"]
