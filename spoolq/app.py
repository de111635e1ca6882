"""The producer's side: ``App``, ``send_task``, bulk enqueue, and which App is current.

An App is a spool plus a task registry.  Enqueueing builds a :class:`~spoolq.job.Job`, checks
it (JSON arguments, a safe id, the size limit) and publishes it into ``new/``; nothing else of
the spool is written by producers.  The call returns once the job is durable: that is the
acknowledgement.

Creating an App changes nothing global.  A task declared with the module-level
``@spoolq.task`` enqueues through :func:`current_app`, which is, in this order: the App
entered with ``with app:`` in this thread or task (``app.batch()`` enters it too), else the
App made the process default with :meth:`App.set_default`, else one built once from the
configuration (:meth:`App.from_config`: ``SPOOLQ_SPOOL``, ``./spoolq.ini``).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

from .clock import utcnow
from .codec import as_utc
from .config import Config, load_config
from .errors import DuplicateJob, JobFormatError, SpoolqError
from .job import MAX_PRIORITY, MIN_PRIORITY, Job, check_json_args, validate_id
from .registry import Registry, discover
from .result import AsyncResult
from .spool import Spool
from .task import Task, make_decorator

# The Apps entered with ``with app:`` in this context (thread or asyncio task), innermost last.
_entered: contextvars.ContextVar[tuple[App, ...]] = contextvars.ContextVar("spoolq_entered_apps", default=())
_default: App | None = None  # set only by App.set_default()
_configured: App | None = None  # built from the configuration on first need
_configured_lock = threading.Lock()


def current_app() -> App:
    """The App that tasks declared with the module-level ``@spoolq.task`` enqueue through.

    Returns:
        The App entered with ``with app:`` here (innermost), else the one made the process
        default with :meth:`App.set_default`, else one built from the configuration
        (``SPOOLQ_SPOOL``, ``./spoolq.ini``), once.
    Raises:
        ConfigError: no App is entered or set as default, and the configuration is invalid.
    """
    entered = _entered.get()
    if entered:
        return entered[-1]
    if _default is not None:
        return _default
    global _configured
    with _configured_lock:
        if _configured is None:
            _configured = App.from_config()
        return _configured


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
        self.spool = Spool(
            spool, fsync=fsync, max_job_size=max_job_size, dir_mode=dir_mode, file_mode=file_mode, create=False
        )
        self.imports = tuple(imports)
        self.clock = clock
        self.config = config
        self.registry = Registry()
        self.task = make_decorator(self.registry.register, app=self)
        self.task.__doc__ = "Declare a task bound to this App: ``@app.task`` or ``@app.task(name=..., ...)``."
        self._batch: list[Job] | None = None

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

    # -- being the current App ------------------------------------------------------------

    def __enter__(self) -> App:
        """Make this the current App for the block (this thread or asyncio task only)."""
        _entered.set((*_entered.get(), self))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack = list(_entered.get())
        for i in range(len(stack) - 1, -1, -1):  # the innermost entry of this App
            if stack[i] is self:
                del stack[i]
                break
        _entered.set(tuple(stack))

    def set_default(self) -> App:
        """Make this the current App of the whole process wherever no App is entered with
        ``with``; returns it.  The last call wins (it is the one explicit global)."""
        global _default
        _default = self
        return self

    # -- tasks --------------------------------------------------------------------------

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

    def send_task(
        self, name: str, args: list | tuple | None = None, kwargs: dict | None = None, **options: Any
    ) -> AsyncResult:
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
        one durability barrier; on an exception inside the block nothing is written.

        The App is entered for the block (``with app:``), so ``delay()`` on a task declared
        with the module-level ``@spoolq.task`` joins this batch too.
        """
        if self._batch is not None:
            raise SpoolqError("batches do not nest")
        self._batch = []
        try:
            with self:
                yield self._batch
            jobs = self._batch
        finally:
            self._batch = None
        self.spool.deliver(jobs)

    # -- results ------------------------------------------------------------------------

    def result(self, job_id: str) -> AsyncResult:
        """A handle on an existing job by id."""
        return AsyncResult(validate_id(job_id), self)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < _MAX_SECONDS:
        raise JobFormatError(f"{what} must be a non-negative number of seconds, got {value!r}", field=what)
    return float(value)


def _declare_only(task: Task) -> None:
    """An unbound task joins no registry: discovery finds it on its module."""


task = make_decorator(_declare_only, app_resolver=current_app)
task.__doc__ = """Declare a task that any App or worker runs by name (for code that does not know the spool).

Usable as ``@spoolq.task`` or ``@spoolq.task(name=..., max_retries=..., ...)``; the options
are those of :class:`~spoolq.task.Task`.  The task is declared on its module (discovery finds
it there); its ``delay()`` enqueues through :func:`current_app`.
"""

# About 3000 years: beyond it ``now + timedelta(seconds=...)`` overflows datetime (and NaN, inf fail too).
_MAX_SECONDS = 1e11
