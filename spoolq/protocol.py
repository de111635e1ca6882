"""What crosses the pipe between the supervisor and a pool child, in both directions.

JSON only (never pickle), framed as :class:`multiprocessing.connection.Connection` frames
(a 4-byte big-endian length, or -1 and 8 bytes past 2 GiB, then the bytes), several frames
to a write.  The supervisor sends a :class:`JobMessage`; the child always sends back one
:class:`Answer`, whose :class:`Kind` says what became of the job.  Only a dead child fails
to answer, and the supervisor sees that through the process sentinel.
"""

from __future__ import annotations

import enum
import json
import struct
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .codec import encode_json, format_ts, parse_ts

HEADER = struct.Struct("!i")
LONG_HEADER = struct.Struct("!Q")


class Kind(str, enum.Enum):
    """What became of a job handed to a child."""

    SUCCESS = "success"  # the task returned
    ERROR = "error"  # the task raised
    RETRY = "retry"  # the task asked to run again later (task.retry)
    DIED = "died"  # the child ended (or was killed) without an answer, or must end (out of memory)
    GONE = "gone"  # not run: ready/<name> was not there when the child came to claim it
    CLASH = "clash"  # not run: a job with the same id is already in active/
    UNCLAIMED = "unclaimed"  # not run: the claim failed for another reason (I/O)

    @property
    def claimed(self) -> bool:
        """Whether the child had claimed (and so run, or started) the job."""
        return self not in (Kind.GONE, Kind.CLASH, Kind.UNCLAIMED)


@dataclass(frozen=True)
class JobMessage:
    """A job handed to a child.

    ``claim`` is its ``ready/`` name (the child renames it into ``active/`` just before
    running it); ``discard`` says the child removes it itself if it succeeds (no result kept).
    """

    id: str
    task: str
    args: list
    kwargs: dict
    retries: int = 0
    eta: datetime | None = None
    max_retries: int | None = None
    soft_time_limit: float | None = None
    claim: str | None = None
    discard: bool = False

    def encode(self) -> bytes:
        """The message's bytes (unframed).  Written out field by field: this runs once per
        job in the supervisor, where ``dataclasses.asdict`` (a deep copy) cost 10 % of a job."""
        return encode_json(
            {
                "id": self.id,
                "task": self.task,
                "args": self.args,
                "kwargs": self.kwargs,
                "retries": self.retries,
                "eta": format_ts(self.eta) if self.eta else None,
                "max_retries": self.max_retries,
                "soft_time_limit": self.soft_time_limit,
                "claim": self.claim,
                "discard": self.discard,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> JobMessage:
        """Read a message; raises ValueError or KeyError on a malformed one."""
        d = json.loads(data)
        eta = d.get("eta")
        return cls(
            id=d["id"],
            task=d["task"],
            args=d.get("args", []),
            kwargs=d.get("kwargs", {}),
            retries=d.get("retries", 0),
            eta=parse_ts(eta) if eta else None,
            max_retries=d.get("max_retries"),
            soft_time_limit=d.get("soft_time_limit"),
            claim=d.get("claim"),
            discard=bool(d.get("discard")),
        )


@dataclass(frozen=True)
class Answer:
    """What one run of a job produced, as the child reports it (or the pool, for a death).

    ``fatal`` (with kind DIED) means the child cannot go on and exits after answering;
    ``discarded`` that the child already took a success out of ``active/``.
    """

    kind: Kind
    result: Any = None
    exc_type: str = ""
    message: str = ""
    traceback: str = ""
    autoretry: bool = False  # the exception is in the task's autoretry_for
    countdown: float | None = None
    eta: datetime | None = None
    new_args: list | None = None
    new_kwargs: dict | None = None
    max_retries: int | None = None
    duration_s: float = 0.0
    discarded: bool = False
    fatal: bool = False

    def encode(self) -> bytes:
        """The answer's bytes (unframed).  Fields at their default are left out; a falsy value
        that is not the default (a result of 0, a countdown of 0, max_retries 0) is sent."""
        d: dict[str, Any] = {"kind": self.kind.value}
        if self.duration_s:
            d["duration_s"] = self.duration_s
        if self.kind is Kind.SUCCESS or self.result is not None:
            d["result"] = self.result
        for key in ("exc_type", "message", "traceback"):
            if text := getattr(self, key):
                d[key] = text
        for key in ("autoretry", "discarded", "fatal"):
            if getattr(self, key):
                d[key] = True
        for key in ("countdown", "new_args", "new_kwargs", "max_retries"):
            if (value := getattr(self, key)) is not None:
                d[key] = value
        if self.eta is not None:
            d["eta"] = format_ts(self.eta)
        return encode_json(d)

    @classmethod
    def decode(cls, data: bytes) -> Answer:
        """Read an answer; raises ValueError or KeyError on a malformed one."""
        d = json.loads(data)
        kind = _KINDS.get(d["kind"])
        if kind is None:
            raise ValueError(f"unknown kind of answer: {d['kind']!r}")
        return cls(
            kind=kind,
            result=d.get("result"),
            exc_type=d.get("exc_type", ""),
            message=d.get("message", ""),
            traceback=d.get("traceback", ""),
            autoretry=bool(d.get("autoretry")),
            countdown=d.get("countdown"),
            eta=parse_ts(d["eta"]) if d.get("eta") else None,
            new_args=d.get("new_args"),
            new_kwargs=d.get("new_kwargs"),
            max_retries=d.get("max_retries"),
            duration_s=float(d.get("duration_s") or 0.0),
            discarded=bool(d.get("discarded")),
            fatal=bool(d.get("fatal")),
        )


_KINDS = {kind.value: kind for kind in Kind}  # a dict lookup: Kind(value) is slow per answer


def frame(data: bytes) -> bytes:
    """``data`` framed as :meth:`Connection.recv_bytes` on the other end expects it."""
    if len(data) > 0x7FFFFFFF:
        return HEADER.pack(-1) + LONG_HEADER.pack(len(data)) + data
    return HEADER.pack(len(data)) + data


def unframe(buf: bytearray) -> list[bytes]:
    """Take every whole frame off the front of ``buf`` (what is left is a partial frame)."""
    out = []
    pos = 0
    while len(buf) - pos >= 4:
        (size,) = HEADER.unpack_from(buf, pos)
        start = pos + 4
        if size == -1:
            if len(buf) - start < 8:
                break
            (size,) = LONG_HEADER.unpack_from(buf, start)
            start += 8
        if len(buf) - start < size:
            break
        out.append(bytes(buf[start : start + size]))
        pos = start + size
    if pos:
        del buf[:pos]
    return out
