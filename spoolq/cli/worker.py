"""``spoolq worker``: wire the configuration, the tasks and the supervisor together, and run it.

The supervisor never prints: the banner, the log format and the progress bar of ``--burst``
live here.  :mod:`spoolq.supervisor` is imported when the command runs, not when the
``spoolq`` command starts, so ``spoolq send`` does not pay for the pool's imports.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import click

from .. import __version__
from ..config import Config, load_config
from ..errors import SpoolqError
from ..job import Job
from ..layout import DELAYED, NEW, READY, printable
from ..registry import Registry, load_for_command
from ..spool import Spool
from .group import EXIT_JOB, EXIT_SPOOL, Options, main, pass_options

log = logging.getLogger("spoolq.worker")  # the command's own lines; the loop's are spoolq.supervisor's

_LOGLEVELS = click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False)


@main.command()
@click.option("-c", "--concurrency", type=click.IntRange(min=1), metavar="N", help="Worker processes [CPU count].")
@click.option("-I", "--include", "includes", multiple=True, metavar="MODULE", help="Import this task module.")
@click.option("--max-tasks-per-child", type=click.IntRange(min=1), metavar="N", help="Replace a worker after N jobs.")
@click.option("--time-limit", type=click.FloatRange(min=0), metavar="S", help="Hard limit per job: kill after S s.")
@click.option("--soft-time-limit", type=click.FloatRange(min=0), metavar="S", help="Raise in the task after S s.")
@click.option("--soft-time-limit-grace", type=click.FloatRange(min=0), metavar="S", help="Then kill S s later [30].")
@click.option("--shutdown-timeout", type=click.FloatRange(min=0), metavar="S", help="Grace for running jobs [30].")
@click.option("--burst", is_flag=True, help="Exit once nothing is due.")
@click.option("-l", "--loglevel", type=_LOGLEVELS, help="Logging level, any case [INFO].")
@pass_options
def worker(
    opts: Options,
    concurrency: int | None,
    includes: tuple[str, ...],
    max_tasks_per_child: int | None,
    time_limit: float | None,
    soft_time_limit: float | None,
    shutdown_timeout: float | None,
    burst: bool,
    loglevel: str | None,
    soft_time_limit_grace: float | None,
) -> None:
    """Run the supervisor and its pool of worker processes on the spool (created if missing).

    One worker per spool: a second one exits (status 3) naming the holder's pid.  A task
    module that does not import (-I, imports =, a spoolq.tasks entry point) stops the start
    (status 1), as with Celery: its jobs would otherwise all fail as TaskNotFound.  The
    current directory is searched first for task modules.

    \b
    Examples:
      spoolq --spool /var/spool/myapp worker -c 4 -I myapp.tasks
      spoolq worker --burst -l debug
    """
    options = {
        "spool": opts.spool,
        "concurrency": concurrency,
        "max_tasks_per_child": max_tasks_per_child,
        "time_limit": time_limit,
        "soft_time_limit": soft_time_limit,
        "shutdown_timeout": shutdown_timeout,
        "loglevel": loglevel.upper() if loglevel else None,
        "soft_time_limit_grace": soft_time_limit_grace,
    }
    config = load_config(opts.config_file, options=options)
    sys.exit(run_worker(config, includes=tuple(includes), burst=burst))


def banner(config: Config, registry: Registry, concurrency: int, burst: bool) -> str:
    """The start-up text: where, how many, which tasks (and what failed to load)."""
    per_child = f", max {config.max_tasks_per_child} tasks per child" if config.max_tasks_per_child else ""
    lines = [
        f"spoolq worker {__version__} (pid {os.getpid()})",
        f"  spool:        {os.path.abspath(config.spool)}",
        f"  config:       {config.file or 'none (defaults and environment)'}",
        f"  concurrency:  {concurrency} processes{per_child}",
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
    (:func:`~spoolq.layout.printable`), so no input can forge a log line or move a cursor."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = printable(record.message)
        return super().formatMessage(record)


def _limit(value: float | None) -> str:
    return "none" if value is None else f"{value:g} s"


def _pending(spool: Spool) -> int:
    return sum(spool.count(s) for s in (NEW, READY, DELAYED))


def _progress(spool: Spool) -> tuple[Any, Callable[[str, Job | None, str], None]]:
    """A progress bar of the jobs ``--burst`` has to do, and the supervisor's event hook
    that moves it."""
    bar: Any = click.progressbar(length=max(1, _pending(spool)), label="jobs", file=sys.stderr, show_pos=True)

    def on_event(event: str, job: Job | None, detail: str) -> None:
        if event in ("succeeded", "failed", "rejected"):
            bar.update(1)
        elif event == "received" and bar.pos >= bar.length:
            bar.length += 1

    return bar, on_event


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
    registry = load_for_command((*config.imports, *includes), cwd=os.getcwd())
    if registry.errors:
        for err in registry.errors:
            click.echo(f"Error: cannot load {err.source}: {err.error}", err=True)
        return EXIT_JOB
    from ..supervisor import Supervisor  # here: a start refused above needs none of the pool's imports

    spool = Spool(
        config.spool,
        fsync=config.fsync,
        max_job_size=config.max_job_size,
        dir_mode=config.dir_mode,
        file_mode=config.file_mode,
    )
    progress, on_event = _progress(spool) if burst and sys.stderr.isatty() else (None, None)
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
        click.echo(banner(config, registry, concurrency, burst))
        try:
            sup.start()
        except (SpoolqError, OSError) as exc:  # the pool's start may fail outside the spool
            click.echo(f"Error: {exc}", err=True)
            return EXIT_SPOOL
        sup.install_signal_handlers()
        log.info("ready: %d task(s), pool children %s", len(registry.names()), sup.pool.pids())
        try:
            status = sup.run()
        finally:
            if progress is not None:
                progress.render_finish()
        c = sup.counts
        counts = (c["received"], c["succeeded"], c["retried"], c["failed"], c["rejected"])
        log.info("stopped: %d received, %d succeeded, %d retried, %d failed, %d rejected", *counts)
        return status
    finally:
        sup.lock.release()
