"""The spool on disk: atomic delivery, refusals that write nothing, permissions, real processes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest
from conftest import files_in, subprocess_env

from spoolq.errors import DuplicateJob, JobFormatError, JobTooLarge, SpoolError
from spoolq.job import Job
from spoolq.layout import BAD_SUFFIX, FAILED, NEW, REASON_SUFFIX, STATES, TMP
from spoolq.spool import Spool

NOW = datetime(2026, 11, 25, 3, 15, tzinfo=timezone.utc)


def run_python(code: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a snippet in a fresh interpreter (a real producer process)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# -- layout and delivery ---------------------------------------------------------------------


def test_publish_delivers_one_complete_file_into_new(spool: Spool) -> None:
    # Given a job, When it is published
    job = Job(id="j1", task="t", args=[1, "two"], enqueued_at=NOW)
    name = spool.publish(job)
    # Then new/ holds exactly its bytes under <id>.json and tmp/ is empty again
    assert name == "j1.json"
    assert spool.path_of(NEW, name).read_bytes() == job.to_json()
    assert files_in(spool.dir(NEW)) == ["j1.json"] and files_in(spool.dir(TMP)) == []


def test_layout_and_permissions(spool_dir: Path) -> None:
    # Given no spool, When one is created and a job published
    s = Spool(spool_dir)
    path = s.path_of(NEW, s.publish(Job(id="p", task="t")))
    # Then every directory is 0700 and the job file 0600
    for d in [spool_dir, *(spool_dir / name for name in (TMP, *STATES))]:
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("which", ["", NEW])
def test_spool_writable_by_others_is_refused(spool_dir: Path, which: str) -> None:
    # Given a spool (or one of its states) that anyone may write into
    Spool(spool_dir)
    (spool_dir / which).chmod(0o777)
    # When it is opened for writing, Then it is refused with the fix in the message, and nothing is written
    with pytest.raises(SpoolError, match=r"writable by group or others \(mode 0777\); run: chmod go-w"):
        Spool(spool_dir).publish(Job(id="x", task="t"))
    assert files_in(spool_dir / NEW) == []


def test_read_only_spool_is_not_created(spool_dir: Path) -> None:
    s = Spool(spool_dir, create=False)
    assert not s.exists() and not spool_dir.exists()
    assert s.lock().is_held() is False and not spool_dir.exists()


def test_lock_probe_does_not_create_the_lock_file(spool: Spool) -> None:
    assert spool.lock().is_held() is False
    assert not (spool.path / "spoolq.lock").exists()


def test_lock_held_by_another_process_is_seen_with_its_pid(spool: Spool) -> None:
    # Given a real process holding the supervisor lock
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from spoolq.spool import Spool; "
            "l = Spool(sys.argv[1]).lock(); l.acquire(); print('held', flush=True); time.sleep(30)",
            str(spool.path),
        ],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        # Then others see it held, by that pid, and cannot take it
        lock = spool.lock()
        assert lock.is_held() is True and lock.holder() == holder.pid
        with pytest.raises(SpoolError, match=f"held by pid {holder.pid}"):
            lock.acquire()
    finally:
        holder.kill()
        holder.communicate()  # reaps it and closes the pipe
    assert spool.lock().is_held() is False  # a dead holder's flock is gone


# -- refusals write nothing ---------------------------------------------------------------------


def test_duplicate_id_in_new_is_refused(spool: Spool) -> None:
    spool.publish(Job(id="same", task="t", args=[1]))
    with pytest.raises(DuplicateJob, match="'same' is already queued"):
        spool.publish(Job(id="same", task="t", args=[2]))
    assert json.loads((spool.dir(NEW) / "same.json").read_bytes())["args"] == [1]  # the first is untouched
    assert files_in(spool.dir(TMP)) == []


def test_duplicate_id_in_active_is_refused(spool: Spool) -> None:
    (spool.dir("active") / "running.json").write_bytes(Job(id="running", task="t").to_json())
    with pytest.raises(DuplicateJob, match="active"):
        spool.publish(Job(id="running", task="t"))
    assert files_in(spool.dir(NEW)) == []


@pytest.mark.parametrize("limit, size", [(None, 1024 * 1024 + 1), (1000, 2000)])
def test_job_over_the_size_limit_is_refused(spool_dir: Path, limit: int | None, size: int) -> None:
    # Given the default 1 MiB limit, or a configured one
    s = Spool(spool_dir) if limit is None else Spool(spool_dir, max_job_size=limit)
    # When a job bigger than it is published, Then it is refused naming both sizes, and nothing is written
    with pytest.raises(JobTooLarge, match=f"over the limit of {limit or 1024 * 1024} bytes"):
        s.publish(Job(id="big", task="t", args=["x" * size]))
    assert files_in(spool_dir / NEW) == [] and files_in(spool_dir / TMP) == []


def test_failing_write_raises_spool_error_and_leaves_nothing(spool: Spool) -> None:
    # Given a producer process whose file-size limit is smaller than its job
    proc = run_python(
        """
        import resource, sys
        from spoolq import App, SpoolError
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        try:
            App(sys.argv[1]).send_task("t", ["x" * 100_000], task_id="big")
        except SpoolError as exc:
            print("SpoolError:", exc)
        App(sys.argv[1]).send_task("t", ["small"], task_id="small")  # the spool still works
        """,
        str(spool.path),
    )
    # Then it got a SpoolError (not a crash, not SIGXFSZ), and only the small job landed
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("SpoolError: cannot write to spool") and "File too large" in proc.stdout
    assert files_in(spool.dir(NEW)) == ["small.json"] and files_in(spool.dir(TMP)) == []


# -- real processes at once -------------------------------------------------------------------------


PRODUCER = """
import sys
from spoolq import App
app = App(sys.argv[1])
who, n = sys.argv[2], int(sys.argv[3])
for i in range(n):
    app.send_task("tests.echo", [who, i, "x" * (i % 500)], task_id=f"{who}-{i}")
