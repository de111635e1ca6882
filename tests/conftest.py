"""Shared fixtures: a fresh spool per test, a clean environment, and a real-process runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import spoolq
from spoolq.spool import Spool

TESTS_DIR = Path(__file__).resolve().parent
REPO_DIR = TESTS_DIR.parent


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SPOOLQ_* variable from the developer's shell leaks into a test."""
    for var in list(os.environ):
        if var.startswith("SPOOLQ_"):
            monkeypatch.delenv(var)


_LIST_DISTRIBUTIONS = """
import json, sys
sys.path = [p for p in sys.path if p]  # not the working directory
from importlib.metadata import distributions
print(json.dumps(sorted({(d.metadata["Name"], d.version) for d in distributions()})))
"""


def installed_distributions() -> frozenset[tuple[str, str]]:
    """(name, version) of every distribution a fresh process of this interpreter sees."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", _LIST_DISTRIBUTIONS], env=env, capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return frozenset((name, version) for name, version in json.loads(out))


@pytest.fixture(scope="session", autouse=True)
def environment_at_start() -> Iterator[frozenset[tuple[str, str]]]:
    """Tests must not change the environment they run in (no pip install into this
    interpreter): what it has installed is the same at the end of the session as at the start."""
    before = installed_distributions()
    yield before
    after = installed_distributions()
    assert after == before, (
        f"the tests changed this interpreter: added {sorted(after - before)}, removed {sorted(before - after)}"
    )


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    """Where a test's spool lives (not created: the code under test creates it)."""
    return tmp_path / "spool"


@pytest.fixture
def app(spool_dir: Path) -> Iterator[spoolq.App]:
    """An App on a fresh spool, fsync on (the default)."""
    a = spoolq.App(spool_dir)
    yield a
    a.spool.close()


@pytest.fixture
def spool(spool_dir: Path) -> Iterator[Spool]:
    """A created spool."""
    s = Spool(spool_dir)
    yield s
    s.close()


def files_in(d: Path) -> list[str]:
    """The names in a directory, sorted; [] when it does not exist."""
    return sorted(os.listdir(d)) if d.is_dir() else []


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a child Python: this repo and tests/ importable, no SPOOLQ_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOLQ_")}
    paths = [str(REPO_DIR), str(TESTS_DIR), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra)
    return env


def run_spoolq(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 30, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m spoolq ARGS`` as a real process and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "spoolq", *args],
        cwd=cwd,
        env=env or subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
    )


def pytest_configure(config: pytest.Config) -> None:
    """Warnings are errors (STYLE.md); the ``slow`` marker is known."""
    config.addinivalue_line("filterwarnings", "error")
    config.addinivalue_line("markers", "slow: a test that takes seconds (real processes)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test gets a 60 s timeout unless it sets its own: a hang fails, never blocks CI."""
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(60))
