"""examples/quickstart.py, run as the README's first command runs it, in a fresh directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

QUICKSTART = Path(__file__).resolve().parent.parent / "examples" / "quickstart.py"
EXPECTED_FAILED = {"quickstart.divide-by-zero": 0, "quickstart.legacy-api": 3}  # id: retries charged

pytestmark = pytest.mark.timeout(120)


def run_quickstart(cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOLQ_")}
    return subprocess.run(
        [sys.executable, str(QUICKSTART)], cwd=cwd, env=env, capture_output=True, text=True, timeout=100
    )


def failed_jobs(spool: Path) -> dict[str, dict]:
    out = {}
    for name in sorted(os.listdir(spool / "failed")):
        job = json.loads((spool / "failed" / name).read_text())
        out[job["id"]] = job
    return out


def test_quickstart_runs_twice_and_leaves_only_the_expected_failures(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    for run in (1, 2):
        # When the quick start runs in a fresh directory (and again, over its own leftovers)
        proc = run_quickstart(tmp_path)

        # Then it succeeds, shows the worker and the status, and points at the failed jobs
        assert proc.returncode == 0, f"run {run}:\n{proc.stdout}\n{proc.stderr}"
        assert "spoolq worker" in proc.stdout and "[tasks]" in proc.stdout
        assert "kept results: 0 + 0 = 0, 100 + 1 = 101" in proc.stdout
        assert "spoolq --spool spool ls failed" in proc.stdout and "cat spool/failed/" in proc.stdout
        assert "retries exhausted (3/3)" in proc.stderr
        assert "stopped: 20 received, 18 succeeded" in proc.stderr

        # And nothing is left to run; exactly the two doomed jobs are in failed/
        for state in ("new", "ready", "active", "delayed"):
            assert os.listdir(spool / state) == [], f"run {run}: {state}/ is not empty"
        failed = failed_jobs(spool)
        assert {i: j["retries"] for i, j in failed.items()} == EXPECTED_FAILED
        assert [e["type"] for e in failed["quickstart.legacy-api"]["errors"]] == ["ConnectionError"] * 4
        assert failed["quickstart.divide-by-zero"]["errors"][-1]["type"] == "ZeroDivisionError"
        assert "Traceback" in failed["quickstart.divide-by-zero"]["errors"][-1]["traceback"]
        assert len(os.listdir(spool / "done")) == 12  # the add() results are kept
        if run == 2:
            assert "removed 14 job files of an earlier run" in proc.stdout
