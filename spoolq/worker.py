"""``spoolq worker``: wire the configuration, the tasks and the supervisor together.

Kept apart from :mod:`spoolq.supervisor` so the loop never prints: the banner, the log
format and the progress bar of ``--burst`` live here.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from . import __version__
from .config import Config
from .errors import SpoolqError
from .job import Job
from .layout import DELAYED, NEW, READY, printable
from .registry import Registry, load_for_command
from .spool import Spool
from .supervisor import Supervisor

log = logging.getLogger("spoolq.worker")


# Exit statuses, as documented in ``spoolq --help``.
EXIT_LOAD, EXIT_SPOOL = 1, 3


def load_registry(config: Config, includes: Sequence[str]) -> Registry:
    """Import the task modules of the configuration, the includes and the entry points."""
    return load_for_command((*config.imports, *includes), cwd=os.getcwd())


def banner(config: Config, registry: Registry, concurrency: int, burst: bool) -> str:
    """The start-up text: where, how many, which tasks (and what failed to load)."""
    lines = [
        f"spoolq worker {__version__} (pid {os.getpid()})",
        f"  spool:        {os.path.abspath(config.spool)}",
        f"  config:       {config.file or 'none (defaults and environment)'}",
        f"  concurrency:  {concurrency} processes"
        + (f", max {config.max_tasks_per_child} tasks per child" if config.max_tasks_per_child else ""),
        f"  time limits:  soft {_limit(config.soft_time_limit)}, hard {_limit(config.time_limit)}, "
        f"{config.soft_time_limit_grace:g} s of grace after a soft limit",
        f"  durability:   {'fsync on' if config.fsync else 'fsync OFF (not power-loss safe)'}",
        f"  mode:         {'burst (exit when idle)' if burst else 'daemon'}",
        "[tasks]",
    ]
    names = registry.names()
    if not names:
        lines.append("  (none: use --include MODULE, imports = in the config, or a spoolq.tasks entry point)")
    for name in names:
        lines.append(f"  . {name}  ({registry.origin(name)})")
    return "\n".join(lines)


class PrintableFormatter(logging.Formatter):
    """One log line per event, whatever a job file holds: a task name or a file name with a
    newline, a terminal escape or bytes that are not UTF-8 is written escaped
    (:func:`~spoolq.spool.printable`), so no input can forge a log line or move a cursor."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = printable(record.message)
        return super().formatMessage(record)


def _limit(value: float | None) -> str:
    return "none" if value is None else f"{value:g} s"


def _pending(spool: Spool) -> int:
    return sum(spool.count(s) for s in (NEW, READY, DELAYED))


def run_worker(config: Config, *, includes: Sequence[str] = (), burst: bool = False) -> int:
    """Run the supervisor as configured until it is stopped (or idle, with ``burst``).

    Refuses to start, before printing its banner, when a task source does not load (a typo
    in ``-I``/``imports``, a broken entry point: every job of its tasks would fail as
    ``TaskNotFound``) or when another worker holds the spool.

    Returns:
        The exit status: 0 after a clean stop, 1 if a task source did not load, 3 if the
        spool is held or unusable.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(PrintableFormatter("[%(asctime)s %(levelname)s] %(message)s"))
    logging.basicConfig(level=getattr(logging, config.loglevel), handlers=[handler])
    concurrency = config.concurrency or os.cpu_count() or 1
    registry = load_registry(config, includes)
    if registry.errors:
        for err in registry.errors:
            click.echo(f"Error: cannot load {err.source}: {err.error}", err=True)
        return EXIT_LOAD
    spool = Spool(config.spool, fsync=config.fsync, max_job_size=config.max_job_size,
                  dir_mode=config.dir_mode, file_mode=config.file_mode)
    progress: Any = None
    on_event = None
    if burst and sys.stderr.isatty():
        progress = click.progressbar(length=max(1, _pending(spool)), label="jobs", file=sys.stderr,
                                     show_pos=True)

        def on_event(event: str, job: Job | None, detail: str) -> None:
            if event in ("succeeded", "failed", "rejected"):
                progress.update(1)
            elif event == "received" and progress.pos >= progress.length:
                progress.length += 1

    sup = Supervisor(
        spool,
        registry,
        concurrency=concurrency,
        max_tasks_per_child=config.max_tasks_per_child,
        time_limit=config.time_limit,
        soft_time_limit=config.soft_time_limit,
        soft_time_limit_grace=config.soft_time_limit_grace,
        shutdown_timeout=config.shutdown_timeout,
        rescan_interval=config.rescan_interval,
        tmp_max_age=config.tmp_max_age,
        burst=burst,
        burst_horizon=config.burst_horizon,
        on_event=on_event,
    )
    try:
        # Before the banner, so that a second worker says only why it cannot start.  The
        # lock is re-entrant: start() takes it again; the release below balances this one.
        sup.lock.acquire()
    except SpoolqError as exc:
        click.echo(f"Error: {exc}", err=True)
        return EXIT_SPOOL
    try:
        return _run(sup, registry, progress, banner(config, registry, concurrency, burst))
    finally:
        sup.lock.release()


def _run(sup: Supervisor, registry: Registry, progress: Any, banner_text: str) -> int:
    click.echo(banner_text)
    try:
        sup.start()
    except (SpoolqError, OSError) as exc:
        click.echo(f"Error: {exc}", err=True)
        return EXIT_SPOOL
    sup.install_signal_handlers()
    log.info("ready: %d task(s), pool pids %s", len(registry.names()), sup.pool.pids())
    try:
        status = sup.run()
    finally:
        if progress is not None:
            progress.render_finish()
    c = sup.counts
    log.info("stopped: %d received, %d succeeded, %d retried, %d failed, %d rejected",
             c["received"], c["succeeded"], c["retried"], c["failed"], c["rejected"])
    return status
