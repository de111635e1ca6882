"""The whole life of the CKAN example works from the command line.

Given ``examples/ckanext-echo`` installed with pip (its tasks found through the
``spoolq.tasks`` entry point) into a directory of its own that only this test's processes
see, when a producer that never imports the extension sends
``NAME.echofunction`` by name and ``spoolq worker --burst`` runs, then the worker prints
"Hello World"; and the flaky task runs again after each countdown and ends in ``failed/``
with its whole error history once its retries run out.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from conftest import REPO_DIR, installed_distributions, run_spoolq, subprocess_env
from worker_helpers import listing, read_job

pytestmark = pytest.mark.timeout(240)

EXAMPLE = REPO_DIR / "examples" / "ckanext-echo"

PRODUCER = """
import json, sys, uuid
import spoolq
app = spoolq.App(sys.argv[1])
hello = app.send_task("NAME.echofunction", args=["Hello World"], task_id=str(uuid.uuid4()))
flaky = app.send_task("NAME.flaky_echo", args=["Hello retry"], kwargs={"countdown": 0.3, "max_retries": 2})
print(json.dumps({"hello": hello.id, "flaky": flaky.id,
                  "imported": sorted(m for m in sys.modules if m.startswith("ckanext"))}))
"""


def _installed(env: dict[str, str]) -> bool:
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlib.metadata import entry_points; import ckanext.echo.plugin;"
            "assert any(e.name == 'echo' for e in entry_points(group='spoolq.tasks'))",
        ],
        env=env,
        capture_output=True,
        cwd=REPO_DIR.parent,
    )
    return probe.returncode == 0


@pytest.fixture(scope="session")
def ckanext_echo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a process that sees the example as pip installed it.

    pip installs a copy of it (so no build files land in the repository) with ``--target``
    into a directory of its own, which only this test's processes get on their PYTHONPATH:
    the interpreter running the tests is never changed (an install into it would make later
    in-process tests see an entry point they cannot import, and pass only on machines where
    it was installed before).
    """
    root = tmp_path_factory.mktemp("ckanext-echo")
    source, target = root / "source", root / "site"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(source)],
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    env = subprocess_env()
    env["PYTHONPATH"] = os.pathsep.join([str(target), env["PYTHONPATH"]])
    assert _installed(env), "the entry point is not found through importlib.metadata"
    return env


def test_the_ckan_example_from_install_to_failed_retries(ckanext_echo: dict[str, str], tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    work = tmp_path / "work"  # not the repo: nothing is importable by accident
    work.mkdir()

    tasks = run_spoolq("--spool", str(spool), "tasks", cwd=work, env=ckanext_echo)
    assert "NAME.echofunction" in tasks.stdout, tasks.stdout + tasks.stderr
    line = next(ln for ln in tasks.stdout.splitlines() if "NAME.echofunction" in ln)
    assert "entry point echo (ckanext.echo.plugin:task_imports)" in line
    assert "ckanext" not in tasks.stderr

    sent = subprocess.run(
        [sys.executable, "-c", PRODUCER, str(spool)],
        cwd=work,
        env=ckanext_echo,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stderr
    ids = json.loads(sent.stdout)
    assert ids["imported"] == []  # the producer knew only the names
    assert {n[:-5] for n in listing(spool)["new"]} == {ids["hello"], ids["flaky"]}

    worker = run_spoolq("--spool", str(spool), "worker", "--burst", "-c", "1", cwd=work, env=ckanext_echo, timeout=120)

    assert worker.returncode == 0, worker.stderr
    assert "Hello World" in worker.stdout.splitlines()
    assert [ln for ln in worker.stdout.splitlines() if ln.startswith("attempt")] == [
        "attempt 0: Hello retry",
        "attempt 1: Hello retry",
        "attempt 2: Hello retry",
    ]
    state = listing(spool)
    assert all(state[s] == [] for s in ("new", "ready", "active", "delayed", "done"))
    job = read_job(spool, "failed", ids["flaky"])
    assert job["retries"] == 2
    assert [e["type"] for e in job["errors"]] == ["ConnectionError"] * 3
    assert all("upstream unavailable" in e["message"] and "_deliver" in e["traceback"] for e in job["errors"])
    # Each run came after the countdown of the one before (a bound the design guarantees).
    at = [datetime.fromisoformat(e["at"].replace("Z", "+00:00")) for e in job["errors"]]
    assert all((b - a).total_seconds() >= 0.3 for a, b in zip(at, at[1:], strict=False))
    assert "NAME.flaky_echo: failed: retries exhausted (2/2)" in worker.stderr


def test_the_example_is_not_installed_into_the_interpreter_running_the_tests(
    ckanext_echo: dict[str, str], environment_at_start: frozenset[tuple[str, str]]
) -> None:
    # Given the example installed for the test above
    # Then a fresh process of this interpreter, with the environment the tests run in, sees
    # the same installed distributions as when the session began
    assert installed_distributions() == environment_at_start
    if not any(name == "ckanext-echo" for name, _ in environment_at_start):
        assert not _installed(subprocess_env())
