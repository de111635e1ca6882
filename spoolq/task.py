"""Tasks: a function with a name and a retry policy, callable now or later.

``@app.task`` binds a task to one App; the module-level ``@spoolq.task`` leaves it unbound so
an extension can ship tasks without knowing where the spool is (Celery's ``shared_task``).

A task is declared *on its module*: both decorators append it to the list
``__spoolq_tasks__`` of the module that defines its function (:func:`declared_in` reads it).
There is no process-wide table of tasks: a registry holds exactly the tasks of the modules
discovery imported for it (:mod:`spoolq.registry`), so two Apps, two tests or two workers in
one process never see each other's tasks by accident.

An unbound task's ``delay()`` asks a resolver for its App; the module-level decorator is
built in :mod:`spoolq.app` with ``current_app`` as that resolver, so this module imports
nothing from ``app`` (the import graph has no circle).
"""

from __future__ import annotations

import functools
import sys
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from .errors import Retry, SpoolqError
from .result import AsyncResult

DEFAULT_MAX_RETRIES = 3  # Celery's default
DEFAULT_RETRY_DELAY = 180.0  # seconds; Celery's default_retry_delay


@dataclass
class Request:
    """What a running task knows about its job (``task.request`` / ``self.request``)."""

    id: str | None = None
    retries: int = 0
    args: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    eta: datetime | None = None
    max_retries: int | None = None
    called_directly: bool = True


_local = threading.local()

# The module attribute a task is declared in (a list, in declaration order).
TASKS_ATTR = "__spoolq_tasks__"


class Producer(Protocol):
    """What a task enqueues through: an :class:`~spoolq.app.App`."""

    def send_task(
        self, name: str, args: list | tuple | None = None, kwargs: dict | None = None, **options: Any
    ) -> AsyncResult: ...


def current_request() -> Request:
    """The request of the job running in this thread, or an empty one for direct calls."""
    return getattr(_local, "request", None) or Request()


def set_request(request: Request | None) -> None:
    """Set by the runner around each job; None after it."""
    _local.request = request


