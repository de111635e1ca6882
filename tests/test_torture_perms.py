"""Torture: permissions.  0700 directories and 0600 files by default; a spool owned by
another user, or writable by group or others, is refused by the producer and the worker."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
from pathlib import Path

import pytest
from torture_tasks import TESTS_DIR, child_env, worker_argv

import spoolq
from spoolq.errors import SpoolError
from spoolq.layout import NEW, READY, STATES, TMP

pytestmark = [pytest.mark.torture, pytest.mark.timeout(120)]


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def test_default_modes_are_0700_and_0600(tmp_path: Path) -> None:
    old = os.umask(0)  # even with a permissive umask
    try:
        app = spoolq.App(tmp_path / "spool")
        app.send_task("torture.record", args=[str(tmp_path / "ran"), "j1"], task_id="j1")
    finally:
        os.umask(old)
    root = app.spool.path
    assert _mode(root) == 0o700
    for state in (TMP, *STATES):
        assert _mode(root / state) == 0o700, state
    assert _mode(root / NEW / "j1.json") == 0o600
    # and the supervisor's own writes and moves keep 0600
    done = subprocess.run(
        worker_argv(root, "--burst"), env=child_env(), cwd=TESTS_DIR, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert _mode(root / "spoolq.lock") & 0o077 == 0
    app.spool.close()


def _unsafe_spools(tmp_path: Path) -> list[tuple[str, Path, str]]:
    made = []
    for what, mode in (("group-writable", 0o770), ("world-writable", 0o777)):
        app = spoolq.App(tmp_path / what)
        app.send_task("torture.record", args=["x", "y"], task_id="j1")
        app.spool.close()
        os.chmod(app.spool.path, mode)
        made.append((what, app.spool.path, "writable by group or others"))
    app = spoolq.App(tmp_path / "state-dir")
    app.send_task("torture.record", args=["x", "y"], task_id="j1")
    app.spool.close()
    os.chmod(app.spool.path / READY, 0o722)
    made.append(("a group-writable state directory", app.spool.path, "writable by group or others"))
    try:
        nobody = pwd.getpwnam("nobody").pw_uid
    except KeyError:
        return made
    if os.geteuid() == 0:
        app = spoolq.App(tmp_path / "foreign")
        app.send_task("torture.record", args=["x", "y"], task_id="j1")
        app.spool.close()
        os.chown(app.spool.path, nobody, -1)
        made.append(("owned by nobody", app.spool.path, f"owned by uid {nobody}"))
    return made


def test_unsafe_spools_are_refused_by_producer_and_worker(tmp_path: Path) -> None:
    cases = _unsafe_spools(tmp_path)
    if os.geteuid() == 0:
        assert any(what == "owned by nobody" for what, _, _ in cases)
    for what, root, message in cases:
        before = sorted(os.listdir(root / NEW))
        # The producer refuses, with a message naming the cause, and writes nothing
        with pytest.raises(SpoolError, match=message):
            spoolq.App(root).send_task("torture.record", args=["x", "y"], task_id="j2")
        assert sorted(os.listdir(root / NEW)) == before, what
        # The worker refuses too: exit status 3, a one-line error naming the cause
        done = subprocess.run(
            worker_argv(root, "--burst"), env=child_env(), cwd=TESTS_DIR, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 3, (what, done.returncode, done.stderr[-2000:])
        assert message in done.stderr, (what, done.stderr[-2000:])
        assert "Traceback" not in done.stderr
        assert sorted(os.listdir(root / NEW)) == before, f"{what}: the worker took jobs from an unsafe spool"
