"""Tasks: a function with a name and a retry policy, callable now or later.

``@app.task`` binds a task to one App; the module-level ``@spoolq.task`` leaves it unbound so
an extension can ship tasks without knowing where the spool is (Celery's ``shared_task``):
every App resolves such a task by name, and ``delay()`` on it uses the current App.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .errors import Retry

if TYPE_CHECKING:
    from .app import App, AsyncResult

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
    """

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        name: str | None = None,
        app: App | None = None,
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
        functools.update_wrapper(self, func)  # type: ignore[arg-type]

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

    def _app(self) -> App:
        if self.app is not None:
            return self.app
        from .app import current_app

        return current_app()

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


# Every task declared in this process, by name, bound or not: a worker that imports a module
# finds its tasks whichever App (or none) they were declared on, as Celery's shared_task does.
_shared: dict[str, Task] = {}


def declare(t: Task) -> None:
    """Make a task visible to every App of this process by name."""
    _shared[t.name] = t


def shared_tasks() -> dict[str, Task]:
    """The tasks declared in this process so far, by name."""
    return dict(_shared)


def make_decorator(register: Callable[[Task], None], app: App | None) -> Callable[..., Any]:
    """Build a ``@task`` / ``@task(...)`` decorator that registers through ``register``."""

    def task(func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        def wrap(f: Callable[..., Any]) -> Task:
            t = Task(f, app=app, **options)
            register(t)
            return t

        return wrap(func) if func is not None else wrap

    return task


task = make_decorator(declare, None)
task.__doc__ = """Declare a task that any App runs by name (for extensions that do not know the spool).

Usable as ``@spoolq.task`` or ``@spoolq.task(name=..., max_retries=..., ...)``; the options
are those of :class:`Task`.
"""