class Task:
    """A registered task.

    Parameters:
        func: the function; with ``bind=True`` it receives the task as first argument.
        name: the name producers send by; default ``module.function``.
        max_retries: retries allowed after the first run (None: unlimited).
        retry_delay: seconds ``retry()`` waits when given no countdown or eta.
        autoretry_for: exception types that retry automatically instead of failing.
        retry_backoff: with autoretry, exponential backoff; a number is the first delay in
            seconds, True means 1 s.
        retry_backoff_max: cap of the backoff, in seconds.
        retry_jitter: randomise backoff delays (full jitter) so retries do not stampede.
        result_ttl: keep the return value in ``done/`` for this many seconds (None: discard).
        time_limit, soft_time_limit: per-job limits in seconds (None: the worker's).
        priority: 0 to 9, higher runs first.
        app: the App this task enqueues through (``@app.task``).
        app_resolver: for an unbound task, returns the App to enqueue through when
            ``delay()`` is called (``@spoolq.task`` passes ``current_app``).
    """

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        name: str | None = None,
        app: Producer | None = None,
        app_resolver: Callable[[], Producer] | None = None,
        bind: bool = False,
        max_retries: int | None = DEFAULT_MAX_RETRIES,
        retry_delay: float = DEFAULT_RETRY_DELAY,
        autoretry_for: tuple[type[BaseException], ...] = (),
        retry_backoff: bool | float = False,
        retry_backoff_max: float = 600.0,
        retry_jitter: bool = True,
        result_ttl: float | None = None,
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
        priority: int = 0,
    ) -> None:
        self.func = func
        self.name = name or f"{func.__module__}.{func.__qualname__}"
        self.app = app
        self.app_resolver = app_resolver
        self.bind = bind
        self.max_retries = max_retries
        self.retry_delay = retry_delay
        self.autoretry_for = tuple(autoretry_for)
        self.retry_backoff = retry_backoff
        self.retry_backoff_max = retry_backoff_max
        self.retry_jitter = retry_jitter
        self.result_ttl = result_ttl
        self.time_limit = time_limit
        self.soft_time_limit = soft_time_limit
        self.priority = priority
        functools.update_wrapper(self, func)

    def __repr__(self) -> str:
        return f"<spoolq.Task {self.name}>"

    @property
    def request(self) -> Request:
        """The running job's request (empty when called directly)."""
        return current_request()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task now, in this process, as Celery does for a direct call."""
        if self.bind:
            return self.func(self, *args, **kwargs)
        return self.func(*args, **kwargs)

    def _app(self) -> Producer:
        if self.app is not None:
            return self.app
        if self.app_resolver is not None:
            return self.app_resolver()
        raise SpoolqError(
            f"task {self.name!r} belongs to no App: declare it with @app.task, or send it by name with app.send_task"
        )

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Enqueue with these arguments, due now."""
        return self.apply_async(args=args, kwargs=kwargs)

    def apply_async(
        self,
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
    ) -> AsyncResult:
        """Enqueue with options; see :meth:`App.send_task` for each one."""
        return self._app().send_task(
            self.name,
            args=args,
            kwargs=kwargs,
            countdown=countdown,
            eta=eta,
            task_id=task_id,
            priority=self.priority if priority is None else priority,
            expires=expires,
            max_retries=max_retries,
            result_ttl=self.result_ttl if result_ttl is None else result_ttl,
            time_limit=time_limit,
        )

    def retry(
        self,
        args: list | tuple | None = None,
        kwargs: dict | None = None,
        exc: BaseException | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        max_retries: int | None = None,
        throw: bool = True,
    ) -> Retry:
        """Ask for this job to run again later; raises :class:`Retry` (returns it when
        ``throw`` is false, for ``raise task.retry(...)``).

        Parameters:
            args, kwargs: arguments for the next run (default: the same).
            exc: the error that caused the retry; recorded in the job's history and, when
                retries are exhausted, the reason it fails.
            countdown: seconds to wait (default: the task's ``retry_delay``, 180 s).
            eta: when to run again; wins over ``countdown``.
            max_retries: a new retry budget for this job.
        Raises:
            Retry: always, unless ``throw`` is false.
        """
        retry = Retry(exc, countdown=countdown, eta=eta, args=args, kwargs=kwargs, max_retries=max_retries)
        if throw:
            raise retry
        return retry


def declare(t: Task) -> None:
    """Declare a task on the module that defines its function (its ``__spoolq_tasks__``).

    A function whose module is not imported (code run with ``exec``) declares nowhere: its
    task is used through an App's registry, or not at all.
    """
    module = sys.modules.get(getattr(t.func, "__module__", None) or "")
    if module is None:
        return
    declared = vars(module).setdefault(TASKS_ATTR, [])
    if isinstance(declared, list):
        declared.append(t)


def declared_in(module: types.ModuleType) -> list[Task]:
    """The tasks declared on a module, in order (read from its namespace, so a module's
    ``__getattr__`` is never called)."""
    declared = vars(module).get(TASKS_ATTR)
    if not isinstance(declared, list):
        return []
    return [t for t in declared if isinstance(t, Task)]


def make_decorator(
    register: Callable[[Task], None], *, app: Producer | None = None, app_resolver: Callable[[], Producer] | None = None
) -> Callable[..., Any]:
    """Build a ``@task`` / ``@task(...)`` decorator: each task is declared on its module,
    then handed to ``register`` (an App's registry, or nothing for unbound tasks)."""

    def task(func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        def wrap(f: Callable[..., Any]) -> Task:
            t = Task(f, app=app, app_resolver=app_resolver, **options)
            declare(t)
            register(t)
            return t

        return wrap(func) if func is not None else wrap

    return task