"""


def _watch(new_dir: Path, stop: threading.Event, seen: dict[str, int], problems: list[str]) -> None:
    """List new/ over and over and parse every file found: none may ever be partial."""
    while not stop.is_set():
        for name in os.listdir(new_dir):
            try:
                data = (new_dir / name).read_bytes()
            except FileNotFoundError:
                continue
            try:
                job = Job.from_json(data)
                assert name == f"{job.id}.json"
            except (JobFormatError, AssertionError) as exc:
                problems.append(f"{name}: {exc!r}")
            seen[name] = seen.get(name, 0) + 1


@pytest.mark.slow
def test_concurrent_producers_deliver_every_job_and_a_watcher_never_sees_half_a_file(spool: Spool) -> None:
    # Given 4 producer processes of 600 jobs each and a watcher reading new/ all the while
    producers, per = 4, 600
    stop, seen, problems = threading.Event(), {}, []
    watcher = threading.Thread(target=_watch, args=(spool.dir(NEW), stop, seen, problems))
    watcher.start()
    try:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", PRODUCER, str(spool.path), f"p{k}", str(per)],
                env=subprocess_env(),
                stderr=subprocess.PIPE,
                text=True,
            )
            for k in range(producers)
        ]
        for p in procs:
            _, err = p.communicate(timeout=50)
            assert p.returncode == 0, err
    finally:
        stop.set()
        watcher.join()
    # Then new/ holds exactly every job, each valid, and the watcher saw no partial file
    names = files_in(spool.dir(NEW))
    assert names == sorted(f"p{k}-{i}.json" for k in range(producers) for i in range(per))
    assert all(Job.from_json((spool.dir(NEW) / n).read_bytes()).task == "tests.echo" for n in names)
    assert problems == []
    assert len(seen) > per  # the watcher really was reading while they wrote
    assert files_in(spool.dir(TMP)) == []


RACER = """
import sys
from spoolq import App, DuplicateJob
app = App(sys.argv[1])
sys.stdin.readline()  # start together
for i in range(int(sys.argv[3])):
    try:
        app.send_task("t", [sys.argv[2]], task_id=f"race-{i}")
        print(f"won race-{i}")
    except DuplicateJob:
        print(f"lost race-{i}")
