"""supervisor.conf under a real supervisord: jobs run, a stop mid-job loses nothing, a start drains.

The ``[program:spoolq]`` section is read from the repository's ``supervisor.conf`` and only its
paths are changed (the command runs this Python's spoolq, the spool, config and logs live in
``tmp_path``, no ``user=`` when we are that user already); the ``[supervisord]``,
``[unix_http_server]``, ``[supervisorctl]`` and ``[rpcinterface:supervisor]`` sections are the
test's own.  supervisord is the PyPI package, run as ``python -m supervisor.supervisord``.
"""

from __future__ import annotations

import configparser
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import spoolq

pytestmark = [pytest.mark.supervisord, pytest.mark.timeout(180)]

REPO_DIR = Path(__file__).resolve().parent.parent
JOB_SECONDS = 1.5

TASKS = '''
import os, time
import spoolq

@spoolq.task(name="sd.slow", max_retries=0)
def slow(n, seconds, log):
    """Append "start n", sleep, append "end n": the log shows what ran, and how often."""
    with open(log, "a") as fh:
        fh.write(f"start {n}\\n")
    time.sleep(seconds)
    with open(log, "a") as fh:
        fh.write(f"end {n}\\n")
'''


def program_section(tmp_path: Path) -> dict[str, str]:
    """The repository's [program:spoolq] with its paths pointed into ``tmp_path``."""
    parser = configparser.RawConfigParser()
    parser.read(REPO_DIR / "supervisor.conf", encoding="utf-8")
    program = dict(parser["program:spoolq"])
    assert program["command"] == "spoolq worker --config /etc/spoolq/spoolq.ini"
    program["command"] = shlex.join(
        [sys.executable, "-m", "spoolq", "worker", "--config", str(tmp_path / "spoolq.ini")]
    )
    program["directory"] = str(tmp_path)
    for key in ("stdout_logfile", "stderr_logfile"):
        program[key] = str(tmp_path / "log" / Path(program[key]).name)
    user = program.pop("user")
    assert user == "spoolq"  # dropped here: we run as ourselves
    return program


def write_conf(tmp_path: Path) -> Path:
    (tmp_path / "log").mkdir()
    sock = tmp_path / "supervisor.sock"
    assert len(str(sock)) < 100, "unix socket path too long for AF_UNIX"
    conf = configparser.RawConfigParser()
    conf["unix_http_server"] = {"file": str(sock), "chmod": "0700"}
    conf["supervisord"] = {
        "nodaemon": "true",
        "logfile": str(tmp_path / "log" / "supervisord.log"),
        "pidfile": str(tmp_path / "supervisord.pid"),
        "childlogdir": str(tmp_path / "log"),
        "loglevel": "info",
    }
    factory = "supervisor.rpcinterface:make_main_rpcinterface"
    conf["rpcinterface:supervisor"] = {"supervisor.rpcinterface_factory": factory}
    conf["supervisorctl"] = {"serverurl": f"unix://{sock}"}
    conf["program:spoolq"] = program_section(tmp_path)
    path = tmp_path / "supervisord.conf"
    with open(path, "w", encoding="utf-8") as fh:
        conf.write(fh)
    return path


def ctl(conf: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(conf), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def names(d: Path) -> list[str]:
    return sorted(os.listdir(d)) if d.is_dir() else []


@pytest.fixture
def supervisord(tmp_path: Path) -> Iterator[Path]:
    """A running supervisord with the spoolq program (autostarted); yields its config."""
    (tmp_path / "sd_tasks.py").write_text(TASKS)
    (tmp_path / "spoolq.ini").write_text(
        "[spoolq]\nspool = spool\nimports = sd_tasks\nconcurrency = 1\nshutdown_timeout = 20\n"
    )
    conf = write_conf(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOLQ_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    try:
        wait_for(lambda: "RUNNING" in ctl(conf, "status", "spoolq").stdout, 30, "the spoolq program to be RUNNING")
        yield conf
    finally:
        ctl(conf, "shutdown")
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_stop_mid_job_loses_nothing_and_start_drains(supervisord: Path, tmp_path: Path) -> None:
    # Given a worker under supervisord and five slow jobs
    spool, log = tmp_path / "spool", tmp_path / "ran.log"
    app = spoolq.App(spool)
    ids = [app.send_task("sd.slow", args=[n, JOB_SECONDS, str(log)], task_id=f"job-{n}").id for n in range(5)]

    # When the first has finished and the second is running, supervisorctl stops the program
    wait_for(lambda: "start 1" in lines(log), 30, "the second job to start")
    stopped = ctl(supervisord, "stop", "spoolq")

    # Then the running job finished, nothing is lost, and the rest wait in ready/
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "stopped" in stopped.stdout
    assert "STOPPED" in ctl(supervisord, "status", "spoolq").stdout
    assert lines(log) == ["start 0", "end 0", "start 1", "end 1"]
    assert names(spool / "active") == [] and names(spool / "new") == [] and names(spool / "failed") == []
    assert sorted(n.split("-", 2)[2] for n in names(spool / "ready")) == [f"{i}.json" for i in ids[2:]]
    err_log = (tmp_path / "log" / "worker.err.log").read_text()
    assert "stopping: waiting up to 20s for 1 running job(s)" in err_log

    # When it is started again
    started = ctl(supervisord, "start", "spoolq")
    assert started.returncode == 0, started.stdout + started.stderr

    # Then everything drains, each job exactly once
    wait_for(lambda: "end 4" in lines(log), 60, "the last job to finish")
    wait_for(
        lambda: all(names(spool / s) == [] for s in ("new", "ready", "active", "delayed")), 10, "the spool to drain"
    )
    assert lines(log) == [f"{w} {n}" for n in range(5) for w in ("start", "end")]
    assert names(spool / "failed") == []
    assert "spoolq worker" in (tmp_path / "log" / "worker.out.log").read_text()
