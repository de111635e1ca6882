"""Commands that only look: ``status``, ``ls``, ``show``, ``result`` and ``tasks``.

None of them writes to the spool or creates a missing one.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from datetime import datetime
from typing import Any

import click

from ..app import App
from ..codec import format_ts
from ..errors import JobFormatError, JobGone, JobNotFound, ResultTimeout, SpoolqError
from ..layout import BAD_SUFFIX, DELAYED, LIVE_STATES, REASON_SUFFIX, STATES, file_kind, reason_name
from ..registry import load_for_command
from ..spool import Entry, Spool
from .group import (
    EXIT_JOB,
    EXIT_TIMEOUT,
    Fail,
    Options,
    age,
    emit_json,
    job_id_arg,
    locate,
    main,
    mode_of,
    pass_options,
    shown,
    table,
)

ERROR_WIDTH = 60  # characters of the last error ``ls`` shows


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_options
def status(opts: Options, as_json: bool) -> None:
    """Show how many files each state holds, their ages, and whether a worker runs.

    Ages are seconds since each file was last written (a retry rewrites it).

    \b
    Examples:
      spoolq status
      spoolq --spool /var/spool/myapp status --json
    """
    spool = opts.open_spool()
    now = time.time()
    states = {}
    for state in STATES:
        mtimes = []
        for e in spool.scan(state):
            if e.name.endswith(REASON_SUFFIX):
                continue
            try:
                mtimes.append(spool.lstat(state, e.name).st_mtime)
            except JobGone:  # moved while we looked
                continue
        states[state] = {
            "count": len(mtimes),
            "oldest_age_s": round(now - min(mtimes), 3) if mtimes else None,
            "newest_age_s": round(now - max(mtimes), 3) if mtimes else None,
        }
    lock = spool.lock()
    held = lock.is_held()
    pid = lock.holder() if held else None
    if as_json:
        emit_json({"spool": str(spool.path), "supervisor": {"running": held, "pid": pid}, "states": states})
        return
    click.echo(f"spool {spool.path}")
    running = click.style(f"running (pid {pid})" if pid else "running", fg="green") if held else "not running"
    click.echo(f"supervisor: {running}")
    rows = [[s, str(v["count"]), age(v["oldest_age_s"]), age(v["newest_age_s"])] for s, v in states.items()]
    table(["STATE", "COUNT", "OLDEST", "NEWEST"], rows, colour_col=0)


def _one_line(text: str, width: int = ERROR_WIDTH) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _reason(spool: Spool, entry: Entry) -> str:
    """Why a rejected file was rejected: its ``.reason`` file beside it."""
    try:
        data = spool.read_bytes(entry.state, reason_name(entry.name))
    except SpoolqError:
        return "rejected (no reason file)"
    return data.decode("utf-8", "replace").strip()


def _describe(spool: Spool, entry: Entry, now: float) -> dict | None:
    """One row of ``ls`` as a dict, or None if the file vanished meanwhile."""
    row: dict[str, Any] = {
        "id": entry.job_id or entry.name,
        "task": None,
        "state": entry.state,
        "age_s": None,
        "retries": None,
        "last_error": None,
        "due": None,
        "path": str(entry.path),
    }
    if entry.state == DELAYED and entry.when is not None:  # the name says when it is due
        row["due"] = format_ts(entry.when)
    if entry.name.endswith(BAD_SUFFIX):
        row["rejected"] = True
        row["last_error"] = _reason(spool, entry)
        try:
            row["age_s"] = round(now - spool.lstat(entry.state, entry.name).st_mtime, 3)
        except JobGone:
            return None
        return row
    try:
        job = spool.read(entry.state, entry.name)
    except JobGone:
        return None
    except JobFormatError as exc:
        row["last_error"] = f"unreadable: {exc}"
        return row
    last = job.errors[-1] if job.errors else None
    row.update(
        task=job.task,
        age_s=round(now - job.enqueued_at.timestamp(), 3),
        retries=job.retries,
        eta=job.to_dict()["eta"],
        last_error=f"{last.get('type')}: {last.get('message')}" if last else None,
    )
    return row


@main.command(name="ls")
@click.argument("state", required=False, type=click.Choice([*STATES, "all"]))
@click.option("--task", "task_name", metavar="NAME", help="Only jobs of this task.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="At most N rows.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_options
def ls(opts: Options, state: str | None, task_name: str | None, limit: int | None, as_json: bool) -> None:
    """List jobs: id, task, state, age since enqueued, due time (delayed jobs), retries,
    last error.

    STATE is one of new, ready, active, delayed, failed, done, or all; the default is the
    live states (new, ready, active, delayed).  Rejected files in failed/ (ending in .bad)
    are listed by file name with the reason they were rejected; show, delete and retry
    take that name.

    \b
    Examples:
      spoolq ls
      spoolq ls failed --task NAME.echofunction --limit 20
      spoolq ls all --json
    """
    spool = opts.open_spool()
    states = LIVE_STATES if state is None else (STATES if state == "all" else (state,))
    rows: list[dict] = []
    now = time.time()
    for s in states:
        for entry in spool.entries(s):
            if limit is not None and len(rows) >= limit:
                break
            if entry.name.endswith(REASON_SUFFIX):
                continue
            row = _describe(spool, entry, now)
            if row is not None and (task_name is None or row["task"] == task_name):
                rows.append(row)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no jobs", err=True)
        return
    lines = [
        [
            r["id"],
            r["task"] or "-",
            r["state"],
            age(r["age_s"]),
            "-" if r["retries"] is None else r["retries"],
            _one_line(r["last_error"]) if r["last_error"] else "",
        ]
        for r in rows
    ]
    headers = ["ID", "TASK", "STATE", "AGE", "RETRIES", "LAST ERROR"]
    if any(r["state"] == DELAYED for r in rows):
        headers.insert(4, "DUE")
        for r, line in zip(rows, lines, strict=True):
            line.insert(4, _due(r["due"], now))
    table(headers, lines, colour_col=2)


def _due(due: str | None, now: float) -> str:
    """``2026-11-25 03:15:00Z (in 5.0m)``, or ``-`` for a job that is not delayed."""
    if due is None:
        return "-"
    when = datetime.fromisoformat(due[:-1] + "+00:00")
    left = when.timestamp() - now
    return f"{due[:10]} {due[11:19]}Z ({'in ' + age(left) if left > 0 else 'now'})"


@main.command()
@click.argument("job_id", metavar="ID")
@pass_options
def show(opts: Options, job_id: str) -> None:
    """Print a job as pretty JSON, with its state and path.

    ID may also be a file name in failed/ as spoolq ls failed prints it: a rejected file
    (ending in .bad) is shown with the reason it was rejected, not opened.

    \b
    Examples:
      spoolq show 5f0c7a9e-2d1b-4c7e-9a51-0e3f2b8d6c11
      spoolq show 20261125T031500.123456Z-upload.json.bad
    """
    spool = opts.open_spool()
    entry = locate(spool, job_id)
    out: dict[str, Any] = {"state": entry.state, "path": shown(str(entry.path))}
    if entry.job_id is None:
        mode = mode_of(spool, entry)
        out.update(
            rejected=True,
            name=shown(entry.name),
            kind="file" if stat.S_ISREG(mode) else file_kind(mode),
            reason=_reason(spool, entry),
        )
        emit_json(out)
        return
    try:
        out["job"] = spool.read(entry.state, entry.name).to_dict()
    except JobFormatError as exc:
        out["error"] = f"unreadable: {exc}"
    emit_json(out)


@main.command()
@click.option("-I", "--include", "includes", multiple=True, metavar="MODULE", help="Also import this module.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_options
def tasks(opts: Options, includes: tuple[str, ...], as_json: bool) -> None:
    """List the tasks found through entry points (group spoolq.tasks), the configured
    imports and -I modules, and why any of them failed to load (exit 1: a worker would
    refuse to start).  Modules are searched as the worker searches them: the current
    directory first.

    \b
    Examples:
      spoolq tasks
      spoolq tasks -I myapp.tasks -I myapp.reports --json
    """
    c = opts.config()
    registry = load_for_command((*c.imports, *includes), cwd=os.getcwd())  # exactly as the worker finds them
    found = [{"name": n, "origin": registry.origin(n)} for n in registry.names()]
    errors = [{"source": e.source, "error": e.error} for e in registry.errors]
    if as_json:
        emit_json({"tasks": found, "errors": errors})
    else:
        if found:
            table(["TASK", "ORIGIN"], [[t["name"], t["origin"]] for t in found])
        else:
            click.echo("no tasks found")
        for e in errors:
            click.echo(click.style("cannot load ", fg="red") + f"{e['source']}: {e['error']}", err=True)
    if errors:
        sys.exit(EXIT_JOB)


@main.command()
@click.argument("job_id", metavar="ID")
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    metavar="S",
    help="Wait up to S seconds for the job to finish.",
)
@pass_options
def result(opts: Options, job_id: str, wait: float) -> None:
    """Print the kept result of a job as JSON (for tasks with result_ttl).

    Exit 1 with the job's last error if it failed, or at once if the job is in no state (it
    finished without keeping a result, or never existed); exit 4 if it has not finished
    within --wait.

    \b
    Examples:
      spoolq result 5f0c7a9e-2d1b-4c7e-9a51-0e3f2b8d6c11
      spoolq result nightly-2026-11-25 --wait 30
    """
    spool = opts.open_spool()
    app = App(spool.path, max_job_size=spool.max_job_size)
    handle = app.result(job_id_arg(job_id))
    try:
        value = handle.get(timeout=wait)
    except JobNotFound:
        raise Fail(f"no job with id {job_id!r} in the spool (or it finished keeping no result)", EXIT_JOB) from None
    except ResultTimeout:
        state = handle.state
        raise Fail(f"job {job_id!r} is {state}: no result within {wait:g} s", EXIT_TIMEOUT) from None
    click.echo(json.dumps(value, ensure_ascii=False))
