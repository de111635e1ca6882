"""The job record (job format version 1): its fields, their checks, its transitions.

A job is what a file in the spool says, nothing more: this module turns a decoded file into a
frozen :class:`Job` and back (the bytes are :mod:`spoolq.codec`'s), checks ids and arguments,
and computes the next version of a job after an outcome.  It never
touches files or reads the clock; every transition takes ``now``, so the same inputs give the
same file.  Fields this version does not know are kept in ``extra`` and written back unchanged,
so a job written by a newer producer survives every move made by an older supervisor.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import unicodedata
from datetime import datetime, timedelta
from typing import Any

from .clock import utcnow
from .codec import decode_json, encode_json, format_ts, parse_ts
from .errors import InvalidJobId, JobFormatError
from .history import bound_history

FORMAT_VERSION = 1
MAX_ID_CHARS = 128
# A file name is at most 255 bytes; the longest prefix we add ("R-<stamp>-") plus ".json"
# takes 31, so ids are capped in encoded bytes as well as in characters.
MAX_ID_BYTES = 200
MAX_TASK_NAME_CHARS = 200
MIN_PRIORITY, MAX_PRIORITY = 0, 9
# An extra field `spoolq retry` sets: the failed/ name of the copy a replayed job came from, so
# that the supervisor, taking the replay in, removes that copy (a rerun must not replay it twice).
REPLAY_OF = "replay_of"

_KNOWN = (
    "v",
    "id",
    "task",
    "args",
    "kwargs",
    "enqueued_at",
    "eta",
    "retries",
    "max_retries",
    "errors",
    "priority",
    "expires",
    "time_limit",
    "queue",
    "result_ttl",
    "result",
    "finished_at",
    "result_expires",
)


_PLAIN_ID = re.compile(r"[A-Za-z0-9_:@+=-][A-Za-z0-9_.:@+=-]{0,127}")


def validate_id(job_id: object) -> str:
    """Return ``job_id`` if it can safely name a file inside one spool directory.

    Raises:
        InvalidJobId: empty, too long, a path separator, ``..``, a leading dot, or a control,
            surrogate or line/paragraph separator character.
    """
    if isinstance(job_id, str) and _PLAIN_ID.fullmatch(job_id) and ".." not in job_id:
        return job_id  # the common case (a UUID, a slug): nothing below can object to it
    if not isinstance(job_id, str):
        raise InvalidJobId(job_id, f"must be a string, not {type(job_id).__name__}")
    if not job_id:
        raise InvalidJobId(job_id, "must not be empty")
    if len(job_id) > MAX_ID_CHARS:
        raise InvalidJobId(job_id, f"longer than {MAX_ID_CHARS} characters")
    if "/" in job_id or "\\" in job_id:
        raise InvalidJobId(job_id, "contains a path separator")
    if ".." in job_id:
        raise InvalidJobId(job_id, "contains '..'")
    if job_id.startswith("."):
        raise InvalidJobId(job_id, "starts with '.' (hidden files are not jobs)")
    for ch in job_id:
        if unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") or ch == "\x7f":
            raise InvalidJobId(job_id, f"contains the control character {ch!r}")
    if len(job_id.encode("utf-8")) > MAX_ID_BYTES:
        raise InvalidJobId(job_id, f"longer than {MAX_ID_BYTES} bytes in UTF-8")
    return job_id


def check_json_args(args: Any, kwargs: Any) -> tuple[list, dict]:
    """Check that every argument is JSON and say which one is not.

    Returns:
        ``(list(args), dict(kwargs))`` ready for a job.
    Raises:
        JobFormatError: naming the first argument that JSON cannot carry.
    """
    if args is None:
        args = []
    if kwargs is None:
        kwargs = {}
    if isinstance(args, (str, bytes)) or not isinstance(args, (list, tuple)):
        raise JobFormatError(f"args must be a list or tuple, not {type(args).__name__}", field="args")
    if not isinstance(kwargs, dict):
        raise JobFormatError(f"kwargs must be a dict, not {type(kwargs).__name__}", field="kwargs")
    for key in kwargs:
        if not isinstance(key, str):
            raise JobFormatError(f"keyword argument names must be strings, got {key!r}", field="kwargs")
    try:  # one pass for the common case; only a failure pays for finding the culprit
        if args or kwargs:
            _CHECKER.encode((args, kwargs))
    except (TypeError, ValueError, RecursionError):
        for i, value in enumerate(args):
            _check_json_value(value, f"argument {i + 1} (args[{i}])")
        for key, value in kwargs.items():
            _check_json_value(value, f"keyword argument {key!r}")
        _check_json_value((args, kwargs), "the arguments together")  # e.g. too deep only as a whole
    return list(args), dict(kwargs)


_CHECKER = json.JSONEncoder(allow_nan=False)  # one instance: json.dumps builds one per call


def _check_json_value(value: Any, what: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise JobFormatError(f"{what} is not JSON-serializable: {exc}", field="args") from None


@dataclasses.dataclass(frozen=True)
class Job:
    """One job, as its file says.

    Times are aware UTC datetimes; ``errors`` is the whole history, oldest first;
    ``extra`` holds the fields this version does not know, written back unchanged.
    """

    id: str
    task: str
    args: list = dataclasses.field(default_factory=list)
    kwargs: dict = dataclasses.field(default_factory=dict)
    enqueued_at: datetime = dataclasses.field(default_factory=utcnow)
    eta: datetime | None = None
    retries: int = 0
    max_retries: int | None = None
    errors: tuple[dict, ...] = ()
    priority: int = 0
    expires: datetime | None = None
    time_limit: float | None = None
    queue: str | None = None
    result_ttl: float | None = None
    result: Any = None
    finished_at: datetime | None = None
    result_expires: datetime | None = None
    extra: dict = dataclasses.field(default_factory=dict)
    v: int = FORMAT_VERSION

    # -- codec -------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """The JSON object of the file, known fields first, then the unknown ones."""
        d: dict[str, Any] = {
            "v": self.v,
            "id": self.id,
            "task": self.task,
            "args": self.args,
            "kwargs": self.kwargs,
            "enqueued_at": format_ts(self.enqueued_at),
            "eta": format_ts(self.eta) if self.eta else None,
            "retries": self.retries,
            "max_retries": self.max_retries,
            "errors": list(self.errors),
        }
        if self.priority:
            d["priority"] = self.priority
        if self.expires is not None:
            d["expires"] = format_ts(self.expires)
        if self.time_limit is not None:
            d["time_limit"] = self.time_limit
        if self.queue is not None:
            d["queue"] = self.queue
        if self.result_ttl is not None:
            d["result_ttl"] = self.result_ttl
        if self.finished_at is not None:
            d["result"] = self.result
            d["finished_at"] = format_ts(self.finished_at)
        if self.result_expires is not None:
            d["result_expires"] = format_ts(self.result_expires)
        for key, value in self.extra.items():
            d.setdefault(key, value)
        return d

    def to_json(self) -> bytes:
        """The bytes of the job file: UTF-8 JSON, one line, ending in a newline."""
        return encode_json(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes | str) -> Job:
        """Parse and validate a job file.

        Raises:
            JobFormatError: not UTF-8, not JSON, too deeply nested, or not a valid job.
        """
        return cls.from_dict(decode_json(data))

    @classmethod
    def from_dict(cls, d: Any) -> Job:
        """Validate a decoded JSON value as a job; see :meth:`from_json`."""
        if not isinstance(d, dict):
            raise JobFormatError(f"a job must be a JSON object, not {_json_type(d)}")
        v = _field(d, "v", int, required=True)
        if v != FORMAT_VERSION:
            raise JobFormatError(f"unsupported job format version {v!r} (this reads {FORMAT_VERSION})", field="v")
        try:
            job_id = validate_id(d.get("id"))
        except InvalidJobId as exc:
            raise JobFormatError(str(exc), field="id") from None
        task = _field(d, "task", str, required=True)
        if not task or len(task) > MAX_TASK_NAME_CHARS:
            raise JobFormatError(f"field 'task' must be 1 to {MAX_TASK_NAME_CHARS} characters", field="task")
        args = _field(d, "args", list, default=[])
        kwargs = _field(d, "kwargs", dict, default={})
        retries = _field(d, "retries", int, default=0)
        if retries < 0:
            raise JobFormatError("field 'retries' must not be negative", field="retries")
        max_retries = _field(d, "max_retries", int, default=None)
        if max_retries is not None and max_retries < 0:
            raise JobFormatError("field 'max_retries' must not be negative", field="max_retries")
        errors = _field(d, "errors", list, default=[])
        if not all(isinstance(e, dict) for e in errors):
            raise JobFormatError("field 'errors' must be a list of objects", field="errors")
        priority = _field(d, "priority", int, default=0)
        if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
            raise JobFormatError(f"field 'priority' must be {MIN_PRIORITY} to {MAX_PRIORITY}", field="priority")
        time_limit = _field(d, "time_limit", (int, float), default=None)
        if time_limit is not None and not (_finite(time_limit) and time_limit > 0):
            raise JobFormatError("field 'time_limit' must be a positive number of seconds", field="time_limit")
        result_ttl = _field(d, "result_ttl", (int, float), default=None)
        if result_ttl is not None and not (_finite(result_ttl) and result_ttl >= 0):
            raise JobFormatError("field 'result_ttl' must be a non-negative number of seconds", field="result_ttl")
        return cls(
            v=v,
            id=job_id,
            task=task,
            args=args,
            kwargs=kwargs,
            enqueued_at=_required_ts(d, "enqueued_at"),
            eta=_ts_field(d, "eta"),
            retries=retries,
            max_retries=max_retries,
            errors=tuple(errors),
            priority=priority,
            expires=_ts_field(d, "expires"),
            time_limit=time_limit,
            queue=_field(d, "queue", str, default=None),
            result_ttl=result_ttl,
            result=d.get("result"),
            finished_at=_ts_field(d, "finished_at"),
            result_expires=_ts_field(d, "result_expires"),
            extra={k: v for k, v in d.items() if k not in _KNOWN},
        )

    # -- pure transitions --------------------------------------------------------------

    def is_due(self, now: datetime) -> bool:
        """Whether the job may run at ``now``."""
        return self.eta is None or self.eta <= now

    def is_expired(self, now: datetime) -> bool:
        """Whether the job's ``expires`` time has passed (it must not run any more)."""
        return self.expires is not None and self.expires <= now

    def ready_time(self) -> datetime:
        """The time that orders this job in ``ready/``: when it became due."""
        return self.eta if self.eta is not None and self.eta > self.enqueued_at else self.enqueued_at

    def error_count(self) -> int:
        """How many errors the history records, counting those summarised (a bounded history
        keeps its length while this grows: it tells which of two records is further along)."""
        n = 0
        for e in self.errors:
            k = e.get("summarised")
            n += k if isinstance(k, int) and not isinstance(k, bool) and k > 0 else 1
        return n

    def with_error(self, error: dict) -> Job:
        """This job with one more error in its history (bounded: :func:`bound_history`)."""
        return dataclasses.replace(self, errors=bound_history((*self.errors, error)))

    def retried(
        self,
        error: dict,
        due: datetime,
        *,
        args: list | None = None,
        kwargs: dict | None = None,
        max_retries: int | None = None,
    ) -> Job:
        """The next attempt: one more retry charged, the error kept, due at ``due``."""
        return dataclasses.replace(
            self,
            retries=self.retries + 1,
            errors=bound_history((*self.errors, error)),
            eta=due,
            args=self.args if args is None else list(args),
            kwargs=self.kwargs if kwargs is None else dict(kwargs),
            max_retries=self.max_retries if max_retries is None else max_retries,
        )

    def succeeded(self, result: Any, now: datetime, ttl_s: float | None) -> Job:
        """The record kept in ``done/``: the result, when it finished and when it expires."""
        expires = now + timedelta(seconds=ttl_s) if ttl_s is not None else None
        return dataclasses.replace(self, result=result, finished_at=now, result_expires=expires)

    def reset_for_replay(self) -> Job:
        """A failed job sent back to run: retries reset, history kept, due now."""
        return dataclasses.replace(self, retries=0, eta=None, finished_at=None, result=None, result_expires=None)


