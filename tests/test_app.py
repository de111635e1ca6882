"""The producer's side: send_task, delay, apply_async, bulk enqueue, and refusals that write nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import files_in, subprocess_env
from worker_helpers import burst

import spoolq
import spoolq.app
from spoolq.errors import (
    DuplicateJob,
    InvalidJobId,
    JobFormatError,
    JobNotFound,
    JobTooLarge,
    ResultTimeout,
    TaskFailed,
)
from spoolq.job import Job, make_error
from spoolq.layout import DONE, FAILED, NEW

T0 = datetime(2026, 11, 25, 3, 15, tzinfo=timezone.utc)


def new_jobs(app: spoolq.App) -> list[dict]:
    return [json.loads((app.spool.dir(NEW) / n).read_bytes()) for n in files_in(app.spool.dir(NEW))]


def assert_nothing_written(app: spoolq.App) -> None:
    assert files_in(app.spool.dir(NEW)) == [] and files_in(app.spool.dir("tmp")) == []


def test_send_task_by_name_writes_the_documented_file(spool_dir: Path) -> None:
    # Given an App with a fixed clock, When a task is sent by name only
    app = spoolq.App(spool_dir, clock=lambda: T0)
    handle = app.send_task("NAME.echofunction", args=["Hello World"], task_id="hello")
    # Then new/hello.json is the SPEC §2 record
    assert handle.id == "hello" and handle.state == "PENDING"
    assert new_jobs(app) == [
        {
            "v": 1,
            "id": "hello",
            "task": "NAME.echofunction",
            "args": ["Hello World"],
            "kwargs": {},
            "enqueued_at": "2026-11-25T03:15:00.000000Z",
            "eta": None,
            "retries": 0,
            "max_retries": None,
            "errors": [],
        }
    ]


def test_delay_and_apply_async_on_a_bound_task(spool_dir: Path) -> None:
    app = spoolq.App(spool_dir, clock=lambda: T0)

    @app.task(name="NAME.echofunction", max_retries=10, retry_delay=180)
    def echo(message):
        return message

    assert echo("direct") == "direct"  # a direct call runs now
    assert files_in(app.spool.dir(NEW)) == []
    echo.delay("Hello World")
    echo.apply_async(args=["hi"], countdown=60, task_id="later", priority=5)
    by_id = {j["id"]: j for j in new_jobs(app)}
    assert by_id["later"]["eta"] == "2026-11-25T03:16:00.000000Z" and by_id["later"]["priority"] == 5
    assert sorted(j["args"][0] for j in by_id.values()) == ["Hello World", "hi"]


def test_a_shared_task_enqueues_through_the_current_app(spool_dir: Path) -> None:
    import tasks  # declared with the module-level @spoolq.task

    app = spoolq.App(spool_dir)
    with app:  # the current app is explicit: creating an App changes nothing global
        tasks.echo.delay("via current app")
    assert [j["task"] for j in new_jobs(app)] == ["tests.echo"]


def test_creating_an_app_does_not_make_it_current(tmp_path: Path) -> None:
    # Given a process configured for one spool that creates an App on another
    code = "import sys, spoolq, tasks; spoolq.App(sys.argv[1]); tasks.echo.delay('where?')"
    env = subprocess_env(SPOOLQ_SPOOL=str(tmp_path / "configured"))
    # When it enqueues through a task declared with the module-level @spoolq.task
    argv = [sys.executable, "-c", code, str(tmp_path / "created")]
    proc = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    # Then the job goes to the configured spool: the last App created is not silently current
    assert proc.returncode == 0, proc.stderr
    assert len(files_in(tmp_path / "configured" / NEW)) == 1
    assert files_in(tmp_path / "created" / NEW) == []


def test_an_entered_app_wins_over_the_default_in_its_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks

    monkeypatch.setattr(spoolq.app, "_default", None)  # the process default is restored after the test
    # Given a default App, then another App created after it
    a = spoolq.App(tmp_path / "a").set_default()
    b = spoolq.App(tmp_path / "b")
    other_thread: list[spoolq.App] = []
    # When shared tasks are sent outside any block, inside `with b:`, and inside a nested block
    tasks.echo.delay("a1")
    with b:
        tasks.echo.delay("b1")
        seer = threading.Thread(target=lambda: other_thread.append(spoolq.current_app()))
        seer.start()
        seer.join()
        with spoolq.App(tmp_path / "c") as c:
            tasks.echo.delay("c1")
        tasks.echo.delay("b2")
    tasks.echo.delay("a2")
    # Then each went to the innermost entered App, else the default; another thread saw the default
    assert sorted(j["args"][0] for j in new_jobs(a)) == ["a1", "a2"]
    assert sorted(j["args"][0] for j in new_jobs(b)) == ["b1", "b2"]
    assert [j["args"][0] for j in new_jobs(c)] == ["c1"]
    assert other_thread == [a]


def test_a_batch_takes_in_shared_tasks_sent_inside_it(app: spoolq.App) -> None:
    import tasks

    with app.batch():
        tasks.echo.delay("one")
        tasks.add.delay(1, 2)
        assert files_in(app.spool.dir(NEW)) == []  # not yet
    assert sorted(j["task"] for j in new_jobs(app)) == ["tests.add", "tests.echo"]


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        ({"args": [1, object()]}, JobFormatError, "argument 2 (args[1]) is not JSON-serializable"),
        ({"kwargs": {"when": datetime(2026, 1, 1)}}, JobFormatError, "keyword argument 'when'"),
        ({"args": "abc"}, JobFormatError, "args must be a list"),
        ({"task_id": "a/b"}, InvalidJobId, "path separator"),
        ({"task_id": ".."}, InvalidJobId, "'..'"),
        ({"task_id": "bell\x07"}, InvalidJobId, "control character"),
        ({"task_id": ""}, InvalidJobId, "empty"),
        ({"task_id": "x" * 129}, InvalidJobId, "longer than 128"),
        ({"countdown": -1}, JobFormatError, "countdown"),
        ({"countdown": float("inf")}, JobFormatError, "countdown"),
        ({"countdown": 1e300}, JobFormatError, "countdown"),
        ({"priority": 10}, JobFormatError, "priority"),
        ({"countdown": 1, "eta": T0}, JobFormatError, "not both"),
        ({"args": ["x" * (1024 * 1024)]}, JobTooLarge, "over the limit of 1048576 bytes"),
    ],
)
def test_bad_input_raises_at_once_and_writes_nothing(app: spoolq.App, kwargs: dict, error: type, fragment: str) -> None:
    with pytest.raises(error) as info:
        app.send_task("t", **kwargs)
    assert fragment in str(info.value)
    assert_nothing_written(app)


def test_configured_size_limit(spool_dir: Path) -> None:
    app = spoolq.App(spool_dir, max_job_size=500)
    app.send_task("t", ["x" * 100])
    with pytest.raises(JobTooLarge, match="over the limit of 500 bytes"):
        app.send_task("t", ["x" * 600])
    assert len(files_in(app.spool.dir(NEW))) == 1


def test_duplicate_id_is_refused_and_the_first_kept(app: spoolq.App) -> None:
    app.send_task("t", [1], task_id="once")
    with pytest.raises(DuplicateJob, match="'once' is already queued"):
        app.send_task("t", [2], task_id="once")
    assert [j["args"] for j in new_jobs(app)] == [[1]]


def test_send_many_checks_every_job_before_writing_any(app: spoolq.App) -> None:
    with pytest.raises(JobFormatError, match="argument 1"):
        app.send_many([("t", [1], None), ("t", [object()], None)])
    assert_nothing_written(app)
    handles = app.send_many([("t", [i], {}) for i in range(5)] + [{"name": "u", "args": [9], "task_id": "d"}])
    assert len(handles) == 6 and handles[-1].id == "d"
    assert len(files_in(app.spool.dir(NEW))) == 6
    with pytest.raises(JobFormatError, match="needs a 'name'"):
        app.send_many([{"args": [1]}])
    assert len(files_in(app.spool.dir(NEW))) == 6


def test_a_delivered_job_has_one_name_and_leaves_nothing_in_tmp(app: spoolq.App) -> None:
    # SPEC §1: renamed into place, not linked, so no second name is ever left behind.
    app.send_task("t", [1], task_id="one")
    app.send_many([("t", [i], None) for i in range(3)])
    assert files_in(app.spool.dir("tmp")) == []
    assert {(app.spool.dir(NEW) / n).stat().st_nlink for n in files_in(app.spool.dir(NEW))} == {1}


def test_batch_publishes_on_exit_and_nothing_on_error(app: spoolq.App) -> None:
    with pytest.raises(RuntimeError), app.batch():
        app.send_task("t", [1])
        raise RuntimeError("abandon")
    assert_nothing_written(app)
    with app.batch():
        app.send_task("t", [1])
        app.send_task("t", [2])
        assert files_in(app.spool.dir(NEW)) == []  # not yet
    assert len(files_in(app.spool.dir(NEW))) == 2


def test_async_result_reads_a_kept_result_a_failure_or_times_out(app: spoolq.App) -> None:
    # Given one job with a result in done/, one in failed/, and one still queued
    app.spool.ensure()
    ok = Job(id="ok", task="t").succeeded({"sum": 3}, T0, 60)
    app.spool.write(DONE, "ok.json", ok)
    err = make_error("ValueError", "boom", "tb", attempt=0, at=T0)
    app.spool.write(FAILED, "20261125T031500.000000Z-bad.json", Job(id="bad", task="t", errors=(err,)))
    app.send_task("t", task_id="waiting")
    # Then get() returns the result, raises the failure with its error, or times out
    assert app.result("ok").get(timeout=0) == {"sum": 3} and app.result("ok").state == "SUCCESS"
    with pytest.raises(TaskFailed, match="ValueError: boom") as info:
        app.result("bad").get(timeout=0)
    assert info.value.error["message"] == "boom"
    with pytest.raises(ResultTimeout):
        app.result("waiting").get(timeout=0.05)
    assert app.result("nope").state == "UNKNOWN"


def test_eta_naive_is_utc_and_countdown_is_relative_to_the_clock(spool_dir: Path) -> None:
    app = spoolq.App(spool_dir, clock=lambda: T0)
    app.send_task("t", eta=datetime(2026, 12, 1, 8, 0), task_id="naive")
    app.send_task("t", countdown=90, task_id="cd")
    by_id = {j["id"]: j for j in new_jobs(app)}
    assert by_id["naive"]["eta"] == "2026-12-01T08:00:00.000000Z"
    assert by_id["cd"]["eta"] == (T0 + timedelta(seconds=90)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.mark.slow
def test_get_answers_at_once_for_a_job_that_finished_keeping_no_result(spool_dir: Path) -> None:
    # Given a job of a task that keeps no result, run to the end by a real worker
    app = spoolq.App(spool_dir)
    handle = app.send_task("wt.noop", task_id="plain")
    assert burst(spool_dir)[0] == 0
    # When its result is asked for with a long timeout, and that of an id never sent
    started = time.monotonic()
    with pytest.raises(JobNotFound, match="'plain'"):
        handle.get(timeout=20)
    with pytest.raises(JobNotFound, match="'never-sent'"):
        app.result("never-sent").get(timeout=20)
    # Then both answer as soon as the job is seen in no state, not after the timeout
    assert time.monotonic() - started < 10
