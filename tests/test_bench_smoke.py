"""Smoke test of the benchmark harness: spoolq only, tiny sizes, every row of the table.

No timing assertions: timings belong in ``bench/``; this only checks that ``python -m
bench --quick --only spoolq`` runs end to end and that its table has every row.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytest.importorskip("redis", reason="bench.peers needs the bench extra (pip install -e '.[bench]')")

ROWS = [
    "enqueue, 1 producer, 1 job/call, fsync on",
    "enqueue, 4 producers, 1 job/call, fsync on",
    "bulk enqueue, 1 producer (send_many)",
    "enqueue, 1 producer, 1 job/call, fsync off",
    "bare fs limit",
    "no-op jobs, 2 workers, fsync on, from spawn",
    "enqueue→start latency p50",
    "enqueue→start latency p99",
    "delayed: lateness p50",
    "delayed: lateness p99",
    "delayed: idle CPU",
    "scale: drain rate with",
    "scale: supervisor peak RSS with",
]


def test_quick_spoolq_only_run_prints_every_row(tmp_path: Path) -> None:
    report = tmp_path / "RESULTS.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOLQ_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--only",
            "spoolq",
            "--results",
            str(report),
            "--json",
            str(tmp_path / "raw.json"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| measure | spoolq | best peer |")
    for row in ROWS:
        matching = [line for line in table if row in line]
        assert matching, f"no row {row!r} in:\n{proc.stdout}"
        # spoolq measured something in every row (no error/timeout/not run), whatever the speed
        cells = [c.strip() for c in matching[0].strip("|").split("|")]
        assert cells[1] and not cells[1].startswith(("error", "timeout", "not run", "—")), matching[0]
    text = report.read_text()
    assert "## Machine" in text and "load" in text