"""


@pytest.mark.slow
def test_two_processes_racing_on_one_id_exactly_one_wins(spool: Spool) -> None:
    # Given two producer processes enqueueing the same 150 ids at the same moment
    n = 150
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(spool.path), who, str(n)],
            env=subprocess_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for who in ("a", "b")
    ]
    outs = [p.communicate("go\n", timeout=50) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    # Then every id was won exactly once and lost exactly once, and new/ holds one file per id
    lines = [line for out, _ in outs for line in out.split()]
    for i in range(n):
        assert (f"race-{i}" in lines) and lines.count(f"race-{i}") == 2
    results = [out.splitlines() for out, _ in outs]
    won = [line.split()[1] for r in results for line in r if line.startswith("won")]
    assert sorted(won) == sorted(f"race-{i}" for i in range(n))
    assert len(files_in(spool.dir(NEW))) == n and files_in(spool.dir(TMP)) == []


# -- reading and rejecting ----------------------------------------------------------------------------


def test_read_refuses_symlinks_fifos_and_hard_links(spool: Spool, tmp_path: Path) -> None:
    outside = tmp_path / "secret.json"
    outside.write_bytes(Job(id="s", task="t").to_json())
    (spool.dir(NEW) / "link.json").symlink_to(outside)
    os.mkfifo(spool.dir(NEW) / "fifo.json")
    os.link(outside, spool.dir(NEW) / "hard.json")
    for name, reason in (("link.json", "symlink"), ("fifo.json", "FIFO"), ("hard.json", "hard link")):
        with pytest.raises(JobFormatError, match=reason):
            spool.read(NEW, name)


def test_reject_moves_garbage_to_failed_with_its_reason(spool: Spool) -> None:
    # Given garbage delivered into new/
    garbage = spool.dir(NEW) / "junk.json"
    garbage.write_bytes(b"not json")
    # When it is rejected
    moved = spool.path_of(FAILED, spool.reject(NEW, garbage.name, "not valid JSON", NOW))
    # Then it sits untouched in failed/ as .bad, with the reason beside it, and is no job's entry
    assert moved.name.endswith(BAD_SUFFIX) and moved.read_bytes() == b"not json"
    assert moved.with_name(moved.name + REASON_SUFFIX).read_text() == "not valid JSON\n"
    assert files_in(spool.dir(NEW)) == []
    assert [e.job_id for e in spool.entries(FAILED)] == [None, None]


def test_find_locates_a_job_in_any_state(spool: Spool) -> None:
    job = Job(id="f1", task="t")
    spool.write(FAILED, f"20261125T031500.000000Z-{job.id}.json", job)
    entry = spool.find("f1")
    assert entry.state == FAILED and spool.read(entry.state, entry.name) == job


def test_readahead_only_looks_and_never_blocks_or_follows(tmp_path: Path) -> None:
    # Given what a hostile new/ may hold: a job, a FIFO, a symlink out of the spool, a huge file
    import time

    from spoolq.intake import Readahead

    outside = tmp_path / "outside"
    outside.write_bytes(b"secret")
    new = tmp_path / "new"
    new.mkdir()
    (new / "job.json").write_bytes(b'{"v": 1}')
    os.mkfifo(new / "fifo.json")
    (new / "link.json").symlink_to(outside)
    (new / "big.json").write_bytes(b"x" * 4096)
    before = {p.name: (p.lstat().st_mtime_ns, p.lstat().st_size) for p in [*new.iterdir(), outside]}
    # When the readahead threads go through them
    ra = Readahead(max_size=1024, threads=2)
    ra.put((str(p), None) for p in new.iterdir())
    t0 = time.monotonic()
    ra.close()
    # Then they finished at once (no FIFO open blocked them) and changed nothing
    assert time.monotonic() - t0 < 5
    assert {p.name: (p.lstat().st_mtime_ns, p.lstat().st_size) for p in [*new.iterdir(), outside]} == before
    assert outside.read_bytes() == b"secret"
