"""Code that runs inside a pool child: take a job, run its task, always answer.

The child speaks JSON over its pipe (never pickle): the supervisor sends one job as a JSON
object, the child answers one outcome object.  Whatever the task does (return, raise, retry,
hit its soft time limit), the answer carries the kind, and for errors the type, message and
traceback text.  Only a dead process fails to answer, and the supervisor sees that through
the process sentinel.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import time
import traceback
from datetime import datetime
from typing import Any

from .errors import Retry, SoftTimeLimitExceeded, TaskNotFound
from .job import encode_json, format_ts, parse_ts
from .registry import Registry, discover
from .task import Request, set_request


def job_message(job_id: str, task: str, args: list, kwargs: dict, *, retries: int, eta: datetime | None,
                max_retries: int | None, soft_time_limit: float | None) -> bytes:
    """The message that hands a job to a child."""
    return encode_json({
        "id": job_id, "task": task, "args": args, "kwargs": kwargs, "retries": retries,
        "eta": format_ts(eta) if eta else None, "max_retries": max_retries, "soft_time_limit": soft_time_limit,
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


def child_main(conn: Any, modules: list[str]) -> None:
    """The pool child's loop: import the task modules, then answer jobs until EOF.

    SIGINT and SIGTERM are ignored: a Ctrl-C or a group-wide TERM reaches the supervisor,
    which decides when a running job must stop (and kills the child then).
    """
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, _on_soft_limit)
    registry = discover(modules, use_entry_points=False)
    for err in registry.errors:
        print(f"spoolq worker {os.getpid()}: cannot load {err.source}: {err.error}", file=sys.stderr, flush=True)
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            outcome = run_job(registry, json.loads(data))
        except BaseException as exc:  # noqa: BLE001 - a bad message must still get an answer
            outcome = _error(exc, time.perf_counter(), autoretry=False)
        try:
            conn.send_bytes(encode_json(outcome))
        except (OSError, ValueError):
            return
        if outcome.get("fatal"):
            return  # the pool replaces this child when it reads the answer
