"""The ``spoolq`` group: its options, the exit codes, errors mapped to them, shared helpers.

The commands live in the sibling modules and add themselves to :func:`main`.  Every
:class:`~spoolq.errors.SpoolqError` (and any other ``OSError``) becomes a one-line
``Error: ...`` on stderr and one of the exit codes below, never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from ..app import App
from ..config import Config, load_config
from ..errors import (
    InvalidJobId,
    JobGone,
    JobNotFound,
    ResultTimeout,
    SpoolError,
    SpoolqError,
    TaskFailed,
)
from ..job import validate_id
from ..layout import BAD_SUFFIX, FAILED, printable
from ..spool import Entry, Spool

# The exit codes, as ``spoolq --help`` documents them.
EXIT_OK, EXIT_JOB, EXIT_USAGE, EXIT_SPOOL, EXIT_TIMEOUT = 0, 1, 2, 3, 4


class Fail(click.ClickException):
    """A one-line error with its exit code (click prints ``Error: <message>`` on stderr)."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(" ".join(str(message).split()) or "failed")
        # click types exit_code as a class constant; click reads it from the instance.
        self.exit_code = code  # type: ignore[misc]


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
        spool = Spool(
            c.spool,
            fsync=c.fsync,
            max_job_size=c.max_job_size,
            dir_mode=c.dir_mode,
            file_mode=c.file_mode,
            create=False,
        )
        if not spool.exists():
            raise Fail(f"no spool at {spool.path}{hint}", EXIT_SPOOL)
        if write:
            spool.ensure()
        return spool

    def app(self) -> App:
        """An App on the existing spool (``App`` alone would create a missing one)."""
        spool = self.open_spool(write=True, hint=_CREATE_HINT)
        c = self.config()
        return App(
            spool.path,
            fsync=c.fsync,
            max_job_size=c.max_job_size,
            imports=c.imports,
            config=c,
            dir_mode=c.dir_mode,
            file_mode=c.file_mode,
        )


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


# -- helpers the commands share ----------------------------------------------------------


def age(seconds: float | None) -> str:
    """A duration for a table: ``42s``, ``1.5m``, ``12h``, ``-`` for none."""
    if seconds is None:
        return "-"
    s = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s / size:.0f}{unit}" if s >= 10 * size else f"{s / size:.1f}{unit}"
    return f"{s:.0f}s"


_STATE_COLOURS = {
    "new": "cyan",
    "ready": "blue",
    "active": "yellow",
    "delayed": "magenta",
    "failed": "red",
    "done": "green",
}


def table(headers: list[str], rows: list[list[str]], colour_col: int | None = None) -> None:
    """Print rows under bold headers, columns aligned; ``colour_col`` holds state names."""
    rows = [[printable(str(c)) for c in row] for row in rows]  # a file name may be any bytes
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    click.echo(click.style("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(), bold=True))
    for row in rows:
        cells = [str(c).ljust(w) for c, w in zip(row, widths, strict=True)]
        if colour_col is not None:
            cells[colour_col] = click.style(cells[colour_col], fg=_STATE_COLOURS.get(str(row[colour_col]).strip()))
        click.echo("  ".join(cells).rstrip())


def emit_json(value: Any) -> None:
    """Print ``value`` as indented JSON; a name that is not UTF-8 travels as JSON escapes."""
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a file name that is not UTF-8: JSON's own escapes carry it
        text = json.dumps(value, indent=2, ensure_ascii=True, default=str)
    click.echo(text)


def shown(text: str) -> str:
    """A file name as text that can be printed: bytes that are not UTF-8 as ``\\xNN``."""
    return os.fsencode(text).decode("utf-8", "backslashreplace")


def job_id_arg(text: str) -> str:
    """A job id given on the command line, checked (exit 2 if it could not be one)."""
    try:
        return validate_id(text)
    except InvalidJobId as exc:
        raise Fail(str(exc)) from None


def failed_file(spool: Spool, text: str) -> Entry | None:
    """The file of ``failed/`` named exactly ``text`` (as ``spoolq ls failed`` prints a
    rejected file), or None.  ``text`` is only compared with the directory's listing, never
    joined to a path, so no name reaches outside ``failed/``."""
    if not text.endswith((BAD_SUFFIX, ".json")):
        return None
    for entry in spool.scan(FAILED):
        if entry.name == text:
            return entry
    return None


def mode_of(spool: Spool, entry: Entry) -> int:
    """The ``st_mode`` of an entry (links not followed); exit 1 if it went meanwhile."""
    try:
        return spool.lstat(entry.state, entry.name).st_mode
    except JobGone:
        raise Fail(f"{shown(entry.name)} was removed meanwhile", EXIT_JOB) from None


def locate(spool: Spool, text: str) -> Entry:
    """A job by id, or a file of ``failed/`` by its name (a rejected ``.bad`` file, or one
    failed copy of an id).  Raises JobNotFound."""
    return failed_file(spool, text) or spool.find(job_id_arg(text))
