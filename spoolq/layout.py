"""The spool's on-disk protocol: its directories and every file name in them (SPEC §1).

This module is the one place that builds and parses names; it does no I/O::

    SPOOL/
      tmp/       <ns>.<pid>.<n>.<salt>           being written by its writer, read by nobody
                 <ns>.<pid>.done.<name>          a finished job waiting for its unlink
      new/       <id>.json                       delivered by producers; the only place they write
      ready/     <R>-<stamp>-<id>.json           R = 9 - priority, stamp = when it became due
      active/    <id>.json                       claimed by a pool child, running
      delayed/   <stamp>-<id>.json               stamp = due time, so ``ls`` sorts by due time
      failed/    <stamp>-<id>.json               stamp = when it failed
                 <stamp>-<name>.bad              a file that was not a job, untouched
                 <stamp>-<name>.bad.reason       why it was refused
      done/      <id>.json                       kept results, until they expire
      spoolq.lock                                flock of the running supervisor; holds its pid

A stamp is UTC time that sorts as text and reads as a time: ``20261125T031500.123456Z``.
Any byte string can be a file name; :func:`printable` says one readably.
"""

from __future__ import annotations

import stat
from datetime import datetime, timezone

from .job import MAX_PRIORITY, Job

TMP, NEW, READY, ACTIVE, DELAYED, FAILED, DONE = "tmp", "new", "ready", "active", "delayed", "failed", "done"
STATES = (NEW, READY, ACTIVE, DELAYED, FAILED, DONE)
LIVE_STATES = (NEW, READY, ACTIVE, DELAYED)
DIRS = (TMP, *STATES)
LOCK_NAME = "spoolq.lock"
JSON = ".json"
BAD_SUFFIX = ".bad"
REASON_SUFFIX = ".reason"
DISCARDED = ".done."  # in a tmp/ name: a finished job waiting for its unlink

_STAMP_FORMAT = "%Y%m%dT%H%M%S.%fZ"
STAMP_LEN = len("20261125T031500.123456Z")
_READY_ID_AT = STAMP_LEN + 3  # "R-<stamp>-" comes before the id in a ready/ name
_UTC = timezone.utc


def stamp(dt: datetime) -> str:
    """A time as file names carry it: sorts as text, reads as a time (naive means UTC)."""
    d = dt.replace(tzinfo=_UTC) if dt.tzinfo is None else dt.astimezone(_UTC)
    return f"{d.year:04d}{d.month:02d}{d.day:02d}T{d.hour:02d}{d.minute:02d}{d.second:02d}.{d.microsecond:06d}Z"


def parse_stamp(text: str) -> datetime:
    """Reverse of :func:`stamp`; raises ValueError on anything else."""
    return datetime.strptime(text, _STAMP_FORMAT).replace(tzinfo=_UTC)


def plain_name(job_id: str) -> str:
    """The name of a job in ``new/``, ``active/`` and ``done/``: ``<id>.json``."""
    return f"{job_id}{JSON}"


def ready_name(job_id: str, priority: int, due: datetime) -> str:
    """The name of a job in ``ready/``: dispatch order is the names' sort order."""
    return f"{MAX_PRIORITY - priority}-{stamp(due)}-{job_id}{JSON}"


def timed_name(job_id: str, when: datetime) -> str:
    """The name of a job in ``delayed/`` (due time) or ``failed/`` (when it failed)."""
    return f"{stamp(when)}-{job_id}{JSON}"


def job_name(state: str, job: Job, when: datetime | None = None) -> str:
    """The file name of ``job`` in ``state``; ``when`` is the time the name sorts by (due
    time in ``ready/`` and ``delayed/``, failure time in ``failed/``)."""
    if state == READY:
        return ready_name(job.id, job.priority, when or job.ready_time())
    if state in (DELAYED, FAILED):
        if when is None:
            raise ValueError(f"a {state} name needs a time")
        return timed_name(job.id, when)
    return plain_name(job.id)


def ready_id(name: str) -> str:
    """The id in a name built by :func:`ready_name` (unchecked: for names this process made)."""
    return name[_READY_ID_AT : -len(JSON)]


def parse_name(state: str, name: str) -> tuple[str | None, datetime | None]:
    """The job id and time a file name carries in ``state``, or ``(None, None)`` if it is
    not a job's name there (a foreign or rejected file)."""
    if not name.endswith(JSON) or name.startswith("."):
        return None, None
    base = name[: -len(JSON)]
    try:
        if state == READY:
            if len(base) > _READY_ID_AT and base[0].isdigit() and base[1] == "-" and base[STAMP_LEN + 2] == "-":
                return base[_READY_ID_AT:], parse_stamp(base[2 : STAMP_LEN + 2])
            return None, None
        if state in (DELAYED, FAILED):
            if len(base) > STAMP_LEN + 1 and base[STAMP_LEN] == "-":
                return base[STAMP_LEN + 1 :], parse_stamp(base[:STAMP_LEN])
            return None, None
    except ValueError:
        return None, None
    return base, None


def tmp_name(now_ns: int, pid: int, n: int, salt: str) -> str:
    """A writer's unique name in ``tmp/``: time, process, counter, and a random salt."""
    return f"{now_ns}.{pid}.{n}.{salt}"


def discarded_name(now_ns: int, pid: int, name: str) -> str:
    """The ``tmp/`` name a finished job is renamed to before its unlink."""
    return f"{now_ns}.{pid}{DISCARDED}{name}"


def is_discarded(name: str) -> bool:
    """Whether a ``tmp/`` name is a finished job waiting for its unlink (:func:`discarded_name`)."""
    head, sep, _ = name.partition(DISCARDED)
    return bool(sep) and head.replace(".", "").isdigit()


def bad_name(now: datetime, original: str, n: int = 0) -> str:
    """The ``failed/`` name of a refused file (the ``n``-th try when names clash)."""
    return f"{stamp(now)}-{safe_name(original)}{f'.{n}' if n else ''}{BAD_SUFFIX}"


def reason_name(bad: str) -> str:
    """The name of the file beside a refused one that says why it was refused."""
    return bad + REASON_SUFFIX


def is_bad(name: str) -> bool:
    """Whether a ``failed/`` name is a refused file or its reason (not a job record)."""
    return name.endswith(BAD_SUFFIX) or name.endswith(BAD_SUFFIX + REASON_SUFFIX)


def printable(text: str) -> str:
    """``text`` safe to print and log: bytes that are not UTF-8 (a file name's, kept by
    Python as surrogate escapes) as ``\\xNN``, control characters as escapes.

    Any byte string can be a file name; one must never crash a log line or a reason file,
    nor move a terminal's cursor.
    """
    if text.isprintable():
        return text
    try:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that was not a byte of a name
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(ch if ch.isprintable() or ch == " " else repr(ch)[1:-1] for ch in text)


def safe_name(name: str) -> str:
    """A printable, bounded version of a foreign file's name, for its place in failed/."""
    cleaned = printable(name).replace("/", "_").replace("\\", "_").lstrip(".")
    if len(cleaned.encode("utf-8")) > 150 or not cleaned:
        cleaned = (cleaned.encode("utf-8")[:100].decode("utf-8", "ignore") or "file") + "~"
    return cleaned


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words, for rejection reasons and fsck findings."""
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "special file"
