"""Code that runs inside a pool child: take a job, run its task, always answer.

The child speaks JSON over its pipe (never pickle): the supervisor sends one job as a JSON
object, the child answers one outcome object.  Whatever the task does (return, raise, retry,
hit its soft time limit), the answer carries the kind, and for errors the type, message and
traceback text.  Only a dead process fails to answer, and the supervisor sees that through
the process sentinel.

The child claims its job itself, renaming ``ready/<name>`` into ``active/<id>.json`` right
before running it, and when the job succeeds and keeps no result it takes it out of
``active/`` itself (:meth:`Spool.discard`).  Those two renames were the supervisor's, one
process serving every child; here they run in parallel, next to the work.  Every other
outcome (retry, failure, kept result) is recorded by the supervisor, as before.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from datetime import datetime
from typing import Any

from .errors import Retry, SoftTimeLimitExceeded, SpoolError, TaskNotFound
from .job import encode_json, format_ts, parse_ts
from .registry import Registry, discover
from .retry import CLASH, GONE, SUCCESS, UNCLAIMED
from .spool import ACTIVE, READY, Spool
from .task import Request, set_request

# The framing of multiprocessing.connection.Connection: a 4-byte big-endian length (-1, then
# 8 bytes, past 2 GiB), then the bytes.  Both ends batch several frames into one write.
HEADER = struct.Struct("!i")
LONG_HEADER = struct.Struct("!Q")


def frame(data: bytes) -> bytes:
    """``data`` framed as :meth:`Connection.recv_bytes` on the other end expects it."""
    if len(data) > 0x7FFFFFFF:
        return HEADER.pack(-1) + LONG_HEADER.pack(len(data)) + data
    return HEADER.pack(len(data)) + data


ANSWER_BATCH = 8  # answers sent together at most
ANSWER_HOLD_S = 0.001  # longest an answer waits for others


def job_message(job_id: str, task: str, args: list, kwargs: dict, *, retries: int, eta: datetime | None,
                max_retries: int | None, soft_time_limit: float | None, claim: str | None = None,
                discard: bool = False) -> bytes:
    """The message that hands a job to a child: ``claim`` is its ``ready/`` name (None:
    already claimed), ``discard`` says the child removes it itself when it succeeds."""
    return encode_json({
        "id": job_id, "task": task, "args": args, "kwargs": kwargs, "retries": retries,
        "eta": format_ts(eta) if eta else None, "max_retries": max_retries, "soft_time_limit": soft_time_limit,
        "claim": claim, "discard": discard,
    })  # fmt: skip


def _on_soft_limit(signum: int, frame: Any) -> None:
    # Raising here is the point: it is how a soft time limit interrupts the task's code.
    raise SoftTimeLimitExceeded("soft time limit exceeded")


def run_job(registry: Registry, msg: dict) -> dict:
    """Run one job described by ``msg`` and return its outcome as a JSON-ready dict."""
    started = time.perf_counter()
    soft = msg.get("soft_time_limit")
    try:
        task = registry.get(msg["task"])
    except TaskNotFound as exc:
        return _error(exc, started, autoretry=False)
    set_request(Request(
        id=msg["id"], retries=msg.get("retries", 0), args=msg.get("args", []), kwargs=msg.get("kwargs", {}),
        eta=parse_ts(msg["eta"]) if msg.get("eta") else None, max_retries=msg.get("max_retries"),
        called_directly=False,
    ))  # fmt: skip
    try:
        if soft:
            signal.setitimer(signal.ITIMER_REAL, soft)
        result = task(*msg.get("args", []), **msg.get("kwargs", {}))
        if soft:
            signal.setitimer(signal.ITIMER_REAL, 0)
        try:
            json.dumps(result, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"the task's return value is not JSON-serializable: {exc}") from None
        return {"kind": "success", "result": result, "duration_s": time.perf_counter() - started}
    except Retry as retry:
        exc = retry.exc
        return {
            "kind": "retry",
            "type": type(exc).__name__ if exc is not None else "Retry",
            "message": str(exc) if exc is not None else str(retry),
            "traceback": _format(exc) if exc is not None else "",
            "countdown": retry.countdown,
            "eta": format_ts(retry.eta) if retry.eta else None,
            "args": retry.new_args,
            "kwargs": retry.new_kwargs,
            "max_retries": retry.max_retries,
            "duration_s": time.perf_counter() - started,
        }
    except MemoryError as exc:
        # Out of memory: the process, not the input, is at fault, and its heap (or a limit the
        # task set) may stay exhausted.  Answer as a death; the child then exits and is replaced.
        out = _error(exc, started, autoretry=False)
        detail = f"{out['type']}: {out['message']}" if out["message"] else out["type"]
        out.update(kind="died", fatal=True, message=f"worker out of memory ({detail})")
        return out
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


def _error(exc: BaseException, started: float, *, autoretry: bool) -> dict:
    return {
        "kind": "error",
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": _format(exc),
        "autoretry": autoretry,
        "duration_s": time.perf_counter() - started,
    }


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL this child when its parent (the pool's forkserver) exits.

    The forkserver exits when the supervisor dies.  Without this, a child whose supervisor
    was SIGKILLed would go on with its job while the restarted supervisor recovers the same
    job from ``active/`` and runs it again: two runs at once instead of one after the other.
    """
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return
    if os.getppid() != parent:  # the parent died before the request was in place
        os._exit(1)


