"""The command line: each command through CliRunner, errors as one line with a documented exit code,
and a few real ``python -m spoolq`` runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import files_in, run_spoolq, subprocess_env

import spoolq
from spoolq.cli import EXIT_JOB, EXIT_SPOOL, EXIT_TIMEOUT, EXIT_USAGE, main
from spoolq.job import Job, make_error
from spoolq.layout import ACTIVE, DONE, FAILED, NEW
from spoolq.spool import Spool

T0 = datetime(2026, 11, 25, 3, 15, tzinfo=timezone.utc)
COMMANDS = ["init", "send", "status", "ls", "show", "delete", "purge", "tasks", "result", "retry", "worker"]


@pytest.fixture
def cli(spool_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Run the CLI in-process on the test's spool (cwd = tmp_path, so no stray spoolq.ini)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # `tasks` puts the cwd on it, as the worker does

    def run(*args: str, input: str | None = None, spool: bool = True) -> Result:
        return CliRunner().invoke(main, [*(["--spool", str(spool_dir)] if spool else []), *args], input=input)

    return run


def assert_one_line_error(result: Result, code: int, fragment: str) -> None:
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit)  # never an uncaught exception
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and fragment in lines[0], result.stderr
    assert "Traceback" not in result.output


def failed_job(spool: Spool, job_id: str, task: str = "t") -> Path:
    err = make_error("ConnectionError", "refused\nsecond line", "Traceback ...", attempt=3, at=T0)
    job = Job(id=job_id, task=task, retries=3, errors=(err,), enqueued_at=T0)
    name = f"20261125T031500.000000Z-{job_id}.json"
    spool.write(FAILED, name, job)
    return spool.path_of(FAILED, name)


# -- send -----------------------------------------------------------------------------------------


def test_send_prints_the_id_and_writes_the_job(cli, spool: Spool, spool_dir: Path) -> None:
    result = cli(
        "send",
        "NAME.echofunction",
        '["Hello World"]',
        "--kwargs",
        '{"loud": true}',
        "--id",
        "j1",
        "--priority",
        "7",
        "--eta",
        "2030-01-01T00:00:00+02:00",
    )
    assert result.exit_code == 0 and result.stdout == "j1\n"
    job = Job.from_json((spool_dir / NEW / "j1.json").read_bytes())
    assert (job.task, job.args, job.kwargs, job.priority) == ("NAME.echofunction", ["Hello World"], {"loud": True}, 7)
    assert job.eta == datetime(2029, 12, 31, 22, tzinfo=timezone.utc)


def test_send_without_args_and_with_countdown(cli, spool: Spool, spool_dir: Path) -> None:
    result = cli("send", "t", "--countdown", "60")
    job_id = result.stdout.strip()
    job = Job.from_json((spool_dir / NEW / f"{job_id}.json").read_bytes())
    assert job.args == [] and job.eta is not None and 59 < (job.eta - job.enqueued_at).total_seconds() <= 60


@pytest.mark.parametrize(
    "args, code, fragment",
    [
        (["t", "[1,"], EXIT_USAGE, "ARGS_JSON is not valid JSON"),
        (["t", '{"a": 1}'], EXIT_USAGE, "ARGS_JSON must be a JSON array"),
        (["t", "[NaN]"], EXIT_USAGE, "ARGS_JSON is not valid JSON"),
        (["t", "--kwargs", "[1]"], EXIT_USAGE, "--kwargs must be a JSON object"),
        (["t", "--kwargs", "{x}"], EXIT_USAGE, "--kwargs is not valid JSON"),
        (["t", "--id", "../etc/passwd"], EXIT_USAGE, "path separator"),
        (["t", "--id", "x" * 129], EXIT_USAGE, "longer than 128"),
        (["t", "--id", "a\tb"], EXIT_USAGE, "control character"),
        (["t", "--eta", "tomorrow"], EXIT_USAGE, "--eta is not a time"),
        (["t", "--countdown", "inf"], EXIT_USAGE, "countdown"),
        (["t", '["' + "x" * (1024 * 1024) + '"]'], EXIT_USAGE, "over the limit of 1048576 bytes"),
    ],
)
def test_send_refuses_bad_input_in_one_line_and_writes_nothing(
    cli, spool: Spool, spool_dir: Path, args: list[str], code: int, fragment: str
) -> None:
    assert_one_line_error(cli("send", *args), code, fragment)
    assert files_in(spool_dir / NEW) == []


def test_send_refuses_a_duplicate_id(cli, spool: Spool, spool_dir: Path) -> None:
    assert cli("send", "t", "[1]", "--id", "dup").exit_code == 0
    assert_one_line_error(cli("send", "t", "[2]", "--id", "dup"), EXIT_USAGE, "'dup' is already queued")
    assert json.loads((spool_dir / NEW / "dup.json").read_bytes())["args"] == [1]


def test_usage_errors_exit_2(cli) -> None:
    assert cli("send").exit_code == 2
    assert cli("send", "t", "--priority", "10").exit_code == 2
    assert cli("ls", "sideways").exit_code == 2
    assert cli("frobnicate").exit_code == 2


# -- reading commands never create a spool ------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["status"], ["ls"], ["show", "x"], ["result", "x"], ["delete", "x"], ["purge", "done", "--yes"], ["retry", "x"]],
)
def test_commands_on_a_missing_spool_say_so_and_create_nothing(cli, spool_dir: Path, args: list[str]) -> None:
    assert_one_line_error(cli(*args), EXIT_SPOOL, f"no spool at {spool_dir}")
    assert not spool_dir.exists()


# -- status, ls, show -----------------------------------------------------------------------------


def test_status_counts_each_state_and_sees_the_supervisor(cli, spool_dir: Path) -> None:
    app = spoolq.App(spool_dir)
    for i in range(3):
        app.send_task("t", [i])
    failed_job(app.spool, "f1")
    result = cli("status", "--json")
    out = json.loads(result.stdout)
    assert out["states"]["new"]["count"] == 3 and out["states"]["failed"]["count"] == 1
    assert out["states"]["ready"] == {"count": 0, "oldest_age_s": None, "newest_age_s": None}
    assert out["supervisor"] == {"running": False, "pid": None}
    with app.spool.lock():  # a supervisor holds the spool
        table = cli("status").stdout
    assert "supervisor: running (pid" in table and "new      3" in table


def test_ls_lists_jobs_with_their_last_error_and_rejected_files(cli, spool_dir: Path) -> None:
    app = spoolq.App(spool_dir)
    app.send_task("a.task", [1], task_id="n1")
    app.send_task("b.task", [2], task_id="n2")
    failed_job(app.spool, "f1", task="a.task")
    (spool_dir / NEW / "junk.json").write_text("{not json")
    app.spool.reject(NEW, "junk.json", "not valid JSON: Expecting property name", T0)
    # Default: the live states only
    assert [r["id"] for r in json.loads(cli("ls", "--json").stdout)] == ["n1", "n2"]
    # failed/: the job with its last error on one line, the rejected file with its reason
    rows = json.loads(cli("ls", "failed", "--json").stdout)
    assert rows[0]["id"] == "f1" and rows[0]["retries"] == 3 and "ConnectionError: refused" in rows[0]["last_error"]
    assert rows[1]["id"].endswith("-junk.json.bad") and rows[1]["rejected"] is True
    assert rows[1]["last_error"] == "not valid JSON: Expecting property name"
    table = cli("ls", "all").stdout
    assert "ConnectionError: refused second line" in table  # one line
    assert len(table.splitlines()) == 1 + 4  # header + n1, n2, f1, junk (no .reason rows)
    # filters
    assert [r["id"] for r in json.loads(cli("ls", "all", "--task", "a.task", "--json").stdout)] == ["n1", "f1"]
    assert len(json.loads(cli("ls", "all", "--limit", "2", "--json").stdout)) == 2


def test_show_prints_the_job_its_state_and_path(cli, spool_dir: Path) -> None:
    spoolq.App(spool_dir).send_task("t", ["x"], task_id="s1", kwargs={"k": 1})
    out = json.loads(cli("show", "s1").stdout)
    assert out["state"] == "new" and out["path"] == str(spool_dir / NEW / "s1.json")
    assert out["job"]["kwargs"] == {"k": 1}
    assert_one_line_error(cli("show", "absent"), EXIT_JOB, "no job with id 'absent'")
    assert_one_line_error(cli("show", "../new/s1"), EXIT_USAGE, "invalid job id")


# -- delete, purge, retry -------------------------------------------------------------------------


def test_delete_removes_a_queued_job_but_refuses_a_running_one(cli, spool_dir: Path) -> None:
    app = spoolq.App(spool_dir)
    app.send_task("t", task_id="gone")
    app.spool.write(ACTIVE, "busy.json", Job(id="busy", task="t"))
    assert cli("delete", "gone").exit_code == 0 and files_in(spool_dir / NEW) == []
    assert_one_line_error(cli("delete", "busy"), EXIT_JOB, "is running (in active/)")
    assert files_in(spool_dir / ACTIVE) == ["busy.json"]
    assert_one_line_error(cli("delete", "gone"), EXIT_JOB, "no job with id 'gone'")


def test_purge_asks_first_and_refuses_active(cli, spool_dir: Path) -> None:
    app = spoolq.App(spool_dir)
    app.spool.ensure()
    for i in range(3):
        app.spool.write(DONE, f"d{i}.json", Job(id=f"d{i}", task="t"))
    declined = cli("purge", "done", input="n\n")
    assert declined.exit_code == 1 and len(files_in(spool_dir / DONE)) == 3
    assert cli("purge", "done", input="y\n").exit_code == 0 and files_in(spool_dir / DONE) == []
    app.spool.write(ACTIVE, "busy.json", Job(id="busy", task="t"))
    assert_one_line_error(cli("purge", "active", "--yes"), EXIT_USAGE, "refusing to purge active/")
    assert files_in(spool_dir / ACTIVE) == ["busy.json"]


def test_retry_sends_a_failed_job_back_with_its_history(cli, spool_dir: Path) -> None:
    spool = Spool(spool_dir)
    failed_job(spool, "f1")
    result = cli("retry", "f1")
    assert result.exit_code == 0, result.output
    job = Job.from_json((spool_dir / NEW / "f1.json").read_bytes())
    assert job.retries == 0 and job.errors[0]["type"] == "ConnectionError"
    assert files_in(spool_dir / FAILED) == []
    assert_one_line_error(cli("retry", "f1"), EXIT_JOB, "is in new/, not failed/")


def test_retry_all_by_task_and_refusals(cli, spool_dir: Path) -> None:
    spool = Spool(spool_dir)
    failed_job(spool, "a1", task="a")
    failed_job(spool, "b1", task="b")
    (spool_dir / NEW / "junk.json").write_text("garbage")
    bad = spool.path_of(FAILED, spool.reject(NEW, "junk.json", "not JSON", T0))
    assert cli("retry", "--all", "--task", "a").exit_code == 0
    assert files_in(spool_dir / NEW) == ["a1.json"]
    assert_one_line_error(cli("retry", bad.name), EXIT_USAGE, "is a rejected file, not a job")
    assert bad.exists()
    assert cli("retry").exit_code == EXIT_USAGE and cli("retry", "b1", "--all").exit_code == EXIT_USAGE
    assert cli("retry", "--all").exit_code == 0 and files_in(spool_dir / NEW) == ["a1.json", "b1.json"]


# -- tasks, result -------------------------------------------------------------------------------


def test_tasks_lists_includes_and_reports_failures(cli) -> None:
    ok = cli("tasks", "-I", "tasks", "--json")
    names = {t["name"]: t["origin"] for t in json.loads(ok.stdout)["tasks"]}
    assert names["tests.echo"] == "include tasks" and ok.exit_code == 0
    broken = cli("tasks", "-I", "no_such_module_xyz")
    assert broken.exit_code == EXIT_JOB and "include no_such_module_xyz: ModuleNotFoundError" in broken.stderr


def test_result_prints_success_fails_on_failure_and_times_out(cli, spool_dir: Path) -> None:
    app = spoolq.App(spool_dir)
    app.spool.ensure()
    app.spool.write(DONE, "ok.json", Job(id="ok", task="t").succeeded([1, "two"], T0, 60))
    failed_job(app.spool, "bad")
    app.send_task("t", task_id="pending")
    assert cli("result", "ok").stdout == '[1, "two"]\n'
    assert_one_line_error(cli("result", "bad"), EXIT_JOB, "job 'bad' failed: ConnectionError: refused")
    assert_one_line_error(cli("result", "pending", "--wait", "0.1"), EXIT_TIMEOUT, "is PENDING: no result within 0.1 s")
    assert_one_line_error(cli("result", "nobody"), EXIT_JOB, "no job with id 'nobody'")


# -- configuration through the CLI ------------------------------------------------------------------


def test_spool_option_beats_env_beats_ini_file(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "spoolq.ini").write_text("[spoolq]\nspool = from_file\n")
    for name in ("from_file", "from_env", "from_opt"):
        Spool(tmp_path / name)
    assert cli("send", "t", "--id", "a", spool=False).exit_code == 0
    monkeypatch.setenv("SPOOLQ_SPOOL", str(tmp_path / "from_env"))
    assert cli("send", "t", "--id", "b", spool=False).exit_code == 0
    assert cli("--spool", str(tmp_path / "from_opt"), "send", "t", "--id", "c", spool=False).exit_code == 0
    assert [files_in(tmp_path / d / NEW) for d in ("from_file", "from_env", "from_opt")] == [
        ["a.json"],
        ["b.json"],
        ["c.json"],
    ]


def test_a_bad_config_file_is_one_line_naming_key_and_file(cli, tmp_path: Path) -> None:
    ini = tmp_path / "bad.ini"
    ini.write_text("[spoolq]\nconcurency = 4\n")
    result = cli("--config", str(ini), "status", spool=False)
    assert_one_line_error(result, EXIT_USAGE, "unknown configuration key 'concurency'")
    assert str(ini) in result.stderr


def test_an_unsafe_spool_is_refused_with_exit_3(cli, spool_dir: Path) -> None:
    Spool(spool_dir)
    spool_dir.chmod(0o777)
    assert_one_line_error(cli("send", "t"), EXIT_SPOOL, "writable by group or others")
    assert files_in(spool_dir / NEW) == []


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_examples(cli, command: str) -> None:
    result = cli(command, "--help")
    assert result.exit_code == 0 and "Example" in result.stdout


def test_group_help_documents_exit_codes(cli) -> None:
    text = cli("--help").stdout
    for code in ("0  success", "1  a job failed", "2  bad usage", "3  the spool", "4  result"):
        assert code in text


# -- real processes ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_python_m_spoolq_round_trip(tmp_path: Path) -> None:
    spool = str(tmp_path / "spool")
    assert run_spoolq("--spool", spool, "init", cwd=tmp_path).stdout == f"created spool at {spool}\n"
    sent = run_spoolq("--spool", spool, "send", "NAME.echofunction", '["Hello World"]', cwd=tmp_path)
    assert sent.returncode == 0 and sent.stderr == ""
    job_id = sent.stdout.strip()
    listed = run_spoolq("--spool", spool, "ls", "--json", cwd=tmp_path)
    assert [r["id"] for r in json.loads(listed.stdout)] == [job_id]
    bad = run_spoolq("--spool", spool, "send", "t", "{oops", cwd=tmp_path)
    assert bad.returncode == EXIT_USAGE and bad.stderr.startswith("Error: ARGS_JSON") and bad.stderr.count("\n") == 1
    missing = run_spoolq("--spool", str(tmp_path / "nope"), "status", cwd=tmp_path)
    assert missing.returncode == EXIT_SPOOL and missing.stderr == f"Error: no spool at {tmp_path / 'nope'}\n"


@pytest.mark.slow
def test_no_colour_when_not_a_terminal(tmp_path: Path) -> None:
    spool = str(tmp_path / "spool")
    run_spoolq("--spool", spool, "init", cwd=tmp_path)
    run_spoolq("--spool", spool, "send", "t", cwd=tmp_path)
    out = run_spoolq("--spool", spool, "status", cwd=tmp_path).stdout
    assert "\x1b[" not in out and "new" in out


def test_spool_and_config_may_follow_the_command_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a config file naming a spool, and no SPOOLQ_* variables
    monkeypatch.chdir(tmp_path)
    (tmp_path / "other.ini").write_text("[spoolq]\nspool = from-file\n")
    for name in ("after", "before", "from-file"):
        Spool(tmp_path / name)
    runner = CliRunner()
    # When --spool and --config come after the command (celery's habit) or before it
    after = runner.invoke(main, ["send", "t", "--spool", str(tmp_path / "after")])
    before = runner.invoke(main, ["--spool", str(tmp_path / "before"), "send", "t"])
    via_file = runner.invoke(main, ["send", "t", "--config", str(tmp_path / "other.ini")])
    # Then each lands in its own spool
    assert after.exit_code == before.exit_code == via_file.exit_code == 0, (after.output, via_file.output)
    assert len(files_in(tmp_path / "after" / NEW)) == 1
    assert len(files_in(tmp_path / "before" / NEW)) == 1
    assert len(files_in(tmp_path / "from-file" / NEW)) == 1


# -- footguns a newcomer hit (issue 10, item 10) ---------------------------------------------------------


def spoolq_script() -> str:
    """The installed ``spoolq`` console script: unlike ``python -m spoolq``, it does not put the
    working directory on sys.path by itself."""
    script = Path(sys.executable).with_name("spoolq")
    assert script.is_file(), f"no console script beside {sys.executable}"
    return str(script)


def run_script(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [spoolq_script(), *args], cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_tasks_and_worker_find_a_module_in_the_current_directory_alike(tmp_path: Path) -> None:
    # Given a task module in the folder the commands run from, and a job of its task
    (tmp_path / "newcomer_tasks.py").write_text(
        "import spoolq\n\n@spoolq.task(name='newcomer.hello')\ndef hello(path):\n    open(path, 'a').write('ran\\n')\n"
    )
    spool = str(tmp_path / "spool")
    assert run_script("--spool", spool, "init", cwd=tmp_path).returncode == 0
    assert (
        run_script(
            "--spool", spool, "send", "newcomer.hello", json.dumps([str(tmp_path / "ran")]), cwd=tmp_path
        ).returncode
        == 0
    )
    # When `spoolq tasks -I` and `spoolq worker -I` run from there
    listed = run_script("--spool", spool, "tasks", "-I", "newcomer_tasks", cwd=tmp_path)
    worked = run_script("--spool", spool, "worker", "--burst", "-c", "1", "-I", "newcomer_tasks", cwd=tmp_path)
    # Then both find it
    assert listed.returncode == 0 and "newcomer.hello" in listed.stdout, listed.stderr
    assert worked.returncode == 0, worked.stderr
    assert (tmp_path / "ran").read_text() == "ran\n"


def test_tasks_in_process_searches_the_current_directory(cli, tmp_path: Path) -> None:
    (tmp_path / "inproc_tasks.py").write_text("import spoolq\n\n@spoolq.task(name='inproc.t')\ndef t():\n    pass\n")
    result = cli("tasks", "-I", "inproc_tasks", "--json")
    assert result.exit_code == 0, result.output
    assert {"name": "inproc.t", "origin": "include inproc_tasks"} in json.loads(result.stdout)["tasks"]


@pytest.mark.slow
def test_worker_refuses_to_start_when_an_include_does_not_import(tmp_path: Path) -> None:
    # Given a queued job and a typo in -I
    spool = tmp_path / "spool"
    spoolq.App(spool).send_task("tests.echo", ["hi"], task_id="waiting")
    # When the worker starts
    proc = run_spoolq("--spool", str(spool), "worker", "--burst", "-I", "tasks", "-I", "taks", cwd=tmp_path)
    # Then it refuses in one line naming the module and the error, before its banner, exit 1,
    # and the job was not touched (not failed as TaskNotFound)
    assert proc.returncode == EXIT_JOB, proc.stdout + proc.stderr
    assert proc.stderr == "Error: cannot load include taks: ModuleNotFoundError: No module named 'taks'\n"
    assert proc.stdout == ""
    assert files_in(spool / NEW) == ["waiting.json"] and files_in(spool / FAILED) == []


@pytest.mark.slow
def test_worker_refuses_to_start_when_an_entry_point_is_broken(tmp_path: Path) -> None:
    from test_registry import make_extension

    # Given an installed extension with a broken spoolq.tasks entry point
    site = tmp_path / "site"
    make_extension(site)
    env = subprocess_env()
    env["PYTHONPATH"] = f"{site}{os.pathsep}{env['PYTHONPATH']}"
    # When the worker starts
    proc = run_spoolq("--spool", str(tmp_path / "spool"), "worker", "--burst", cwd=tmp_path, env=env)
    # Then it refuses, naming the entry point and the error, and creates nothing
    assert proc.returncode == EXIT_JOB and proc.stdout == ""
    assert not (tmp_path / "spool").exists()
    assert proc.stderr == (
        "Error: cannot load entry point broken (ckanext_demo.missing:task_imports): "
        "ModuleNotFoundError: No module named 'ckanext_demo.missing'\n"
    )


@pytest.mark.slow
def test_a_second_worker_refuses_before_printing_its_banner(tmp_path: Path) -> None:
    from worker_helpers import Worker

    spool = tmp_path / "spool"
    first = Worker(spool, "-c", "1").wait_ready()
    try:
        second = run_spoolq("--spool", str(spool), "worker", "-I", "tasks", cwd=tmp_path)
    finally:
        first.stop()
    assert second.returncode == EXIT_SPOOL
    assert second.stdout == ""
    assert second.stderr == f"Error: spool {spool} is held by pid {first.pid} (another spoolq worker is running)\n"


@pytest.mark.slow
def test_worker_takes_celery_s_short_loglevel_in_any_case(tmp_path: Path) -> None:
    proc = run_spoolq(
        "--spool", str(tmp_path / "spool"), "worker", "--burst", "-I", "tasks", "-l", "warning", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "ready:" not in proc.stderr  # an INFO line, below the level asked for


def test_send_refuses_a_missing_spool_and_init_creates_one(cli, spool_dir: Path) -> None:
    # Given no spool (a typo in the path, say)
    # When a job is sent there, it is refused in one line that says how spools are made, and nothing is created
    assert_one_line_error(cli("send", "t", "[1]"), EXIT_SPOOL, f"no spool at {spool_dir} (a worker creates it")
    assert not spool_dir.exists()
    # And `spoolq init` creates it (again: it says so, and changes nothing)
    assert cli("init").stdout == f"created spool at {spool_dir}\n"
    assert cli("init").stdout == f"spool exists at {spool_dir}\n"
    assert cli("send", "t", "[1]", "--id", "x").exit_code == 0
    assert files_in(spool_dir / NEW) == ["x.json"]


def test_a_config_file_without_a_spoolq_section_is_one_line(cli, tmp_path: Path) -> None:
    (tmp_path / "spoolq.ini").write_text("[spool]\nspool = /srv/queue\n")
    result = cli("status", spool=False)
    assert_one_line_error(result, EXIT_USAGE, "no [spoolq] section in the config file: it has [spool]")


def test_send_takes_celery_s_options(cli, spool: Spool, spool_dir: Path) -> None:
    result = cli(
        "send",
        "t",
        "-a",
        '[1, "two"]',
        "-k",
        '{"x": 3}',
        "--id",
        "c1",
        "--max-retries",
        "5",
        "--result-ttl",
        "60",
        "--expires",
        "2030-01-01T00:00:00Z",
    )
    assert result.exit_code == 0, result.output
    job = Job.from_json((spool_dir / NEW / "c1.json").read_bytes())
    assert (job.args, job.kwargs, job.max_retries, job.result_ttl) == ([1, "two"], {"x": 3}, 5, 60.0)
    assert job.expires == datetime(2030, 1, 1, tzinfo=timezone.utc)
    assert cli("send", "t", "--args", "[2]", "--kwargs", "{}", "--expires", "90", "--id", "c2").exit_code == 0
    job = Job.from_json((spool_dir / NEW / "c2.json").read_bytes())
    assert job.args == [2] and job.expires is not None and 89 < (job.expires - job.enqueued_at).total_seconds() <= 90


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["[1]", "--args", "[2]"], "give the arguments once: ARGS_JSON or --args, not both"),
        (["-a", "{}"], "--args must be a JSON array"),
        (["--max-retries", "-1"], "-1 is not in the range x>=0"),
        (["--result-ttl", "-5"], "result_ttl must be a non-negative number"),
        (["--expires", "soon"], "--expires is not a time"),
        (["--expires", "-3"], "expires must be a non-negative number"),
    ],
)
def test_send_refuses_bad_celery_style_options(
    cli, spool: Spool, spool_dir: Path, args: list[str], fragment: str
) -> None:
    result = cli("send", "t", *args)
    assert result.exit_code == EXIT_USAGE and fragment in result.stderr, result.output
    assert files_in(spool_dir / NEW) == []


def test_a_naive_eta_is_utc_from_the_cli_as_from_the_api(cli, spool: Spool, spool_dir: Path) -> None:
    assert cli("send", "t", "--eta", "2030-01-01T08:00:00", "--id", "cli").exit_code == 0
    spoolq.App(spool_dir).send_task("t", eta=datetime(2030, 1, 1, 8, 0), task_id="api")
    etas = {j: json.loads((spool_dir / NEW / f"{j}.json").read_bytes())["eta"] for j in ("cli", "api")}
    assert etas == {"cli": "2030-01-01T08:00:00.000000Z", "api": "2030-01-01T08:00:00.000000Z"}


def test_ls_delayed_shows_when_each_job_is_due(cli, spool: Spool, spool_dir: Path) -> None:
    due = datetime(2030, 1, 1, 8, 0, tzinfo=timezone.utc)
    job = Job(id="later", task="t", eta=due, retries=1)
    spool.write("delayed", "20300101T080000.000000Z-later.json", job)
    spoolq.App(spool_dir).send_task("t", task_id="now")
    rows = {r["id"]: r for r in json.loads(cli("ls", "all", "--json").stdout)}
    assert rows["later"]["due"] == "2030-01-01T08:00:00.000000Z" and rows["now"]["due"] is None
    table = cli("ls", "delayed").stdout.splitlines()
    assert table[0].split() == ["ID", "TASK", "STATE", "AGE", "DUE", "RETRIES", "LAST", "ERROR"]
    assert "2030-01-01 08:00:00Z (in " in table[1]


def rejected(spool: Spool, spool_dir: Path, name: str, reason: str) -> str:
    """Reject a file named ``name`` from new/ and return the name `spoolq ls failed` prints for it."""
    (spool_dir / NEW / name).write_text("not a job")
    spool.reject(NEW, name, reason, T0)
    listed = CliRunner().invoke(main, ["--spool", str(spool_dir), "ls", "failed", "--json"])
    return next(r["id"] for r in json.loads(listed.stdout) if r.get("rejected"))


@pytest.mark.parametrize("name", ["junk.json", "we ird $(x) ü..json", "a..b"])
def test_show_delete_and_retry_take_the_name_ls_prints_for_a_rejected_file(
    cli, spool: Spool, spool_dir: Path, name: str
) -> None:
    # Given a rejected file, as `spoolq ls failed` names it
    bad = rejected(spool, spool_dir, name, "not valid JSON: Expecting value")
    # Then show prints its raw name and why it was rejected
    shown = cli("show", bad)
    assert shown.exit_code == 0, shown.output
    out = json.loads(shown.stdout)
    assert out["name"] == bad and out["reason"] == "not valid JSON: Expecting value" and out["rejected"] is True
    assert out["state"] == "failed" and out["kind"] == "file"
    # And retry refuses in one line, saying what to do instead
    assert_one_line_error(cli("retry", bad), EXIT_USAGE, f"{bad} is a rejected file, not a job; it cannot be retried")
    assert "spoolq delete" in cli("retry", bad).stderr
    # And delete removes it and its reason
    assert cli("delete", bad).stdout == f"deleted {bad} from failed/\n"
    assert files_in(spool_dir / FAILED) == []


@pytest.mark.parametrize("text", ["../new/x.json", "../../etc/passwd.bad", "/etc/passwd.bad", "..bad"])
def test_a_name_never_reaches_outside_failed(cli, spool: Spool, spool_dir: Path, tmp_path: Path, text: str) -> None:
    (spool_dir / NEW / "x.json").write_text("{}")
    (tmp_path / "outside.bad").write_text("keep me")
    for command in ("show", "delete", "retry"):
        result = cli(command, text)
        assert result.exit_code in (EXIT_JOB, EXIT_USAGE), result.output
    assert (spool_dir / NEW / "x.json").exists() and (tmp_path / "outside.bad").exists()
