"""Torture: SIGKILL the supervisor (with its whole pool) and the producers, many times.

The claim: every enqueue that returned runs at least once; nothing half-written is ever
taken in; the spool ends with nothing left in tmp/ new/ ready/ active/ and nothing failed.
``SPOOLQ_TORTURE_SCALE=20`` makes a long by-hand run.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from torture_tasks import SCALE, TESTS_DIR, child_env, duplicates, read_lines, scaled, worker_argv

from spoolq import fsck
from spoolq.clock import utcnow
from spoolq.layout import ACTIVE, DELAYED, FAILED, NEW, READY, TMP
from spoolq.spool import Spool

pytestmark = [pytest.mark.torture, pytest.mark.timeout(int(600 * max(1.0, SCALE)))]


def _start_worker(spool: Path, log: Path, *extra: str) -> subprocess.Popen:
    out = open(log, "ab")  # noqa: SIM115 - handed to the child, closed with it
    try:
        return subprocess.Popen(
            worker_argv(spool, *extra),
            env=child_env(),
            cwd=TESTS_DIR,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        out.close()


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(30)


def _wait_unlocked(spool: Spool, timeout_s: float = 30) -> None:
    # The pool children die with the group; the flock goes with the last holder.
    deadline = time.monotonic() + timeout_s
    while spool.lock().is_held():
        assert time.monotonic() < deadline, "the lock outlived its killed supervisor"
        time.sleep(0.01)


def _producer(spool: Path, run_log: Path, ack_log: Path, prefix: str, count: int, pause_s: float = 0.0):
    return subprocess.Popen(
        [
            sys.executable,
            str(TESTS_DIR / "torture_tasks.py"),
            "produce",
            str(spool),
            str(run_log),
            str(ack_log),
            prefix,
            str(count),
            str(pause_s),
        ],
        env=child_env(),
        cwd=TESTS_DIR,
        start_new_session=True,
    )


def _drain(spool_dir: Path, log: Path) -> None:
    done = subprocess.run(
        worker_argv(spool_dir, "--burst"),
        env=child_env(),
        cwd=TESTS_DIR,
        capture_output=True,
        timeout=300 * max(1.0, SCALE),
    )
    with log.open("ab") as f:
        f.write(done.stdout + done.stderr)
    assert done.returncode == 0, (done.stdout + done.stderr).decode()[-3000:]


def _assert_nothing_lost(spool: Spool, ack_log: Path, run_log: Path, what: str) -> tuple[int, int]:
    acked = read_lines(ack_log)
    ran = read_lines(run_log)
    lost = sorted(set(acked) - set(ran))
    dups = duplicates(ran)
    print(
        f"\n{what}: {len(acked)} acknowledged, {len(set(ran))} ran, {len(lost)} lost, "
        f"{sum(n - 1 for n in dups.values())} duplicate run(s): {sorted(dups)[:20]}"
    )
    assert not lost, f"{len(lost)} acknowledged job(s) never ran: {lost[:20]}"
    for state in (NEW, READY, ACTIVE, DELAYED):
        assert os.listdir(spool.dir(state)) == [], f"{state}/ is not empty"
    assert os.listdir(spool.dir(FAILED)) == [], f"failed/: {os.listdir(spool.dir(FAILED))[:10]}"
    return len(acked), sum(n - 1 for n in dups.values())


def test_supervisor_killed_at_random_moments_loses_nothing(tmp_path: Path) -> None:
    # Given a producer that keeps enqueueing while the supervisor is SIGKILLed again and again
    spool_dir, run_log, ack_log, log = tmp_path / "spool", tmp_path / "ran", tmp_path / "acked", tmp_path / "worker.log"
    spool = Spool(spool_dir)
    kills = scaled(25)
    total = scaled(2500)
    rnd = random.Random(os.environ.get("SPOOLQ_TORTURE_SEED", "kill"))
    producer = _producer(spool_dir, run_log, ack_log, "job", total, pause_s=0.004)  # spans the kills
    try:
        for _ in range(kills):
            _wait_unlocked(spool)
            worker = _start_worker(spool_dir, log)
            time.sleep(rnd.uniform(0.05, 1.2))
            # When the whole process group dies at once, at a random moment
            _kill_group(worker)
        producer.wait(300 * max(1.0, SCALE))
        assert producer.returncode == 0
    finally:
        if producer.poll() is None:
            _kill_group(producer)
    # Then a drain with --burst runs every acknowledged job
    _wait_unlocked(spool)
    _drain(spool_dir, log)
    acked, dups = _assert_nothing_lost(spool, ack_log, run_log, f"{kills} supervisor kills")
    assert acked == total
    assert os.listdir(spool.dir(TMP)) == []
    # Duplicates come only from a kill between a job's end and its bookkeeping: at most a
    # few per kill (one per busy child), a small fraction of the whole.
    assert dups <= 2 * kills and dups <= max(5, total // 20)


def test_producers_killed_mid_enqueue_lose_nothing_acknowledged(tmp_path: Path) -> None:
    # Given a running supervisor, and producers killed at random moments, many times
    spool_dir, run_log, ack_log, log = tmp_path / "spool", tmp_path / "ran", tmp_path / "acked", tmp_path / "worker.log"
    spool = Spool(spool_dir)
    worker = _start_worker(spool_dir, log)
    rnd = random.Random(os.environ.get("SPOOLQ_TORTURE_SEED", "producers"))
    kills = scaled(40)
    try:
        for k in range(kills):
            producer = _producer(spool_dir, run_log, ack_log, f"p{k}", 100_000)
            time.sleep(rnd.uniform(0.25, 0.8))  # ~0.2 s is the interpreter's start
            _kill_group(producer)
    finally:
        # When the supervisor is stopped gracefully after the last kill
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    assert worker.returncode == 0
    _drain(spool_dir, log)
    # Then everything acknowledged ran, and no half-written file was ever taken in
    acked, _ = _assert_nothing_lost(spool, ack_log, run_log, f"{kills} producer kills")
    assert acked > 0
    assert "rejected" not in log.read_text(errors="replace")
    # What killed writers leave in tmp/ is stale tmp, and only that (fsck removes it).
    report = fsck.check(spool, repair=True, now=utcnow() + timedelta(hours=2))
    assert {f.kind for f in report.findings} <= {fsck.STALE_TMP}
    assert report.clean and os.listdir(spool.dir(TMP)) == []
    print(f"{len(report.findings)} stale tmp file(s) left by killed producers, removed by fsck")