def claim(spool: Spool, msg: dict, refusal: str | None = None) -> dict | None:
    """Rename the job from ``ready/`` into ``active/``; None when that worked, otherwise the
    answer that says why it was not run (``refusal``: why this child may claim nothing)."""
    name = msg.get("claim")
    if not name:
        return None
    if "/" in name or name.startswith("."):
        raise ValueError(f"not a ready/ name: {name!r}")
    if refusal is not None:  # not the supervisor's spool (moved or replaced): touch nothing here
        return {"kind": UNCLAIMED, "message": f"cannot claim ready/{name}: {refusal}"}
    try:
        spool.move(spool.file(READY, name), ACTIVE, f"{msg['id']}.json")
    except FileNotFoundError:
        return {"kind": GONE, "message": f"ready/{name} was gone when a worker came to claim it"}
    except FileExistsError:
        return {"kind": CLASH, "message": f"a job with id {msg['id']!r} is already in active/"}
    except (OSError, SpoolError) as exc:
        return {"kind": UNCLAIMED, "message": f"cannot claim ready/{name}: {getattr(exc, 'strerror', None) or exc}"}
    return None


def handle(registry: Registry, spool: Spool, msg: dict, refusal: str | None = None) -> dict:
    """Claim, run and (for a success that keeps nothing) discard one job; its answer."""
    refused = claim(spool, msg, refusal)
    if refused is not None:
        return refused
    outcome = run_job(registry, msg)
    if outcome["kind"] == SUCCESS and msg.get("discard"):
        try:
            spool.discard(spool.file(ACTIVE, f"{msg['id']}.json"))
            outcome["discarded"] = True
        except (OSError, SpoolError):
            pass  # left in active/: the supervisor removes it when it settles the answer
    return outcome


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


def child_main(conn: Any, modules: list[str], spool_root: str, fsync: bool = True,
               identity: tuple[int, int] | None = None) -> None:
    """The pool child's loop: import the task modules, then answer jobs until EOF.

    SIGINT and SIGTERM are ignored: a Ctrl-C or a group-wide TERM reaches the supervisor,
    which decides when a running job must stop (and kills the child then).  The child leads
    its own process group, and ends by killing it.
    """
    _lead_a_group()
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, _on_soft_limit)
    registry = discover(modules, use_entry_points=False)
    for err in registry.errors:
        print(f"spoolq worker {os.getpid()}: cannot load {err.source}: {err.error}", file=sys.stderr, flush=True)
    # The child's renames are made durable by the supervisor's batched directory flushes.
    spool = Spool(spool_root, fsync=fsync, create=False)
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
                outcome = handle(registry, spool, json.loads(data), refusal)
            except BaseException as exc:  # noqa: BLE001 - a bad message must still get an answer
                outcome = _error(exc, time.perf_counter(), autoretry=False)
            answers.add(encode_json(outcome))
            if outcome.get("fatal") or answers.due():
                answers.send()
            if outcome.get("fatal"):
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
