"""Task discovery: name → task, filled from entry points and includes (SPEC §4).

An extension declares, in its ``setup.py``::

    entry_points={"spoolq.tasks": ["echo = ckanext.echo.plugin:task_imports"]}

The entry point names either a module (imported for its tasks) or a function returning the
module paths to import, as CKAN's ``task_imports`` did for Celery.  One broken entry point is
recorded with its name and error and does not hide the others.

Tasks are declared on their modules (:func:`spoolq.task.declared_in`), not in a process-wide
table.  Importing a source collects the tasks of the module named and of every module newly
imported while it loaded (a package whose ``__init__`` imports its ``tasks``); each module
that contributed is listed in :attr:`Registry.modules`, which a pool child imports in turn to
find exactly the same tasks.  A registry knows only what was registered in it or discovered
for it.
"""

from __future__ import annotations

import importlib
import sys
import traceback
import types
from collections.abc import Iterable
from dataclasses import dataclass, field

from .errors import TaskNotFound
from .task import Task, declared_in

ENTRY_POINT_GROUP = "spoolq.tasks"


@dataclass(frozen=True)
class LoadError:
    """A source of tasks that could not be loaded."""

    source: str  # "entry point echo (ckanext.echo.plugin:task_imports)" or "include foo.bar"
    error: str  # "ModuleNotFoundError: No module named 'foo'"
    traceback: str = ""


@dataclass
class Registry:
    """Tasks by name, with where each came from and what failed to load."""

    tasks: dict[str, Task] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    errors: list[LoadError] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)  # imported, in order, for pool children

    def register(self, task: Task, origin: str = "") -> None:
        """Add a task; a later registration of the same name wins, as in Celery."""
        self.tasks[task.name] = task
        self.origins[task.name] = origin or task.func.__module__

    def get(self, name: str) -> Task:
        """The task of that name in this registry.

        Raises:
            TaskNotFound: no task has that name.
        """
        task = self.tasks.get(name)
        if task is None:
            raise TaskNotFound(name)
        return task

    def __contains__(self, name: object) -> bool:
        return name in self.tasks

    def names(self) -> list[str]:
        """Every task name, sorted."""
        return sorted(self.tasks)

    def origin(self, name: str) -> str:
        """Where a task came from, for the banner and ``spoolq tasks``."""
        return self.origins.get(name, "?")

    # -- discovery ----------------------------------------------------------------------

    def import_module(self, module: str, source: str) -> bool:
        """Import a task module and take in its tasks (see the module's docstring), or
        record the error; True on success."""
        before = set(sys.modules)
        try:
            importlib.import_module(module)
        except BaseException as exc:  # noqa: BLE001 - any import failure (even SystemExit) is reported
            if isinstance(exc, KeyboardInterrupt):
                raise
            self.errors.append(LoadError(source, _one_line(exc), traceback.format_exc()))
            return False
        self.collect(module, before, source)
        return True

    def collect(self, module: str | None, before: set[str], source: str) -> None:
        """Take in the tasks declared on ``module`` (imported; None for none) and on the
        modules imported since ``before`` (a snapshot of ``sys.modules``' names), recording
        ``module`` and each other module that declares tasks in :attr:`modules`, and
        ``source`` as their tasks' origin."""
        found = [name for name in list(sys.modules) if name not in before and name != module]
        if module is not None:
            found.insert(0, module)
        for name in found:
            mod = sys.modules.get(name)
            declared = declared_in(mod) if isinstance(mod, types.ModuleType) else []
            if name != module and not declared:
                continue
            if name not in self.modules:
                self.modules.append(name)
            for task in declared:
                self.register(task, source)

    def load_includes(self, modules: Iterable[str]) -> None:
        """Import ``--include`` / ``imports =`` modules."""
        for module in modules:
            self.import_module(module, f"include {module}")

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        """Load every entry point of the group; each failure is recorded, none stops the rest."""
        try:
            from importlib.metadata import entry_points  # here: pool children never need it, and it is slow

            eps = sorted(entry_points(group=group), key=lambda ep: ep.name)
        except Exception as exc:  # noqa: BLE001 - broken metadata must not stop the worker
            self.errors.append(LoadError(f"entry points {group}", _one_line(exc)))
            return
        for ep in eps:
            label = f"entry point {ep.name} ({ep.value})"
            before = set(sys.modules)  # what loading it imports may declare tasks too
            try:
                target = ep.load()
            except BaseException as exc:  # noqa: BLE001
                if isinstance(exc, KeyboardInterrupt):
                    raise
                self.errors.append(LoadError(label, _one_line(exc), traceback.format_exc()))
                continue
            if isinstance(target, types.ModuleType):
                self.collect(target.__name__, before, label)
                continue
            if not callable(target):
                self.errors.append(LoadError(label, f"TypeError: {ep.value} is neither a module nor a function"))
                continue
            self.collect(None, before, label)  # tasks its module declares, or imports
            try:
                modules = target()
                if isinstance(modules, str):
                    modules = [modules]
                modules = [str(m) for m in modules]
            except BaseException as exc:  # noqa: BLE001
                if isinstance(exc, KeyboardInterrupt):
                    raise
                self.errors.append(LoadError(label, _one_line(exc), traceback.format_exc()))
                continue
            for module in modules:
                self.import_module(module, label)


def discover(includes: Iterable[str] = (), *, use_entry_points: bool = True) -> Registry:
    """A registry of the tasks of the includes and (by default) the entry points."""
    registry = Registry()
    if use_entry_points:
        registry.load_entry_points()
    registry.load_includes(includes)
    return registry


def load_for_command(modules: Iterable[str], *, cwd: str) -> Registry:
    """The tasks as ``spoolq worker`` and ``spoolq tasks`` find them, the same for both:
    entry points, then ``modules``, with ``cwd`` (the command's working directory) first on
    ``sys.path``, as ``celery -A`` has it, so a module next to the config is importable.

    ``sys.path`` keeps ``cwd``: the pool's children inherit it to import the same modules.
    """
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    return discover(modules)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
