"""A pool child claims its job from ready/ itself and removes a plain success itself.

``runner.handle`` is what a child does with each message; here it runs in the test process
on a real spool, with the real task registry.
"""

from __future__ import annotations

from pathlib import Path

from conftest import files_in
from worker_tasks import lines

from spoolq.job import Job
from spoolq.layout import ACTIVE, READY, is_discarded, job_name
from spoolq.protocol import JobMessage, Kind
from spoolq.registry import discover
from spoolq.runner import handle
from spoolq.spool import Spool


def _message(job: Job, name: str, *, discard: bool) -> JobMessage:
    return JobMessage(job.id, job.task, job.args, job.kwargs, claim=name, discard=discard)


def _ready(spool: Spool, job: Job) -> str:
    name = job_name(READY, job)
    spool.write(READY, name, job)
    return name


def test_a_claimed_success_is_run_once_and_taken_out_of_active(tmp_path: Path, spool: Spool) -> None:
    registry = discover(["worker_tasks"], use_entry_points=False)
    ran = str(tmp_path / "ran")
    job = Job(id="a", task="wt.record", args=[ran, "a"])
    name = _ready(spool, job)
    # When a child handles it with discard on
    answer = handle(registry, spool, _message(job, name, discard=True))
    spool.close()  # waits for the background unlink
    # Then it ran once, left ready/ and active/, and the answer says it is gone already
    assert answer.kind is Kind.SUCCESS and answer.discarded is True
    assert [line.split()[0] for line in lines(ran)] == ["a"]
    assert files_in(spool.dir(READY)) == [] and files_in(spool.dir(ACTIVE)) == []
    assert [n for n in files_in(spool.dir("tmp")) if is_discarded(n)] == []


def test_without_discard_the_success_stays_in_active_for_the_supervisor(tmp_path: Path, spool: Spool) -> None:
    registry = discover(["worker_tasks"], use_entry_points=False)
    job = Job(id="keep", task="wt.record", args=[str(tmp_path / "ran"), "keep"])
    answer = handle(registry, spool, _message(job, _ready(spool, job), discard=False))
    assert answer.kind is Kind.SUCCESS and not answer.discarded
    assert files_in(spool.dir(ACTIVE)) == ["keep.json"]


def test_a_job_gone_from_ready_is_not_run(tmp_path: Path, spool: Spool) -> None:
    # Given a job handed to a child and then deleted by an operator before the child got to it
    registry = discover(["worker_tasks"], use_entry_points=False)
    ran = str(tmp_path / "ran")
    job = Job(id="gone", task="wt.record", args=[ran, "gone"])
    name = _ready(spool, job)
    (spool.dir(READY) / name).unlink()
    answer = handle(registry, spool, _message(job, name, discard=True))
    assert answer.kind is Kind.GONE and "was gone" in answer.message
    assert lines(ran) == []


def test_an_id_already_active_is_not_claimed_twice(tmp_path: Path, spool: Spool) -> None:
    registry = discover(["worker_tasks"], use_entry_points=False)
    ran = str(tmp_path / "ran")
    job = Job(id="twice", task="wt.record", args=[ran, "twice"])
    spool.write(ACTIVE, "twice.json", job)
    name = _ready(spool, job)
    answer = handle(registry, spool, _message(job, name, discard=True))
    assert answer.kind is Kind.CLASH
    assert lines(ran) == [] and name in files_in(spool.dir(READY))


def test_a_held_answer_goes_out_within_milliseconds_even_while_the_next_job_runs() -> None:
    # The supervisor times a hard limit from the answer before: an answer held back behind a
    # long job would make the finished job look like it ran too long.
    import multiprocessing
    import time

    from spoolq.runner import ANSWER_HOLD_S, _Answers

    parent, child = multiprocessing.Pipe(duplex=True)
    answers = _Answers(child)
    parent.send_bytes(b"another job waiting")  # so the child would hold its answer
    assert answers.waiting_jobs()
    answers.add(b'{"kind": "success"}')
    assert not answers.due()  # held: the main loop does not send it
    t0 = time.monotonic()
    assert parent.poll(5.0), "the held answer was never sent"
    assert parent.recv_bytes() == b'{"kind": "success"}'
    assert time.monotonic() - t0 < 50 * ANSWER_HOLD_S + 0.5  # generous: catches a hold for ever
