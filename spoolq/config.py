"""Configuration: the ``[spoolq]`` section of an ini file, ``SPOOLQ_*`` variables, options.

Precedence is option > environment > file > default, per key.  Every key is declared once in
:data:`KEYS` with its parser, so an unknown key or a bad value is refused with the key's name
and where it came from, before anything runs.
"""

from __future__ import annotations

import configparser
import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError

SECTION = "spoolq"
ENV_PREFIX = "SPOOLQ_"
DEFAULT_FILE = "spoolq.ini"


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"must not be negative, got {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"must be a non-negative number of seconds, got {text!r}")
    return value


def _optional(parser: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return None if text.strip().lower() in ("", "none", "off") else parser(text)

    return parse


def _mode(text: str) -> int:
    value = int(text, 8)
    if not 0 <= value <= 0o777:
        raise ValueError(f"must be an octal mode such as 0700, got {text!r}")
    return value


def _modules(text: str) -> tuple[str, ...]:
    return tuple(part for part in text.replace(",", " ").split() if part)


def _loglevel(text: str) -> str:
    level = text.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError(f"must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got {text!r}")
    return level


@dataclasses.dataclass(frozen=True)
class Key:
    """One configuration key: how to read it, its default and what it means."""

    parse: Callable[[str], Any]
    default: Any
    help: str


KEYS: dict[str, Key] = {
    "spool": Key(str, "./spool", "the spool directory"),
    "fsync": Key(_bool, True, "flush every write and move to disk (false: faster, not power-loss safe)"),
    "max_job_size": Key(_positive_int, 1024 * 1024, "largest job file accepted, in bytes"),
    "imports": Key(_modules, (), "task modules to import, separated by spaces or commas"),
    "concurrency": Key(_optional(_positive_int), None, "worker processes (default: CPU count)"),
    "max_tasks_per_child": Key(_optional(_positive_int), None, "replace a worker process after this many jobs"),
    "time_limit": Key(_optional(_seconds), None, "hard time limit per job in seconds: the worker is killed"),
    "soft_time_limit": Key(_optional(_seconds), None, "soft time limit per job in seconds: raised in the task"),
    "soft_time_limit_grace": Key(_seconds, 30.0, "seconds a task may run past its soft time limit before it is killed"),
    "shutdown_timeout": Key(_seconds, 30.0, "seconds running jobs get to finish on SIGTERM"),
    "burst_horizon": Key(_seconds, 60.0, "with --burst, wait for delayed jobs due within this many seconds"),
    "rescan_interval": Key(_seconds, 5.0, "seconds between safety rescans of new/ and ready/"),
    "tmp_max_age": Key(_seconds, 3600.0, "seconds after which a file left in tmp/ is removed"),
    "dir_mode": Key(_mode, 0o700, "permissions of the directories spoolq creates (octal)"),
    "file_mode": Key(_mode, 0o600, "permissions of the files spoolq creates (octal)"),
    "loglevel": Key(_loglevel, "INFO", "DEBUG, INFO, WARNING or ERROR"),
}


@dataclasses.dataclass(frozen=True)
class Config:
    """The effective settings and where each came from (for the worker's banner)."""

    values: Mapping[str, Any]
    sources: Mapping[str, str]
    file: str | None = None

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def replace(self, **overrides: Any) -> Config:
        """A copy with some values set by the caller (already parsed)."""
        values = dict(self.values)
        sources = dict(self.sources)
        for key, value in overrides.items():
            if key not in KEYS:
                raise ConfigError(f"unknown configuration key {key!r}", key=key)
            if value is not None:
                values[key] = value
                sources[key] = "option"
        return Config(values, sources, self.file)


def load_config(
    file: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    options: Mapping[str, Any] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Config:
    """Read the configuration.

    Parameters:
        file: an ini file with a ``[spoolq]`` section; None means ``$SPOOLQ_CONFIG``, else
            ``./spoolq.ini`` when it exists, else no file.
        env: the environment (default ``os.environ``); ``SPOOLQ_<KEY>`` sets a key.
        options: values from the command line or the caller, already typed; None values
            are ignored (the option was not given).
    Raises:
        ConfigError: a missing or unreadable file, a file with sections but no
            ``[spoolq]``, an unknown key, or a bad value; the message names the key and
            where it was found.
    """
    env = os.environ if env is None else env
    values = {name: key.default for name, key in KEYS.items()}
    sources = {name: "default" for name in KEYS}
    path = _find_file(file, env, cwd)
    if path is not None:
        for name, raw in _read_file(path).items():
            values[name] = _parse(name, raw, str(path))
            sources[name] = str(path)
        if sources["spool"] == str(path) and not os.path.isabs(values["spool"]):
            # Relative to the file, so a daemon's working directory does not move the spool.
            values["spool"] = str(path.parent.absolute() / values["spool"])
    for var, raw in env.items():
        if not var.startswith(ENV_PREFIX) or var == ENV_PREFIX + "CONFIG":
            continue
        name = var[len(ENV_PREFIX) :].lower()
        if name not in KEYS:
            raise ConfigError(f"unknown configuration variable {var}", key=var, source="environment")
        values[name] = _parse(name, raw, f"environment {var}")
        sources[name] = f"environment {var}"
    config = Config(values, sources, str(path) if path else None)
    return config.replace(**(options or {}))


def _find_file(file: Any, env: Mapping[str, str], cwd: Any) -> Path | None:
    if file is None and env.get(ENV_PREFIX + "CONFIG"):
        file = env[ENV_PREFIX + "CONFIG"]
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist or is not a file", source=str(path))
        return path
    default = Path(cwd or ".") / DEFAULT_FILE
    return default if default.is_file() else None


def _read_file(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as fh:
            parser.read_file(fh)
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"cannot read config file: {first_line}", source=str(path)) from None
    if not parser.has_section(SECTION):
        sections = [*(["DEFAULT"] if parser.defaults() else []), *parser.sections()]
        if not sections:
            return {}  # an empty file sets nothing, and says nothing it could mean instead
        # Sections, but not ours: a misspelt [spool] or someone else's file, whose keys the
        # user meant for spoolq.  Ignoring them would run on defaults without a word.
        found = ", ".join(f"[{name}]" for name in sections)
        raise ConfigError(f"no [{SECTION}] section in the config file: it has {found}", source=str(path))
    out = {}
    for name, raw in parser.items(SECTION):
        if name not in KEYS:
            known = ", ".join(sorted(KEYS))
            raise ConfigError(
                f"unknown configuration key {name!r} in [{SECTION}] (known: {known})", key=name, source=str(path)
            )
        out[name] = raw
    return out


def _parse(name: str, raw: str, source: str) -> Any:
    try:
        value = KEYS[name].parse(raw)
    except ValueError as exc:
        raise ConfigError(f"bad value for {name!r}: {exc}", key=name, source=source) from None
    return value
