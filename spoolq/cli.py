"""The ``spoolq`` command: parse, wire, echo, and map errors to documented exit codes.

Each command is a few lines over :mod:`spoolq.app` and :mod:`spoolq.spool`; nothing here
renames or writes a spool file itself.  Every :class:`~spoolq.errors.SpoolqError` and
``OSError`` becomes a one-line ``Error: ...`` on stderr and an exit code from :data:`EXIT`,
never a traceback.  Read-only commands never create a missing spool.
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

from .app import App
from .codec import as_utc, format_ts
from .config import Config, load_config
from .errors import (
    InvalidJobId,
    JobFormatError,
    JobNotFound,
    ResultTimeout,
    SpoolError,
    SpoolqError,
    TaskFailed,
)
from .job import validate_id
from .layout import (
    ACTIVE,
    BAD_SUFFIX,
    DELAYED,
    FAILED,
    LIVE_STATES,
    NEW,
    REASON_SUFFIX,
    STATES,
    file_kind,
    printable,
)
from .registry import load_for_command
from .replay import CLEANED, CONFLICT, GONE, live_ids, replay
from .spool import Entry, Spool

EXIT_OK, EXIT_JOB, EXIT_USAGE, EXIT_SPOOL, EXIT_TIMEOUT = 0, 1, 2, 3, 4
ERROR_WIDTH = 60


class Fail(click.ClickException):
    """A one-line error with its exit code (click prints ``Error: <message>`` on stderr)."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(" ".join(str(message).split()) or "failed")
        self.exit_code = code


def _exit_code(exc: SpoolqError) -> int:
    if isinstance(exc, (JobNotFound, TaskFailed)):
        return EXIT_JOB
    if isinstance(exc, SpoolError):
        return EXIT_SPOOL
    if isinstance(exc, ResultTimeout):
        return EXIT_TIMEOUT
    return EXIT_USAGE


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SpoolqError as exc:
            raise Fail(str(exc), _exit_code(exc)) from None
        except BrokenPipeError:
            # `spoolq ls | head`: the reader left, which is not an error.  Point stdout at
            # /dev/null so the interpreter's final flush does not complain either.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            ctx.exit(EXIT_OK)
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename else ""
            raise Fail(f"{exc.strerror or exc}{where}", EXIT_SPOOL) from None


class Options:
    """The group's options, turned into a Config, a Spool or an App on demand."""

    def __init__(self, spool: str | None, config_file: str | None) -> None:
        self.spool = spool
        self.config_file = config_file

    def config(self, **options: Any) -> Config:
        return load_config(self.config_file, options={"spool": self.spool, **options})

    def open_spool(self, *, write: bool = False, hint: str = "") -> Spool:
        """The configured spool, which must exist; ``write`` also checks it is safe to change.
        No command but ``init`` (and the worker) creates one: a mistyped path must not
        become a spool nobody watches."""
        c = self.config()
        spool = Spool(c.spool, fsync=c.fsync, max_job_size=c.max_job_size, dir_mode=c.dir_mode,
                      file_mode=c.file_mode, create=False)  # fmt: skip
        if not spool.exists():
            raise Fail(f"no spool at {spool.path}{hint}", EXIT_SPOOL)
        if write:
            spool.ensure()
        return spool

    def app(self) -> App:
        """An App on the existing spool (``App`` alone would create a missing one)."""
        spool = self.open_spool(write=True, hint=_CREATE_HINT)
        c = self.config()
        return App(spool.path, fsync=c.fsync, max_job_size=c.max_job_size, imports=c.imports, config=c,
                   dir_mode=c.dir_mode, file_mode=c.file_mode)  # fmt: skip


_CREATE_HINT = " (a worker creates it when it starts, or run: spoolq init)"


pass_options = click.make_pass_decorator(Options)

_SPOOL_HELP = "The spool directory [env SPOOLQ_SPOOL; ini spool =; default ./spool]."
_CONFIG_HELP = "An ini file with a [spoolq] section [env SPOOLQ_CONFIG; default ./spoolq.ini if present]."


