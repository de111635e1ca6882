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
from .registry import Registry, discover
from .spool import DELAYED, NEW, READY, Spool
from .supervisor import Supervisor

log = logging.getLogger("spoolq.worker")


def load_registry(config: Config, includes: Sequence[str]) -> Registry:
    """Import the task modules of the configuration, the includes and the entry points."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)  # as celery -A does: modules next to the config are importable
    return discover((*config.imports, *includes))


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
    if registry.errors:
        lines.append("[load errors]")
        for err in registry.errors:
            lines.append(f"  ! {err.source}: {err.error}")
    return "\n".join(lines)


def _limit(value: float | None) -> str:
    return "none" if value is None else f"{value:g} s"


def _pending(spool: Spool) -> int:
    return sum(spool.count(s) for s in (NEW, READY, DELAYED))


def run_worker(config: Config, *, includes: Sequence[str] = (), burst: bool = False) -> int:
    """Run the supervisor as configured until it is stopped (or idle, with ``burst``).

    Returns:
        The exit status: 0 after a clean stop, 3 if the spool is held or unusable.
    """
    logging.basicConfig(
        level=getattr(logging, config.loglevel),
        format="[%(asctime)s %(levelname)s] %(message)s",
        stream=sys.stderr,
    )
    concurrency = config.concurrency or os.cpu_count() or 1
    spool = Spool(config.spool, fsync=config.fsync, max_job_size=config.max_job_size,
                  dir_mode=config.dir_mode, file_mode=config.file_mode)
    registry = load_registry(config, includes)
    click.echo(banner(config, registry, concurrency, burst))
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
        sup.start()
    except SpoolqError as exc:
        click.echo(f"Error: {exc}", err=True)
        return 3
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