def make_error(exc_type: str, message: str, traceback_text: str, *, attempt: int, at: datetime) -> dict:
    """One entry of a job's error history."""
    return {"at": format_ts(at), "attempt": attempt, "type": exc_type, "message": message, "traceback": traceback_text}


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _field(d: dict, key: str, types: type | tuple[type, ...], *, required: bool = False, default: Any = None) -> Any:
    if key not in d or (d[key] is None and not required):
        if required:
            raise JobFormatError(f"missing field {key!r}", field=key)
        return default
    value = d[key]
    # bool is an int in Python but never a count, version or priority in a job.
    if isinstance(value, bool) or not isinstance(value, types):
        names = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        raise JobFormatError(f"field {key!r} must be {names}, not {_json_type(value)}", field=key)
    return value


def _required_ts(d: dict, key: str) -> datetime:
    value = _ts_field(d, key, required=True)
    assert value is not None  # _ts_field raises for a missing required field
    return value


def _ts_field(d: dict, key: str, *, required: bool = False) -> datetime | None:
    raw = d.get(key)
    if raw is None:
        if required:
            raise JobFormatError(f"missing field {key!r}", field=key)
        return None
    try:
        return parse_ts(raw)
    except (ValueError, TypeError, OverflowError) as exc:
        raise JobFormatError(f"field {key!r} is not a timestamp: {exc}", field=key) from None
