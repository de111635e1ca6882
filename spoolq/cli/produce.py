"""Commands that put something into the spool: ``send`` (one job) and ``init`` (the spool)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from ..codec import as_utc
from ..spool import Spool
from .group import Fail, Options, main, pass_options


def _json_arg(text: str | None, what: str, kind: type) -> Any:
    if text is None:
        return None
    try:
        value = json.loads(text, parse_constant=lambda c: _raise(ValueError(f"{c} is not JSON")))
    except ValueError as exc:
        raise Fail(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, kind):
        example = "'[\"hi\", 2]'" if kind is list else '\'{"key": "value"}\''
        raise Fail(f"{what} must be a JSON {'array' if kind is list else 'object'}, e.g. {example}")
    return value


def _raise(exc: BaseException) -> Any:
    raise exc


def _time_arg(text: str, what: str) -> datetime:
    """An ISO 8601 time.  Without a zone it is UTC, as a naive datetime is for the Python
    API (and for Celery): one rule for both ways of sending."""
    try:
        return as_utc(datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text))
    except (ValueError, OverflowError) as exc:
        raise Fail(f"{what} is not a time: {exc}") from None


def _expires_arg(text: str) -> datetime | float:
    """Seconds from now, or a time (as ``celery call --expires`` takes it)."""
    try:
        return float(text)
    except ValueError:
        return _time_arg(text, "--expires")


@main.command()
@click.argument("name")
@click.argument("args_json", required=False, metavar="[ARGS_JSON]")
@click.option("-a", "--args", "args_opt", metavar="JSON", help="Positional arguments as a JSON array (or ARGS_JSON).")
@click.option("-k", "--kwargs", "kwargs_json", metavar="JSON", help="Keyword arguments as a JSON object.")
@click.option("--countdown", type=float, metavar="S", help="Run no sooner than S seconds from now.")
@click.option("--eta", metavar="TIME", help="Run no sooner than this ISO 8601 time (no zone: UTC).")
@click.option("--expires", metavar="S|TIME", help="Do not run after S seconds from now, or after TIME.")
@click.option("--id", "task_id", metavar="ID", help="The job id (default: a new UUID).")
@click.option("--priority", type=click.IntRange(0, 9), help="0 to 9, higher runs first (default 0).")
@click.option("--max-retries", type=click.IntRange(min=0), metavar="N", help="Retries allowed [the task's].")
@click.option("--result-ttl", type=float, metavar="S", help="Keep the result S seconds in done/ [the task's].")
@pass_options
def send(
    opts: Options,
    name: str,
    args_json: str | None,
    args_opt: str | None,
    kwargs_json: str | None,
    countdown: float | None,
    eta: str | None,
    expires: str | None,
    task_id: str | None,
    priority: int | None,
    max_retries: int | None,
    result_ttl: float | None,
) -> None:
    """Enqueue the task NAME with ARGS_JSON (a JSON array) and print the job id.

    The task's code need not be importable here: only its name is sent.  The spool must
    exist (a worker creates it when it starts, or spoolq init), so that a mistyped path
    is an error, not a queue nobody reads.

    \b
    Examples:
      spoolq send NAME.echofunction '["Hello World"]'
      spoolq send report.build -a '[2026]' -k '{"fmt": "pdf"}' --countdown 60
      spoolq send cleanup --eta 2026-11-25T03:15:00Z --id nightly-2026-11-25 --priority 9
      spoolq send webhook.notify '["https://example.org/hook"]' --expires 3600 --max-retries 10
    """
    if args_json is not None and args_opt is not None:
        raise Fail("give the arguments once: ARGS_JSON or --args, not both")
    given, what = (args_opt, "--args") if args_opt is not None else (args_json, "ARGS_JSON")
    args = _json_arg(given, what, list)
    kwargs = _json_arg(kwargs_json, "--kwargs", dict)
    when = None if eta is None else _time_arg(eta, "--eta")
    until = None if expires is None else _expires_arg(expires)
    result = opts.app().send_task(
        name,
        args,
        kwargs,
        countdown=countdown,
        eta=when,
        task_id=task_id,
        priority=priority,
        expires=until,
        max_retries=max_retries,
        result_ttl=result_ttl,
    )
    click.echo(result.id)


@main.command()
@pass_options
def init(opts: Options) -> None:
    """Create the spool's directories, if missing, and print its path.

    Only the worker (when it starts), this command and the Python API (on its first write)
    create a spool; the other commands refuse a missing one.

    \b
    Examples:
      spoolq --spool /var/spool/myapp init
      spoolq init --config /etc/spoolq/spoolq.ini
    """
    c = opts.config()
    spool = Spool(c.spool, fsync=c.fsync, dir_mode=c.dir_mode, file_mode=c.file_mode, create=False)
    existed = spool.exists()
    spool.ensure()  # checks a spool that was there, too: owner, permissions, no symlinks
    click.echo(f"{'spool exists' if existed else 'created spool'} at {spool.path}")
