"""Inside a pool child: claim a job, run its task, always answer.

The child speaks :mod:`spoolq.protocol` over its pipe: it receives a
:class:`~spoolq.protocol.JobMessage`, sends back an :class:`~spoolq.protocol.Answer`.  Whatever
the task does (return, raise, retry, hit its soft time limit), the answer carries the kind,
and for errors the type, message and traceback text.  Only a dead process fails to answer,
and the supervisor sees that through the process sentinel.

The child claims its job itself, renaming ``ready/<name>`` into ``active/<id>.json`` right
before running it, and when the job succeeds and keeps no result it takes it out of
``active/`` itself (:meth:`Spool.discard`): renames in parallel, next to the work.  Every
other outcome (retry, failure, kept result) is recorded by the supervisor.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import select
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Any

from .app import App
from .errors import JobGone, NameTaken, Retry, SoftTimeLimitExceeded, SpoolError, TaskNotFound
from .layout import ACTIVE, plain_name
from .protocol import Answer, JobMessage, Kind, frame
from .registry import Registry, discover
from .spool import Spool
from .syscalls import die_with_parent, set_process_name
from .task import Request, set_request

ANSWER_BATCH = 8  # answers sent together at most
ANSWER_HOLD_S = 0.001  # longest an answer waits for others


def _on_soft_limit(signum: int, frame: Any) -> None:
    # Raising here is the point: it is how a soft time limit interrupts the task's code.
    raise SoftTimeLimitExceeded("soft time limit exceeded")


def run_job(registry: Registry, msg: JobMessage) -> Answer:
    """Run one job and say what came of it (never raises)."""
    started = time.perf_counter()
    soft = msg.soft_time_limit
    try:
        task = registry.get(msg.task)
    except TaskNotFound as exc:
        return _error(exc, started, autoretry=False)
    set_request(
        Request(
            id=msg.id,
            retries=msg.retries,
            args=msg.args,
            kwargs=msg.kwargs,
            eta=msg.eta,
            max_retries=msg.max_retries,
            called_directly=False,
        )
    )
    try:
        if soft:
            signal.setitimer(signal.ITIMER_REAL, soft)
        result = task(*msg.args, **msg.kwargs)
        if soft:
            signal.setitimer(signal.ITIMER_REAL, 0)
        try:
            json.dumps(result, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"the task's return value is not JSON-serializable: {exc}") from None
        return Answer(Kind.SUCCESS, result=result, duration_s=time.perf_counter() - started)
    except Retry as retry:
        cause = retry.exc
        return Answer(
            Kind.RETRY,
            exc_type=type(cause).__name__ if cause is not None else "Retry",
            message=str(cause) if cause is not None else str(retry),
            traceback=_format(cause) if cause is not None else "",
            countdown=retry.countdown,
            eta=retry.eta,
            new_args=retry.new_args,
            new_kwargs=retry.new_kwargs,
            max_retries=retry.max_retries,
            duration_s=time.perf_counter() - started,
        )
    except MemoryError as exc:
        # Out of memory: the process, not the input, is at fault, and its heap (or a limit the
        # task set) may stay exhausted.  Answer as a death; the child then exits and is replaced.
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return Answer(
            Kind.DIED,
            exc_type=type(exc).__name__,
            message=f"pool child out of memory ({detail})",
            traceback=_format(exc),
            duration_s=time.perf_counter() - started,
            fatal=True,
        )
    except BaseException as exc:  # noqa: BLE001 - every exception, even SystemExit, is the job's outcome
        return _error(exc, started, autoretry=bool(task.autoretry_for) and isinstance(exc, task.autoretry_for))
    finally:
        if soft:
            signal.setitimer(signal.ITIMER_REAL, 0)
        set_request(None)
        sys.stdout.flush()
        sys.stderr.flush()


def _format(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _error(exc: BaseException, started: float, *, autoretry: bool) -> Answer:
    return Answer(
        Kind.ERROR,
        exc_type=type(exc).__name__,
        message=str(exc),
        traceback=_format(exc),
        autoretry=autoretry,
        duration_s=time.perf_counter() - started,
    )


def claim(spool: Spool, msg: JobMessage, refusal: str | None = None) -> Answer | None:
    """Rename the job from ``ready/`` into ``active/``; None when that worked, otherwise the
    answer that says why it was not run (``refusal``: why this child may claim nothing)."""
    name = msg.claim
    if not name:
        return None
    if "/" in name or name.startswith("."):
        raise ValueError(f"not a ready/ name: {name!r}")
    if refusal is not None:  # not the supervisor's spool (moved or replaced): touch nothing here
        return Answer(Kind.UNCLAIMED, message=f"cannot claim ready/{name}: {refusal}")
    try:
        spool.claim(name, msg.id)
    except JobGone:
        return Answer(Kind.GONE, message=f"ready/{name} was gone when a child came to claim it")
    except NameTaken:
        return Answer(Kind.CLASH, message=f"a job with id {msg.id!r} is already in active/")
    except SpoolError as exc:
        return Answer(Kind.UNCLAIMED, message=str(exc))
    return None


def handle(registry: Registry, spool: Spool, msg: JobMessage, refusal: str | None = None) -> Answer:
    """Claim, run and (for a success that keeps nothing) discard one job; its answer."""
    refused = claim(spool, msg, refusal)
    if refused is not None:
        return refused
    answer = run_job(registry, msg)
    if answer.kind is Kind.SUCCESS and msg.discard:
        try:
            spool.discard(ACTIVE, plain_name(msg.id))
        except SpoolError:
            return answer  # left in active/: the supervisor removes it when it settles the answer
        return Answer(Kind.SUCCESS, result=answer.result, duration_s=answer.duration_s, discarded=True)
    return answer


def _lead_a_group() -> None:
    """Make this child the leader of a new process group, which what its jobs fork joins.

    The supervisor kills a child with its whole group (time limits, shutdown), so that a
    task's own processes die with it rather than run on, unsupervised, beside its retry.
    """
    try:
        os.setpgid(0, 0)
    except OSError:  # pragma: no cover - only a session leader is refused, which a child is not
        pass


def _end_group() -> None:
    """SIGKILL this child's process group, the child itself included: how a child ends.

    Whatever a job forked and left running would otherwise outlive the process that
    answers for it.  Only a group this child leads (see :func:`_lead_a_group`) is killed.
    """
    if os.getpgrp() == os.getpid():
        os.killpg(0, signal.SIGKILL)


def _die_with_supervisor(conn: Any, spool: Spool) -> None:
    """Exit the moment the supervisor's end of the pipe closes, even in the middle of a job.

    The forkserver (and so PR_SET_PDEATHSIG) can outlive a SIGKILLed supervisor, and a child
    moves spool files (it claims and discards its jobs): an orphan finishing its job would
    remove the file that the next supervisor has recovered and handed out again, and one
    with prefetched jobs would claim them behind the next supervisor's back.  A thread that
    sleeps in poll() for the hang-up costs nothing until then.  Finished jobs already
    renamed into ``tmp/`` are still unlinked first (a retired child's last ones); then the
    child's process group is killed, so what its job forked stops too.
    """
    hangup = getattr(select, "POLLRDHUP", 0) | select.POLLHUP
    watch = select.poll()
    watch.register(conn.fileno(), hangup)

    def wait_for_hangup() -> None:
        while True:
            try:
                events = watch.poll()
            except InterruptedError:  # pragma: no cover - retried by Python itself since 3.5
                continue
            if any(ev & (hangup | select.POLLERR | select.POLLNVAL) for _, ev in events):
                spool.close()
                _end_group()
                os._exit(0)

    threading.Thread(target=wait_for_hangup, name="spoolq-hangup", daemon=True).start()


def child_main(
    conn: Any,
    modules: list[str],
    spool_root: str,
    options: dict[str, Any] | None = None,
    identity: tuple[int, int] | None = None,
) -> None:
    """The pool child's loop: import the task modules, then answer jobs until EOF.

    ``options`` are the spool's settings (``fsync``, ``max_job_size``, modes).  SIGINT and
    SIGTERM are ignored: a Ctrl-C or a group-wide TERM reaches the supervisor, which decides
    when a running job must stop (and kills the child then).  The child leads its own
    process group, and ends by killing it.  Each job runs with an App of the spool being
    served entered, so that a task that enqueues another (``other.delay()``) enqueues here.
    """
    _lead_a_group()
    if not die_with_parent():  # the forkserver (and so the supervisor) is gone already
        os._exit(1)
    set_process_name(multiprocessing.current_process().name)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, _on_soft_limit)
    registry = discover(modules, use_entry_points=False)
    for err in registry.errors:
        print(f"spoolq child {os.getpid()}: cannot load {err.source}: {err.error}", file=sys.stderr, flush=True)
    options = options or {}
    # The child's renames are made durable by the supervisor's batched directory flushes.
    spool = Spool(spool_root, create=False, **options)
    app = App(spool_root, **options)
    refusal = None
    try:
        # The supervisor's directory, found by path: if the path now leads elsewhere, this
        # child claims nothing (claim() says so) and the supervisor, checking too, stops.
        spool.bind(expect=identity)
    except SpoolError as exc:
        refusal = str(exc)
    _die_with_supervisor(conn, spool)
    answers = _Answers(conn)
    try:
        while True:
            if not answers.waiting_jobs():
                answers.send()  # about to block on the next job: nothing may wait behind it
            try:
                data = conn.recv_bytes()
            except (EOFError, OSError):
                return
            try:
                with app:
                    answer = handle(registry, spool, JobMessage.decode(data), refusal)
            except BaseException as exc:  # noqa: BLE001 - a bad message must still get an answer
                answer = _error(exc, time.perf_counter(), autoretry=False)
            answers.add(answer.encode())
            if answer.fatal or answers.due():
                answers.send()
            if answer.fatal:
                return  # the pool replaces this child when it reads the answer
    except OSError:
        return  # the supervisor is gone
    finally:
        spool.close()  # finish the unlinks of discarded jobs
        _end_group()


class _Answers:
    """Answers sent a few at a time while more prefetched jobs wait in the pipe.

    Each write wakes the supervisor; with jobs of microseconds, one wake-up per job was most
    of its work.  An answer is never held while the child waits for work, and a flusher
    thread sends it within about :data:`ANSWER_HOLD_S` even if the next job runs for
    minutes: the supervisor times hard limits from the answer before, so a held answer would
    make a finished job look like one running too long.
    """

    def __init__(self, conn: Any) -> None:
        self._sock = socket.socket(fileno=os.dup(conn.fileno()))
        self._poll = select.poll()
        self._poll.register(self._sock.fileno(), select.POLLIN)
        self._lock = threading.Lock()
        self._frames: list[bytes] = []
        self._held = threading.Event()  # set when a batch starts: the flusher's cue
        threading.Thread(target=self._flusher, name="spoolq-answers", daemon=True).start()

    def waiting_jobs(self) -> bool:
        return bool(self._poll.poll(0))

    def add(self, data: bytes) -> None:
        with self._lock:
            self._frames.append(frame(data))
            first = len(self._frames) == 1
        if first:
            self._held.set()

    def due(self) -> bool:
        return len(self._frames) >= ANSWER_BATCH

    def send(self) -> None:
        with self._lock:
            if self._frames:
                data, self._frames = b"".join(self._frames), []
                self._sock.sendall(data)

    def _flusher(self) -> None:
        while True:
            self._held.wait()
            self._held.clear()
            time.sleep(ANSWER_HOLD_S)
            try:
                self.send()
            except OSError:
                return  # the supervisor is gone; the hang-up watcher ends the process
