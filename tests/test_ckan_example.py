"""The whole life of the CKAN example works from the command line.

Given ``examples/ckanext-echo`` installed with pip (its tasks found through the
``spoolq.tasks`` entry point), when a producer that never imports the extension sends
``NAME.echofunction`` by name and ``spoolq worker --burst`` runs, then the worker prints
"Hello World"; and the flaky task runs again after each countdown and ends in ``failed/``
with its whole error history once its retries run out.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from datetime import datetime

import pytest
from conftest import REPO_DIR, run_spoolq, subprocess_env
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


def _installed() -> bool:
    probe = subprocess.run(
        [sys.executable, "-c", "from importlib.metadata import entry_points; import ckanext.echo.plugin;"
         "assert any(e.name == 'echo' for e in entry_points(group='spoolq.tasks'))"],
        env=subprocess_env(), capture_output=True, cwd=REPO_DIR.parent,
    )  # fmt: skip
    return probe.returncode == 0


@pytest.fixture(scope="session")
def ckanext_echo() -> None:
    """pip-install the example once per session (skipped when it is already installed)."""
    if not _installed():
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "-e", str(EXAMPLE)],
                              capture_output=True, text=True, timeout=200)  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        importlib.invalidate_caches()
        assert _installed()


def test_the_ckan_example_from_install_to_failed_retries(ckanext_echo, tmp_path):
    spool = tmp_path / "spool"
    work = tmp_path / "work"  # not the repo: nothing is importable by accident
    work.mkdir()

    tasks = run_spoolq("--spool", str(spool), "tasks", cwd=work)
    assert "NAME.echofunction" in tasks.stdout, tasks.stdout + tasks.stderr
    line = next(ln for ln in tasks.stdout.splitlines() if "NAME.echofunction" in ln)
    assert "entry point echo (ckanext.echo.plugin:task_imports)" in line
    assert "ckanext" not in tasks.stderr

    sent = subprocess.run([sys.executable, "-c", PRODUCER, str(spool)], cwd=work, env=subprocess_env(),
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    ids = json.loads(sent.stdout)
    assert ids["imported"] == []  # the producer knew only the names
    assert {n[:-5] for n in listing(spool)["new"]} == {ids["hello"], ids["flaky"]}

    worker = run_spoolq("--spool", str(spool), "worker", "--burst", "-c", "1", cwd=work, timeout=120)

    assert worker.returncode == 0, worker.stderr
    assert "Hello World" in worker.stdout.splitlines()
    assert [ln for ln in worker.stdout.splitlines() if ln.startswith("attempt")] == [
        "attempt 0: Hello retry", "attempt 1: Hello retry", "attempt 2: Hello retry"]  # fmt: skip
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
