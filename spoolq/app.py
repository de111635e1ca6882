"""The producer's side: ``App``, ``send_task``, bulk enqueue and result handles.

An App is a spool plus a task registry.  Enqueueing builds a :class:`~spoolq.job.Job`, checks
it (JSON arguments, a safe id, the size limit) and publishes it into ``new/``; nothing else of
the spool is written by producers.  The call returns once the job is durable: that is the
acknowledgement.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from .clock import utcnow
from .codec import as_utc
from .config import Config, load_config
from .errors import DuplicateJob, JobFormatError, JobGone, JobNotFound, ResultTimeout, SpoolqError, TaskFailed
from .job import MAX_PRIORITY, MIN_PRIORITY, Job, check_json_args, validate_id
from .layout import ACTIVE, DELAYED, DONE, FAILED, NEW, READY
from .registry import Registry, discover
from .spool import Entry, Spool
from .task import Task, declare, make_decorator

_current: App | None = None


def current_app() -> App:
    """The App that unbound tasks enqueue through: the last one created in this process,
    else one built from the configuration (``SPOOLQ_SPOOL``, ``./spoolq.ini``)."""
    global _current
    if _current is None:
        _current = App.from_config()
    return _current


class App:
    """A spool and the tasks that run from it.

    Parameters:
        spool: the spool directory (created on first write).
        fsync: see :class:`~spoolq.spool.Spool`; default True.
        max_job_size: largest job file in bytes (default 1 MiB).
        imports: task modules the worker imports (``--include`` adds more).
        clock: returns the current UTC time; tests pass a fake one.
        config: the configuration this App was built from, if any.
    """

    def __init__(
        self,
        spool: str | os.PathLike[str],
        *,
        fsync: bool = True,
        max_job_size: int = 1024 * 1024,
        imports: Iterable[str] = (),
        clock: Callable[[], datetime] = utcnow,
        config: Config | None = None,
        dir_mode: int = 0o700,
        file_mode: int = 0o600,
    ) -> None:
        global _current
        self.spool = Spool(
            spool, fsync=fsync, max_job_size=max_job_size, dir_mode=dir_mode, file_mode=file_mode, create=False
        )
        self.imports = tuple(imports)
        self.clock = clock
        self.config = config
        self.registry = Registry()
        self.task = make_decorator(self._register, self)
        self._batch: list[Job] | None = None
        _current = self

    @classmethod
    def from_config(cls, path: str | os.PathLike[str] | None = None, **options: Any) -> App:
        """Build an App from an ini file's ``[spoolq]`` section and ``SPOOLQ_*`` variables.

        Parameters:
            path: the ini file (default: ``$SPOOLQ_CONFIG``, else ``./spoolq.ini`` if present).
            options: keys of the configuration that win over file and environment.
        Raises:
            ConfigError: an unknown key or a bad value, naming the key and the file.
        """
        config = load_config(path, options=options)
        return cls(
            config.spool,
            fsync=config.fsync,
            max_job_size=config.max_job_size,
            imports=config.imports,
            config=config,
            dir_mode=config.dir_mode,
            file_mode=config.file_mode,
        )

    def __repr__(self) -> str:
        return f"<spoolq.App {self.spool.path}>"

    # -- tasks --------------------------------------------------------------------------

    def _register(self, task: Task) -> None:
        self.registry.register(task)
        declare(task)

    def load_tasks(self, includes: Iterable[str] = (), *, use_entry_points: bool = True) -> Registry:
        """Import the task modules (entry points, this App's imports, ``includes``) and
        return the registry; load errors are in ``registry.errors``."""
        found = discover((*self.imports, *includes), use_entry_points=use_entry_points)
        for name in found.names():
            task = found.get(name)
            if name not in self.registry.tasks or self.registry.tasks[name] is not task:
                self.registry.register(task, found.origin(name))
        self.registry.errors.extend(found.errors)
        for m in found.modules:
            if m not in self.registry.modules:
                self.registry.modules.append(m)
        return self.registry

    # -- enqueue ------------------------------------------------------------------------

    def make_job(
        self,
        name: str,
        args: list | tuple | None = None,
        kwargs: dict | None = None,
        *,
        countdown: float | None = None,
        eta: datetime | None = None,
        task_id: str | None = None,
        priority: int | None = None,
        expires: datetime | float | None = None,
        max_retries: int | None = None,
        result_ttl: float | None = None,
        time_limit: float | None = None,
    ) -> Job:
        """Build and check a job without writing it; see :meth:`send_task`."""
        if not isinstance(name, str) or not name:
            raise JobFormatError("the task name must be a non-empty string", field="task")
        args, kwargs = check_json_args(args, kwargs)
        job_id = validate_id(task_id) if task_id is not None else str(uuid.uuid4())
        now = self.clock()
        if eta is not None and countdown is not None:
            raise JobFormatError("give countdown or eta, not both", field="eta")
        if eta is not None:
            if not isinstance(eta, datetime):
                raise JobFormatError(f"eta must be a datetime, not {type(eta).__name__}", field="eta")
        elif countdown is not None:
            eta = now + timedelta(seconds=_number(countdown, "countdown"))
        if isinstance(expires, (int, float)):
            expires = now + timedelta(seconds=_number(expires, "expires"))
        elif expires is not None:
            expires = as_utc(expires)
        prio = 0 if priority is None else priority
        if isinstance(prio, bool) or not isinstance(prio, int) or not MIN_PRIORITY <= prio <= MAX_PRIORITY:
            raise JobFormatError(f"priority must be an integer {MIN_PRIORITY} to {MAX_PRIORITY}", field="priority")
        if max_retries is not None and (not isinstance(max_retries, int) or max_retries < 0):
            raise JobFormatError("max_retries must be a non-negative integer", field="max_retries")
        return Job(
            id=job_id,
            task=name,
            args=args,
            kwargs=kwargs,
            enqueued_at=now,
            eta=as_utc(eta) if eta is not None else None,
            max_retries=max_retries,
            priority=prio,
            expires=expires,
            time_limit=None if time_limit is None else _number(time_limit, "time_limit"),
            result_ttl=None if result_ttl is None else _number(result_ttl, "result_ttl"),
        )

    def send_task(self, name: str, args: list | tuple | None = None, kwargs: dict | None = None,
                  **options: Any) -> AsyncResult:
        """Enqueue a task by name; the task's code need not be importable here.

        Parameters:
            name: the task's registered name, e.g. ``"NAME.echofunction"``.
            args, kwargs: JSON-serializable arguments.
            countdown: seconds from now before it may run.
            eta: when it may run (a datetime; naive means UTC).
            task_id: the job id (default: a new UUID4).
            priority: 0 to 9, higher runs first (default 0).
            expires: a datetime or seconds from now after which it is not run.
            max_retries: this job's retry budget (default: the task's).
            result_ttl: keep the result this many seconds (default: the task's).
            time_limit: hard time limit in seconds for this job.
        Returns:
            A handle with the job id.
        Raises:
            JobFormatError: an argument is not JSON (named), or an option is invalid.
            InvalidJobId: ``task_id`` is unsafe as a file name.
            DuplicateJob: a job with this id is already queued.
            JobTooLarge: the job is over ``max_job_size``.
            SpoolError: the spool cannot be written (nothing is left behind).
        """
        job = self.make_job(name, args, kwargs, **options)
        if self._batch is not None:
            if any(j.id == job.id for j in self._batch):
                raise DuplicateJob(job.id, "this batch")
            self._batch.append(job)
        else:
            self.spool.deliver([job], fresh_ids=options.get("task_id") is None)
        return AsyncResult(job.id, self)

    def send_many(self, jobs: Iterable[tuple[str, list | tuple | None, dict | None] | dict]) -> list[AsyncResult]:
        """Enqueue many jobs with one durability barrier; each job is atomic on its own.

        Parameters:
            jobs: ``(name, args, kwargs)`` tuples, or dicts of :meth:`send_task`'s
                parameters (``{"name": ..., "args": ..., "countdown": ...}``).
        Returns:
            One handle per job, in order.  Every job is checked before any is written, so a
            bad one writes nothing.
        """
        built = []
        for item in jobs:
            if isinstance(item, dict):
                options = dict(item)
                if "name" not in options:
                    raise JobFormatError(f"a job given as a dict needs a 'name': {item!r:.200}", field="task")
                name = options.pop("name")
                built.append(self.make_job(name, options.pop("args", None), options.pop("kwargs", None), **options))
            else:
                name, args, kwargs = item
                built.append(self.make_job(name, args, kwargs))
        self.spool.deliver(built)
        return [AsyncResult(j.id, self) for j in built]

    @contextlib.contextmanager
    def batch(self) -> Iterator[list[Job]]:
        """Collect every enqueue inside the block and publish them together on exit, with
        one durability barrier; on an exception inside the block nothing is written."""
        if self._batch is not None:
            raise SpoolqError("batches do not nest")
        self._batch = []
        try:
            yield self._batch
            jobs = self._batch
        finally:
            self._batch = None
        self.spool.publish_many(jobs)

    # -- results ------------------------------------------------------------------------

    def result(self, job_id: str) -> AsyncResult:
        """A handle on an existing job by id."""
        return AsyncResult(validate_id(job_id), self)


class AsyncResult:
    """A handle on an enqueued job: its id, its state, and its result when kept."""

    def __init__(self, job_id: str, app: App) -> None:
        self.id = job_id
        self.app = app

    def __repr__(self) -> str:
        return f"<AsyncResult {self.id}>"

    @property
    def state(self) -> str:
        """``PENDING`` (new/ready), ``RETRY`` (delayed), ``STARTED`` (active), ``SUCCESS``
        (result kept in done/), ``FAILURE`` (failed/), or ``UNKNOWN`` (finished without
        a kept result, or never existed)."""
        try:
            entry = self.app.spool.find(self.id, (ACTIVE, NEW, READY, DELAYED, DONE, FAILED))
        except JobNotFound:
            return "UNKNOWN"
        return {NEW: "PENDING", READY: "PENDING", DELAYED: "RETRY", ACTIVE: "STARTED",
                DONE: "SUCCESS", FAILED: "FAILURE"}[entry.state]  # fmt: skip

    def ready(self) -> bool:
        """Whether the job has finished with a kept result or failed."""
        return self.state in ("SUCCESS", "FAILURE")

    def get(self, timeout: float | None = None, interval: float = 0.02) -> Any:
        """Wait for the kept result and return it.

        Parameters:
            timeout: seconds to wait at most (None: forever).
            interval: seconds between looks.
        Raises:
            ResultTimeout: no result within ``timeout``.
            TaskFailed: the job ended in ``failed/``; its last error is attached.
            JobNotFound: the job is in no state: it finished without keeping a result (no
                ``result_ttl``), its result expired, or it never existed.  Said at once,
                not after ``timeout``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            entry = self._locate()
            if entry is None:
                raise JobNotFound(self.id)
            if entry.state == DONE:
                try:
                    return self.app.spool.read(entry.state, entry.name).result
                except JobGone:
                    continue  # expired just now: the next look says so
            if entry.state == FAILED:
                try:
                    job = self.app.spool.read(entry.state, entry.name)
                    raise TaskFailed(self.id, job.errors[-1] if job.errors else None)
                except (JobGone, JobFormatError):
                    raise TaskFailed(self.id, None) from None
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeout(f"no result for job {self.id!r} within {timeout:g} s")
            time.sleep(interval)

    def _locate(self) -> Entry | None:
        """Where the job is, or None once two looks in a row found it nowhere.

        One look checks the states one after another, so a job that moves between two of
        them can be missed.  The order is the one jobs move through (new, ready, active,
        delayed, then done or failed), so only a move against it (delayed or active back to
        ready, failed back to new) can hide a job from one look; a second look would have
        to meet another such move at the same moment to miss it too.
        """
        for _ in range(2):
            try:
                return self.app.spool.find(self.id, _MOVE_ORDER)
            except JobNotFound:
                continue
        return None


_MOVE_ORDER = (NEW, READY, ACTIVE, DELAYED, DONE, FAILED)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < _MAX_SECONDS:
        raise JobFormatError(f"{what} must be a non-negative number of seconds, got {value!r}", field=what)
    return float(value)


# About 3000 years: beyond it ``now + timedelta(seconds=...)`` overflows datetime (and NaN, inf fail too).
_MAX_SECONDS = 1e11
