"""``spoolq fsck``: report what a crash, a bug or a hand left in the spool, and repair it."""

from __future__ import annotations

import sys

import click

from .. import fsck as fsck_module
from .group import EXIT_JOB, Options, emit_json, main, pass_options


@main.command()
@click.option("--repair", is_flag=True, help="Fix what is found (refused while a worker runs, but for tmp/).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_options
def fsck(opts: Options, repair: bool, as_json: bool) -> None:
    """Check the spool for damage, and with --repair fix it.

    Finds stale tmp/ files, jobs left in active/ with no worker running, files that are not
    jobs (other names, directories, symlinks, FIFOs, hard links) or do not parse, names that
    do not match their job's id, and one id live in two places.  --repair removes stale tmp/
    files, returns orphaned active/ jobs to ready/ as a worker's start does, renames misnamed
    files, and moves the rest into failed/ with the reason beside it (symlinks are never
    followed).  While a worker holds the spool, --repair only removes stale tmp/ files.

    \b
    Examples:
      spoolq fsck                      # report only
      spoolq fsck --repair             # after a crash, with the worker stopped
      spoolq fsck --json | jq .findings

    \b
    Exit status:
      0  the spool is clean (or was fully repaired)
      1  problems found (without --repair) or remaining after --repair
      3  the spool is missing or unsafe
    """
    spool = opts.open_spool()
    report = fsck_module.check(spool, repair=repair, tmp_max_age=opts.config().tmp_max_age)
    if as_json:
        emit_json(report.to_dict())
    else:
        for finding in report.findings:
            click.echo(finding.line())
        for note in report.notes:
            click.echo(f"note: {note}")
        click.echo(report.summary())
    if not report.clean:
        sys.exit(EXIT_JOB)
