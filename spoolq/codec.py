"""The bytes of a job file: strict UTF-8 JSON and UTC timestamps, both ways.

One encoder and one decoder for every file spoolq writes or reads.  Decoding is strict where
a lenient parser would let a hostile file through (NaN, nesting deep enough to exhaust the
stack, integers too long to convert) and turns every failure into :class:`JobFormatError`.
Timestamps are ISO 8601 in UTC with a ``Z``; a time without an offset is refused when read.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from .errors import JobFormatError

UTC = timezone.utc
# Deeper JSON than this is refused before Python's recursion limit turns it into a crash.
MAX_NESTING = 64

_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(", ", ": "))


def format_ts(dt: datetime) -> str:
    """A timestamp as the job file writes it: ISO 8601, UTC, microseconds, ``Z``."""
    # Not strftime: glibc's %Y does not zero-pad years before 1000, which then cannot be read back.
    d = as_utc(dt)
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:{d.second:02d}.{d.microsecond:06d}Z"


def parse_ts(text: str) -> datetime:
    """Read a timestamp written by :func:`format_ts`, or any ISO 8601 time with an offset.

    A time without an offset is refused rather than guessed: a job written by a shell script
    in local time would otherwise run hours early or late.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected a timestamp string, got {type(text).__name__}")
    value = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone (end it with Z)")
    return dt.astimezone(UTC)


def as_utc(dt: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken as UTC, as Celery does with enable_utc."""
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def encode_json(value: Any) -> bytes:
    """Compact UTF-8 JSON, readable with ``cat``; NaN and Infinity are refused."""
    try:
        return _ENCODER.encode(value).encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        # A lone surrogate cannot be UTF-8; escaped, it still round-trips through json.
        return json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(", ", ": ")).encode() + b"\n"
    except (TypeError, ValueError) as exc:
        raise JobFormatError(f"not JSON-serializable: {exc}") from None


def _refuse_constant(name: str) -> Any:
    raise JobFormatError(f"{name} is not valid JSON")


def decode_json(data: bytes | str) -> Any:
    """Parse JSON strictly, without letting deep nesting or NaN through."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JobFormatError(f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    if _nesting(data) > MAX_NESTING:
        raise JobFormatError(f"JSON nested deeper than {MAX_NESTING} levels")
    try:
        return json.loads(data, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise JobFormatError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:  # e.g. an integer over Python's 4300-digit conversion limit
        raise JobFormatError(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise JobFormatError("JSON nested too deeply") from None


def _nesting(text: str) -> int:
    """Maximum bracket depth ignoring brackets inside strings, or an upper bound of it when
    that bound is already within :data:`MAX_NESTING` (a cheap pre-check)."""
    openers = text.count("[") + text.count("{")
    if openers <= MAX_NESTING:
        return openers  # cannot nest deeper than it has openers: skip the walk (the common case)
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_NESTING:
                    return deepest
        elif ch in "]}":
            depth -= 1
    return deepest
