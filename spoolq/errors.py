"""One exception tree for everything spoolq refuses or fails at.

Every error a user can meet derives from :class:`SpoolqError`, so ``except SpoolqError``
catches them all.  :class:`Retry` is control flow, not a failure: a task raises it to ask
the supervisor to run it again later, the way Celery's ``task.retry`` does.
"""

from __future__ import annotations

import os
from datetime import datetime


class SpoolqError(Exception):
    """Base class of every error spoolq raises on purpose."""


class JobFormatError(SpoolqError):
    """A job file or record does not follow the job format."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class HardLinked(JobFormatError):
    """A file with more than one name: it may belong outside the spool, so it is not read.

    ``stat`` is its ``fstat``, for the supervisor's grace period (see ``LINK_GRACE_S``)."""

    def __init__(self, message: str, stat: os.stat_result) -> None:
        super().__init__(message)
        self.stat = stat


class InvalidJobId(SpoolqError):
    """A job id that could name a path outside the spool, or no file at all."""

    def __init__(self, job_id: object, reason: str) -> None:
        super().__init__(f"invalid job id {job_id!r}: {reason}")
        self.job_id = job_id
        self.reason = reason


class DuplicateJob(SpoolqError):
    """A job with this id is already queued."""

    def __init__(self, job_id: str, where: str) -> None:
        super().__init__(f"job {job_id!r} is already queued (in {where}/)")
        self.job_id = job_id
        self.where = where


class JobTooLarge(SpoolqError):
    """The encoded job is larger than the configured limit."""

    def __init__(self, job_id: str, size: int, limit: int) -> None:
        super().__init__(f"job {job_id!r} is {size} bytes, over the limit of {limit} bytes")
        self.job_id = job_id
        self.size = size
        self.limit = limit


class TaskNotFound(SpoolqError):
    """No task is registered under this name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no task named {name!r} is registered")
        self.name = name


class JobNotFound(SpoolqError):
    """No job with this id is in the spool (or in the states searched)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r} in the spool")
        self.job_id = job_id


class SpoolError(SpoolqError):
    """The spool directory cannot be used: missing, unsafe, unwritable or full.

    ``errno`` is the operating system's error number when one caused it (EACCES, ENOSPC,
    EROFS...), else None.
    """

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class NameTaken(SpoolError):
    """A file with the name a write or move was to use is already there (nothing was changed)."""


class JobGone(SpoolError):
    """The file a move, read or removal was for is not there (another process moved it)."""


class SpoolGone(SpoolError):
    """The spool a supervisor runs on is no longer at its path: removed, moved or replaced."""


class SpoolLocked(SpoolError):
    """Another supervisor holds the spool."""

    def __init__(self, path: str, pid: int | None) -> None:
        holder = f"pid {pid}" if pid else "another process"
        super().__init__(f"spool {path} is held by {holder} (another spoolq worker is running)")
        self.path = path
        self.pid = pid


class ConfigError(SpoolqError):
    """A configuration key is unknown or its value is invalid."""

    def __init__(self, message: str, *, key: str | None = None, source: str | None = None) -> None:
        where = f" ({source})" if source else ""
        super().__init__(f"{message}{where}")
        self.key = key
        self.source = source


class ResultTimeout(SpoolqError):
    """A result was not available within the time given."""


class TaskFailed(SpoolqError):
    """The job ended in ``failed/``; its last error is attached."""

    def __init__(self, job_id: str, error: dict | None) -> None:
        last = f": {error.get('type')}: {error.get('message')}" if error else ""
        super().__init__(f"job {job_id!r} failed{last}")
        self.job_id = job_id
        self.error = error


class SoftTimeLimitExceeded(SpoolqError):
    """Raised inside a running task when its soft time limit is reached."""


class Retry(SpoolqError):  # the name Celery users know
    """Raised by ``task.retry()``: run this job again later instead of failing it.

    Attributes:
        exc: the exception that caused the retry, recorded in the job's error history.
        countdown: seconds to wait, or None for the task's default.
        eta: an absolute time to run again (wins over countdown).
        new_args, new_kwargs: replacement arguments for the next run, or None to keep them
            (not ``args``: that name belongs to ``BaseException``).
        max_retries: replacement retry budget, or None to keep the job's.
    """

    def __init__(
        self,
        exc: BaseException | None = None,
        *,
        countdown: float | None = None,
        eta: datetime | None = None,
        args: list | tuple | None = None,
        kwargs: dict | None = None,
        max_retries: int | None = None,
    ) -> None:
        when = f"at {eta.isoformat()}" if eta else (f"in {countdown:g} s" if countdown is not None else "later")
        reason = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        super().__init__(f"retry {when}{reason}")
        self.exc = exc
        self.countdown = countdown
        self.eta = eta
        self.new_args = list(args) if args is not None else None
        self.new_kwargs = dict(kwargs) if kwargs is not None else None
        self.max_retries = max_retries


class MaxRetriesExceeded(SpoolqError):
    """A retry was asked for but the job has used all its retries."""
