"""Configuration: option > environment > ini file > default, and refusals that name the key and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from spoolq.config import load_config
from spoolq.errors import ConfigError


def ini(tmp_path: Path, body: str, name: str = "spoolq.ini") -> Path:
    path = tmp_path / name
    path.write_text("[spoolq]\n" + body)
    return path


def test_defaults(tmp_path: Path) -> None:
    c = load_config(env={}, cwd=tmp_path)
    assert (c.spool, c.fsync, c.max_job_size, c.concurrency) == ("./spool", True, 1024 * 1024, None)
    assert c.sources["spool"] == "default" and c.file is None


def test_precedence_option_over_env_over_file_over_default(tmp_path: Path) -> None:
    # Given a file setting three keys, the environment two of them, and an option one
    path = ini(tmp_path, "spool = /from/file\nconcurrency = 2\nmax_job_size = 1000\n")
    env = {"SPOOLQ_SPOOL": "/from/env", "SPOOLQ_CONCURRENCY": "3"}
    c = load_config(path, env=env, options={"spool": "/from/option", "concurrency": None})
    # Then each key comes from the strongest source that sets it; a None option does not count
    assert c.spool == "/from/option" and c.sources["spool"] == "option"
    assert c.concurrency == 3 and c.sources["concurrency"] == "environment SPOOLQ_CONCURRENCY"
    assert c.max_job_size == 1000 and c.sources["max_job_size"] == str(path)
    assert c.shutdown_timeout == 30.0 and c.sources["shutdown_timeout"] == "default"


def test_the_default_file_is_found_in_cwd_and_via_spoolq_config(tmp_path: Path) -> None:
    path = ini(tmp_path, "fsync = false\n")
    assert load_config(env={}, cwd=tmp_path).fsync is False
    elsewhere = ini(tmp_path, "fsync = no\nspool = rel\n", name="other.ini")
    c = load_config(env={"SPOOLQ_CONFIG": str(elsewhere)}, cwd=tmp_path / "nowhere")
    assert c.file == str(elsewhere) and c.fsync is False and path.exists()
    # a relative spool in a file is relative to the file, not to the working directory
    assert c.spool == str(tmp_path / "rel")


@pytest.mark.parametrize(
    "body, fragment",
    [
        ("colour = blue\n", "unknown configuration key 'colour'"),
        ("concurrency = zero\n", "bad value for 'concurrency'"),
        ("concurrency = 0\n", "must be at least 1"),
        ("fsync = maybe\n", "bad value for 'fsync'"),
        ("dir_mode = 999\n", "bad value for 'dir_mode'"),
        ("shutdown_timeout = -1\n", "bad value for 'shutdown_timeout'"),
        ("loglevel = chatty\n", "bad value for 'loglevel'"),
    ],
)
def test_bad_file_names_the_key_and_the_file(tmp_path: Path, body: str, fragment: str) -> None:
    path = ini(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert fragment in str(info.value) and str(path) in str(info.value)
    assert info.value.source == str(path)


def test_bad_environment_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="SPOOLQ_COLOUR"):
        load_config(env={"SPOOLQ_COLOUR": "blue"})
    with pytest.raises(ConfigError, match=r"bad value for 'max_job_size'.*environment SPOOLQ_MAX_JOB_SIZE"):
        load_config(env={"SPOOLQ_MAX_JOB_SIZE": "big"})


def test_missing_or_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.ini", env={})
    broken = tmp_path / "broken.ini"
    broken.write_text("no section header\n")
    with pytest.raises(ConfigError, match="cannot read config file") as info:
        load_config(broken, env={})
    assert str(broken) in str(info.value)


def test_unknown_option_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown configuration key 'colour'"):
        load_config(env={}, options={"colour": "blue"})


@pytest.mark.parametrize(
    "body, found",
    [
        ("[spool]\nspool = /srv/q\n", "[spool]"),
        ("[app:main]\nspoolq.spool = x\n[spoolq-x]\n", "[app:main], [spoolq-x]"),
        ("[DEFAULT]\nspool = /srv/q\n", "[DEFAULT]"),
    ],
)
def test_a_file_without_a_spoolq_section_is_refused_not_ignored(tmp_path: Path, body: str, found: str) -> None:
    # Given an ini file whose settings sit in some other section (a typo, or another program's file)
    path = tmp_path / "spoolq.ini"
    path.write_text(body)
    # Then reading it refuses, naming the file and the sections it has, explicitly given or found in cwd
    for how in ({"file": path}, {"cwd": tmp_path}):
        with pytest.raises(ConfigError) as info:
            load_config(env={}, **how)
        assert f"no [spoolq] section in the config file: it has {found}" in str(info.value)
        assert str(path) in str(info.value)


def test_an_empty_file_sets_nothing(tmp_path: Path) -> None:
    path = tmp_path / "spoolq.ini"
    path.write_text("# nothing yet\n")
    assert load_config(path, env={}).sources["spool"] == "default"