class _Command(click.Command):
    """A subcommand that also takes ``--spool`` and ``--config`` after its name, so both
    ``spoolq --config F worker`` and ``spoolq worker --config F`` (celery's habit) work."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params += [
            click.Option(["--spool", "_spool"], metavar="DIR", expose_value=True, help=_SPOOL_HELP),
            click.Option(["--config", "_config_file"], metavar="FILE", expose_value=True, help=_CONFIG_HELP),
        ]

    def invoke(self, ctx: click.Context) -> Any:
        spool, config_file = ctx.params.pop("_spool", None), ctx.params.pop("_config_file", None)
        options = ctx.find_object(Options)
        if options is not None:
            options.spool = spool or options.spool
            options.config_file = config_file or options.config_file
        return super().invoke(ctx)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--spool", metavar="DIR", help=_SPOOL_HELP)
@click.option("--config", "config_file", metavar="FILE", help=_CONFIG_HELP)
@click.version_option(package_name="spoolq", message="spoolq %(version)s")
@click.pass_context
def main(ctx: click.Context, spool: str | None, config_file: str | None) -> None:
    """spoolq: a background-job queue for one host; jobs are JSON files in a spool directory.

    Settings come from an option, else a SPOOLQ_<KEY> variable, else the [spoolq] section of
    the ini file, else the default.

    \b
    Examples:
      spoolq --spool /var/spool/myapp send NAME.echofunction '["Hello World"]'
      SPOOLQ_SPOOL=/var/spool/myapp spoolq status
      spoolq worker --config spoolq.ini -c 4 -I myapp.tasks

    --spool and --config may also follow the command's name.

    \b
    Exit status:
      0  success
      1  a job failed, was not found, or is in a state that forbids the command;
         a task source (-I, imports =, an entry point) failed to load: tasks lists
         it, worker refuses to start
      2  bad usage or bad input (arguments, ids, JSON, configuration)
      3  the spool is missing, unsafe, unwritable or locked (held by another worker)
      4  result: the job did not finish within --wait
    """
    ctx.obj = Options(spool, config_file)


main.command_class = _Command


# -- producing --------------------------------------------------------------------------


def _json_arg(text: str | None, what: str, kind: type) -> Any:
    if text is None:
        return None
    try:
        value = json.loads(text, parse_constant=lambda c: _raise(ValueError(f"{c} is not JSON")))
    except ValueError as exc:
        raise Fail(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, kind):
        example = "'[\"hi\", 2]'" if kind is list else "'{\"key\": \"value\"}'"
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
def send(opts: Options, name: str, args_json: str | None, args_opt: str | None, kwargs_json: str | None,
         countdown: float | None, eta: str | None, expires: str | None, task_id: str | None, priority: int | None,
         max_retries: int | None, result_ttl: float | None) -> None:  # fmt: skip
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
    args = _json_arg(args_opt if args_opt is not None else args_json,
                     "--args" if args_opt is not None else "ARGS_JSON", list)  # fmt: skip
    kwargs = _json_arg(kwargs_json, "--kwargs", dict)
    when = None if eta is None else _time_arg(eta, "--eta")
    until = None if expires is None else _expires_arg(expires)
    result = opts.app().send_task(name, args, kwargs, countdown=countdown, eta=when, task_id=task_id,
                                  priority=priority, expires=until, max_retries=max_retries,
                                  result_ttl=result_ttl)  # fmt: skip
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


# -- looking ----------------------------------------------------------------------------


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s / size:.0f}{unit}" if s >= 10 * size else f"{s / size:.1f}{unit}"
    return f"{s:.0f}s"


_STATE_COLOURS = {"new": "cyan", "ready": "blue", "active": "yellow", "delayed": "magenta", "failed": "red",
                  "done": "green"}  # fmt: skip


def _table(headers: list[str], rows: list[list[str]], colour_col: int | None = None) -> None:
    rows = [[printable(str(c)) for c in row] for row in rows]  # a file name may be any bytes
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    click.echo(click.style("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(), bold=True))
    for row in rows:
        cells = [str(c).ljust(w) for c, w in zip(row, widths, strict=True)]
        if colour_col is not None:
            cells[colour_col] = click.style(cells[colour_col], fg=_STATE_COLOURS.get(str(row[colour_col]).strip()))
        click.echo("  ".join(cells).rstrip())


def _emit_json(value: Any) -> None:
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a file name that is not UTF-8: JSON's own escapes carry it
        text = json.dumps(value, indent=2, ensure_ascii=True, default=str)
    click.echo(text)


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
                mtimes.append(e.path.lstat().st_mtime)
            except FileNotFoundError:  # moved while we looked
                continue
        states[state] = {"count": len(mtimes), "oldest_age_s": round(now - min(mtimes), 3) if mtimes else None,
                         "newest_age_s": round(now - max(mtimes), 3) if mtimes else None}  # fmt: skip
    lock = spool.lock()
    held = lock.is_held()
    pid = lock.holder() if held else None
    if as_json:
        _emit_json({"spool": str(spool.path), "supervisor": {"running": held, "pid": pid}, "states": states})
        return
    click.echo(f"spool {spool.path}")
    running = click.style(f"running (pid {pid})" if pid else "running", fg="green") if held else "not running"
    click.echo(f"supervisor: {running}")
    rows = [[s, str(v["count"]), _age(v["oldest_age_s"]), _age(v["newest_age_s"])] for s, v in states.items()]
    _table(["STATE", "COUNT", "OLDEST", "NEWEST"], rows, colour_col=0)


def _one_line(text: str, width: int = ERROR_WIDTH) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _describe(spool: Spool, entry: Entry, now: float) -> dict | None:
    """One row of ``ls`` as a dict, or None if the file vanished meanwhile."""
    row: dict[str, Any] = {"id": entry.job_id or entry.name, "task": None, "state": entry.state, "age_s": None,
                           "retries": None, "last_error": None, "due": None, "path": str(entry.path)}  # fmt: skip
    if entry.state == DELAYED and entry.when is not None:  # the name says when it is due
        row["due"] = format_ts(entry.when)
    if entry.name.endswith(BAD_SUFFIX):
        row["rejected"] = True
        try:
            reason = spool.read_bytes(entry.path.with_name(entry.name + REASON_SUFFIX)).decode("utf-8", "replace")
        except (OSError, SpoolqError):
            reason = "rejected (no reason file)"
        row["last_error"] = reason.strip()
        try:
            row["age_s"] = round(now - entry.path.lstat().st_mtime, 3)
        except FileNotFoundError:
            return None
        return row
    try:
        job = spool.read(entry.path)
    except FileNotFoundError:
        return None
    except JobFormatError as exc:
        row["last_error"] = f"unreadable: {exc}"
        return row
    last = job.errors[-1] if job.errors else None
    row.update(task=job.task, age_s=round(now - job.enqueued_at.timestamp(), 3), retries=job.retries,
               eta=job.to_dict()["eta"],
               last_error=f"{last.get('type')}: {last.get('message')}" if last else None)  # fmt: skip
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
        _emit_json(rows)
        return
    if not rows:
        click.echo("no jobs", err=True)
        return
    table = [[r["id"], r["task"] or "-", r["state"], _age(r["age_s"]), "-" if r["retries"] is None else r["retries"],
              _one_line(r["last_error"]) if r["last_error"] else ""] for r in rows]  # fmt: skip
    headers = ["ID", "TASK", "STATE", "AGE", "RETRIES", "LAST ERROR"]
    if any(r["state"] == DELAYED for r in rows):
        headers.insert(4, "DUE")
        for r, line in zip(rows, table, strict=True):
            line.insert(4, _due(r["due"], now))
    _table(headers, table, colour_col=2)


def _due(due: str | None, now: float) -> str:
    """``2026-11-25 03:15:00Z (in 5.0m)``, or ``-`` for a job that is not delayed."""
    if due is None:
        return "-"
    when = datetime.fromisoformat(due[:-1] + "+00:00")
    left = when.timestamp() - now
    return f"{due[:10]} {due[11:19]}Z ({'in ' + _age(left) if left > 0 else 'now'})"


def _job_id(text: str) -> str:
    try:
        return validate_id(text)
    except InvalidJobId as exc:
        raise Fail(str(exc)) from None


def _failed_file(spool: Spool, text: str) -> Entry | None:
    """The file of ``failed/`` named exactly ``text`` (as ``spoolq ls failed`` prints a
    rejected file), or None.  ``text`` is only compared with the directory's listing, never
    joined to a path, so no name reaches outside ``failed/``."""
    if not text.endswith((BAD_SUFFIX, ".json")):
        return None
    for entry in spool.scan(FAILED):
        if entry.name == text:
            return entry
    return None


def _locate(spool: Spool, text: str) -> Entry:
    """A job by id, or a file of ``failed/`` by its name (a rejected ``.bad`` file, or one
    failed copy of an id)."""
    return _failed_file(spool, text) or spool.find(_job_id(text))


def _printable(text: str) -> str:
    """A file name as text that can be printed: bytes that are not UTF-8 as ``\\xNN``."""
    return os.fsencode(text).decode("utf-8", "backslashreplace")


def _mode(entry: Entry) -> int:
    try:
        return entry.path.lstat().st_mode
    except FileNotFoundError:
        raise Fail(f"{_printable(entry.name)} was removed meanwhile", EXIT_JOB) from None


def _reason(spool: Spool, entry: Entry) -> str:
    try:
        data = spool.read_bytes(entry.path.with_name(entry.name + REASON_SUFFIX))
    except (OSError, SpoolqError):
        return "rejected (no reason file)"
    return data.decode("utf-8", "replace").strip()


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
    entry = _locate(spool, job_id)
    out: dict[str, Any] = {"state": entry.state, "path": _printable(str(entry.path))}
    if entry.job_id is None:
        mode = _mode(entry)
        out.update(rejected=True, name=_printable(entry.name),
                   kind="file" if stat.S_ISREG(mode) else file_kind(mode), reason=_reason(spool, entry))  # fmt: skip
        _emit_json(out)
        return
    try:
        out["job"] = spool.read(entry.path).to_dict()
    except JobFormatError as exc:
        out["error"] = f"unreadable: {exc}"
    _emit_json(out)


# -- changing ---------------------------------------------------------------------------


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
    entry = _locate(spool, job_id)
    name = _printable(job_id)
    if entry.state == ACTIVE:
        raise Fail(f"job {name!r} is running (in active/); it cannot be deleted", EXIT_JOB)
    if entry.job_id is None and stat.S_ISDIR(_mode(entry)):
        raise Fail(f"{name} is a directory; look inside, then remove it by hand: rm -r {_printable(str(entry.path))}")
    try:
        spool.remove(entry.path)
    except FileNotFoundError:
        raise Fail(f"job {name!r} moved from {entry.state}/ while being deleted; try again", EXIT_JOB) from None
    if entry.name.endswith(BAD_SUFFIX):
        try:
            spool.remove(entry.path.with_name(entry.name + REASON_SUFFIX))
        except FileNotFoundError:
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
            spool.remove(entry.path)
            removed += 1
        except FileNotFoundError:
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
            click.echo(f"{_printable(entry.name)}: not retried: not a valid job: {exc}", err=True)
            continue
        if done.outcome == CONFLICT:
            conflicts += 1
            click.echo(f"{entry.job_id}: not retried: another job with this id is in {done.live_state}/; "
                       f"its failed copy stays (spoolq delete {entry.name} removes it)", err=True)  # fmt: skip
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
        return spool.read(entry.path).task
    except (OSError, JobFormatError):
        return None


def _failed_entry(spool: Spool, text: str) -> Entry:
    entry = _failed_file(spool, text)
    if entry is not None and entry.job_id is None:
        name = _printable(text)
        raise Fail(f"{name} is a rejected file, not a job; it cannot be retried: spoolq show {name} says why; "
                   "fix it and enqueue it again by hand, or remove it with spoolq delete")  # fmt: skip
    if entry is not None:
        return entry
    job_id = _job_id(text)
    try:
        return spool.find(job_id, (FAILED,))
    except JobNotFound:
        entry = spool.find(job_id)
    raise Fail(f"job {job_id!r} is in {entry.state}/, not failed/; only failed jobs can be retried", EXIT_JOB)


# -- tasks and results ------------------------------------------------------------------


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
        _emit_json({"tasks": found, "errors": errors})
    else:
        if found:
            _table(["TASK", "ORIGIN"], [[t["name"], t["origin"]] for t in found])
        else:
            click.echo("no tasks found")
        for e in errors:
            click.echo(click.style("cannot load ", fg="red") + f"{e['source']}: {e['error']}", err=True)
    if errors:
        sys.exit(EXIT_JOB)


@main.command()
@click.argument("job_id", metavar="ID")
@click.option("--wait", type=click.FloatRange(min=0), default=0.0, show_default=True, metavar="S",
              help="Wait up to S seconds for the job to finish.")  # fmt: skip
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
    handle = app.result(_job_id(job_id))
    try:
        value = handle.get(timeout=wait)
    except JobNotFound:
        raise Fail(f"no job with id {job_id!r} in the spool (or it finished keeping no result)", EXIT_JOB) from None
    except ResultTimeout:
        state = handle.state
        raise Fail(f"job {job_id!r} is {state}: no result within {wait:g} s", EXIT_TIMEOUT) from None
    click.echo(json.dumps(value, ensure_ascii=False))


# -- the worker -------------------------------------------------------------------------


@main.command()
@click.option("-c", "--concurrency", type=click.IntRange(min=1), metavar="N", help="Worker processes [CPU count].")
@click.option("-I", "--include", "includes", multiple=True, metavar="MODULE", help="Import this task module.")
@click.option("--max-tasks-per-child", type=click.IntRange(min=1), metavar="N", help="Replace a worker after N jobs.")
@click.option("--time-limit", type=click.FloatRange(min=0), metavar="S", help="Hard limit per job: kill after S s.")
@click.option("--soft-time-limit", type=click.FloatRange(min=0), metavar="S", help="Raise in the task after S s.")
@click.option("--soft-time-limit-grace", type=click.FloatRange(min=0), metavar="S", help="Then kill S s later [30].")
@click.option("--shutdown-timeout", type=click.FloatRange(min=0), metavar="S", help="Grace for running jobs [30].")
@click.option("--burst", is_flag=True, help="Exit once nothing is due.")
@click.option("-l", "--loglevel", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
              case_sensitive=False), help="Logging level, any case [INFO].")  # fmt: skip
@pass_options
def worker(opts: Options, concurrency: int | None, includes: tuple[str, ...], max_tasks_per_child: int | None,
           time_limit: float | None, soft_time_limit: float | None, shutdown_timeout: float | None, burst: bool,
           loglevel: str | None, soft_time_limit_grace: float | None) -> None:  # fmt: skip
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
    config = load_config(opts.config_file, options={
        "spool": opts.spool, "concurrency": concurrency, "max_tasks_per_child": max_tasks_per_child,
        "time_limit": time_limit, "soft_time_limit": soft_time_limit, "shutdown_timeout": shutdown_timeout,
        "loglevel": loglevel.upper() if loglevel else None, "soft_time_limit_grace": soft_time_limit_grace,
    })  # fmt: skip
    from .worker import run_worker

    sys.exit(run_worker(config, includes=tuple(includes), burst=burst))


# -- checking -----------------------------------------------------------------------------


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
    from . import fsck as fsck_module

    spool = opts.open_spool()
    report = fsck_module.check(spool, repair=repair, tmp_max_age=opts.config().tmp_max_age)
    if as_json:
        _emit_json(report.to_dict())
    else:
        for finding in report.findings:
            click.echo(finding.line())
        for note in report.notes:
            click.echo(f"note: {note}")
        click.echo(report.summary())
    if not report.clean:
        sys.exit(EXIT_JOB)


__all__ = ["EXIT_JOB", "EXIT_OK", "EXIT_SPOOL", "EXIT_TIMEOUT", "EXIT_USAGE", "main"]
