"""Commands that change what is queued: ``retry``, ``delete`` and ``purge``.

They act on jobs that are not running (never on ``active/``) and only through the spool's
own moves and removals (:mod:`spoolq.spool`, :mod:`spoolq.replay`).
"""

from __future__ import annotations

import stat
import sys

import click

from ..errors import JobFormatError, JobGone, JobNotFound, SpoolError
from ..layout import ACTIVE, BAD_SUFFIX, FAILED, NEW, STATES, reason_name
from ..replay import CLEANED, CONFLICT, GONE, live_ids, replay
from ..spool import Entry, Spool
from .group import EXIT_JOB, Fail, Options, failed_file, job_id_arg, locate, main, mode_of, pass_options, shown


@main.command()
@click.argument("job_id", metavar="ID")
@pass_options
def delete(opts: Options, job_id: str) -> None:
    """Remove a job that is not running (queued, delayed, failed, or a kept result).

    ID may also be a file name in failed/ as spoolq ls failed prints it: a rejected file
    (removed with its .reason), or one failed copy of an id.

    \b
    Examples:
      spoolq delete nightly-2026-11-25
      spoolq delete 20261125T031500.123456Z-upload.json.bad
    """
    spool = opts.open_spool(write=True)
    entry = locate(spool, job_id)
    name = shown(job_id)
    if entry.state == ACTIVE:
        raise Fail(f"job {name!r} is running (in active/); it cannot be deleted", EXIT_JOB)
    if entry.job_id is None and stat.S_ISDIR(mode_of(spool, entry)):
        raise Fail(f"{name} is a directory; look inside, then remove it by hand: rm -r {shown(str(entry.path))}")
    try:
        spool.remove(entry.state, entry.name)
    except JobGone:
        raise Fail(f"job {name!r} moved from {entry.state}/ while being deleted; try again", EXIT_JOB) from None
    if entry.name.endswith(BAD_SUFFIX):
        try:
            spool.remove(entry.state, reason_name(entry.name))
        except JobGone:
            pass
    spool.barrier()
    click.echo(f"deleted {name} from {entry.state}/")


@main.command()
@click.argument("state", type=click.Choice(STATES))
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@pass_options
def purge(opts: Options, state: str, yes: bool) -> None:
    """Delete every file in STATE (not active: those jobs are running).

    \b
    Examples:
      spoolq purge failed
      spoolq purge done --yes
    """
    if state == ACTIVE:
        raise Fail("refusing to purge active/: those jobs are running (stop the worker first)")
    spool = opts.open_spool(write=True)
    entries = list(spool.scan(state))
    if not entries:
        click.echo(f"{state}/ is empty")
        return
    if not yes:
        click.confirm(f"Delete {len(entries)} files from {spool.dir(state)}?", abort=True)
    removed = 0
    for entry in entries:
        try:
            spool.remove(state, entry.name)
            removed += 1
        except JobGone:
            continue
    spool.barrier()
    click.echo(f"purged {removed} files from {state}/")


@main.command()
@click.argument("job_ids", nargs=-1, metavar="ID...")
@click.option("--all", "retry_all", is_flag=True, help="Every failed job (with --task: of that task).")
@click.option("--task", "task_name", metavar="NAME", help="With --all: only jobs of this task.")
@pass_options
def retry(opts: Options, job_ids: tuple[str, ...], retry_all: bool, task_name: str | None) -> None:
    """Send failed jobs back to run: retries reset to 0, error history kept.

    Safe to run again after it was interrupted: a failed job already sent back (queued or
    running again) is not sent twice; its leftover copy in failed/ is removed instead.  A
    failed job whose id another queued job uses is left alone and named (exit 1).  ID may
    also be a failed/ file name as spoolq ls failed prints it.

    \b
    Examples:
      spoolq retry 5f0c7a9e-2d1b-4c7e-9a51-0e3f2b8d6c11
      spoolq retry --all --task NAME.echofunction
    """
    if bool(job_ids) == retry_all:
        raise click.UsageError("give job ids or --all, not both and not neither")
    if task_name and not retry_all:
        raise click.UsageError("--task goes with --all")
    spool = opts.open_spool(write=True)
    if retry_all:
        entries = [e for e in spool.entries(FAILED) if e.job_id is not None]
        if task_name is not None:
            entries = [e for e in entries if _task_of(spool, e) == task_name]
    else:
        entries = [_failed_entry(spool, j) for j in job_ids]
    sent = conflicts = 0
    live = live_ids(spool)  # listed before any failed copy is read: see replay()
    for entry in entries:
        try:
            done = replay(spool, entry, live)
        except JobFormatError as exc:
            conflicts += 1
            click.echo(f"{shown(entry.name)}: not retried: not a valid job: {exc}", err=True)
            continue
        if done.outcome == CONFLICT:
            conflicts += 1
            click.echo(
                f"{entry.job_id}: not retried: another job with this id is in {done.live_state}/; "
                f"its failed copy stays (spoolq delete {entry.name} removes it)",
                err=True,
            )
        elif done.outcome == CLEANED:
            click.echo(f"{entry.job_id}: already sent back (in {done.live_state}/); removed its leftover failed copy")
        elif done.outcome == GONE:
            click.echo(f"{entry.job_id}: already sent back and taken in by the worker")
        else:
            sent += 1
            click.echo(f"{entry.job_id} -> {NEW}/")
    if retry_all:
        click.echo(f"retried {sent} jobs", err=True)
    if conflicts:
        sys.exit(EXIT_JOB)


def _task_of(spool: Spool, entry: Entry) -> str | None:
    try:
        return spool.read(entry.state, entry.name).task
    except (SpoolError, JobFormatError):
        return None


def _failed_entry(spool: Spool, text: str) -> Entry:
    entry = failed_file(spool, text)
    if entry is not None and entry.job_id is None:
        name = shown(text)
        raise Fail(
            f"{name} is a rejected file, not a job; it cannot be retried: spoolq show {name} says why; "
            "fix it and enqueue it again by hand, or remove it with spoolq delete"
        )
    if entry is not None:
        return entry
    job_id = job_id_arg(text)
    try:
        return spool.find(job_id, (FAILED,))
    except JobNotFound:
        entry = spool.find(job_id)
    raise Fail(f"job {job_id!r} is in {entry.state}/, not failed/; only failed jobs can be retried", EXIT_JOB)
