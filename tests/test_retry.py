"""The retry policy as a pure function: :func:`spoolq.retry.decide` and :func:`compute_backoff`.

No spool, no process, no clock: a job, an answer, a task's policy, ``now`` and a seeded
random go in, a decision comes out.  Every branch of the policy is one test here.
"""

from __future__ import annotations

import dataclasses
import random
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spoolq.job import Job
from spoolq.protocol import Answer, Kind
from spoolq.retry import DIED_BACKOFF_BASE_S, Action, compute_backoff, decide
from spoolq.task import DEFAULT_MAX_RETRIES, DEFAULT_RETRY_DELAY, Task

UTC = timezone.utc
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
NOW = T0 + timedelta(minutes=5)


def _noop() -> None:
    """The function behind the tasks of these tests (never called)."""


def task(**policy: Any) -> Task:
    """A task with the given policy (``Task``'s keyword arguments)."""
    return Task(_noop, name="t.policy", **policy)


def job(**fields: Any) -> Job:
    """A job of ``t.policy`` enqueued at T0, with the given fields."""
    return Job(id="j1", task="t.policy", args=[1], kwargs={"k": "v"}, enqueued_at=T0, **fields)


def error(kind: Kind = Kind.ERROR, **fields: Any) -> Answer:
    """An answer of ``kind`` carrying a ValueError."""
    return Answer(kind, exc_type="ValueError", message="bad input", traceback="Traceback...", **fields)


def delay_s(decision_due: datetime | None) -> float:
    assert decision_due is not None
    return (decision_due - NOW).total_seconds()


# -- success --------------------------------------------------------------------------------


def test_a_success_without_a_result_ttl_deletes_the_job_unchanged():
    # Given a job and a task that keep no result
    j = job()
    # When it succeeds
    d = decide(j, Answer(Kind.SUCCESS, result=42, duration_s=0.25), task(), NOW, random.Random(0))
    # Then it is deleted, its record as it was
    assert d.action is Action.DELETE
    assert d.job == j
    assert d.due is None
    assert "succeeded in 0.250 s" in d.reason


def test_a_success_keeps_the_result_for_the_tasks_result_ttl():
    # Given a task that keeps results for 60 s
    d = decide(job(), Answer(Kind.SUCCESS, result={"sum": 3}), task(result_ttl=60), NOW, random.Random(0))
    # Then the record kept has the result, when it finished and when it expires
    assert d.action is Action.KEEP
    assert d.job.result == {"sum": 3}
    assert d.job.finished_at == NOW
    assert d.job.result_expires == NOW + timedelta(seconds=60)
    assert d.job.retries == 0 and d.job.errors == ()


def test_the_jobs_result_ttl_wins_over_the_tasks():
    # Given a job that asks for 5 s and a task that says 60 s
    d = decide(job(result_ttl=5), Answer(Kind.SUCCESS, result=1), task(result_ttl=60), NOW, random.Random(0))
    # Then the job's own ttl is used
    assert d.action is Action.KEEP
    assert d.job.result_expires == NOW + timedelta(seconds=5)


def test_a_jobs_result_ttl_of_zero_still_keeps_the_record():
    # Given a job with result_ttl 0 (keep, already expired: the next prune removes it)
    d = decide(job(result_ttl=0), Answer(Kind.SUCCESS, result=None), task(result_ttl=60), NOW, random.Random(0))
    # Then 0 is not mistaken for "no ttl"
    assert d.action is Action.KEEP
    assert d.job.result_expires == NOW


def test_a_success_of_an_unknown_task_keeps_the_jobs_result_ttl_or_nothing():
    # Given no task (this worker does not know it): only the job says what to keep
    assert decide(job(), Answer(Kind.SUCCESS), None, NOW, random.Random(0)).action is Action.DELETE
    kept = decide(job(result_ttl=7), Answer(Kind.SUCCESS, result="r"), None, NOW, random.Random(0))
    assert kept.action is Action.KEEP and kept.job.result == "r"


# -- errors ---------------------------------------------------------------------------------


def test_an_error_that_is_not_retryable_fails_at_once_with_the_error_recorded():
    # Given a job with retries left
    j = job(retries=0)
    # When the task raises an exception that is not in its autoretry_for
    d = decide(j, error(), task(max_retries=5), NOW, random.Random(0))
    # Then the job fails, the error appended, no retry charged
    assert d.action is Action.FAIL
    assert d.job.retries == 0
    assert [(e["type"], e["message"], e["attempt"]) for e in d.job.errors] == [("ValueError", "bad input", 0)]
    assert d.job.errors[0]["traceback"] == "Traceback..."
    assert d.job.errors[0]["at"] == "2030-01-01T12:05:00.000000Z"
    assert d.reason == "ValueError: bad input"


def test_an_autoretry_without_backoff_waits_the_tasks_retry_delay():
    # Given a task that retries ValueError automatically, every 42 s
    t = task(autoretry_for=(ValueError,), retry_delay=42)
    # When it raises one
    d = decide(job(), error(autoretry=True), t, NOW, random.Random(0))
    # Then the job waits 42 s, one retry charged
    assert d.action is Action.DELAY
    assert delay_s(d.due) == 42
    assert d.job.eta == d.due
    assert d.job.retries == 1
    assert "retry 1/3 in 42.000 s: bad input" == d.reason


@pytest.mark.parametrize(("retries", "expected"), [(0, 2.0), (1, 4.0), (2, 8.0), (5, 64.0), (6, 100.0), (40, 100.0)])
def test_an_autoretry_with_backoff_doubles_from_the_first_delay_up_to_the_cap(retries, expected):
    # Given exponential backoff from 2 s, capped at 100 s, without jitter
    t = task(autoretry_for=(ValueError,), retry_backoff=2, retry_backoff_max=100, retry_jitter=False, max_retries=None)
    # When the job (already retried ``retries`` times) raises again
    d = decide(job(retries=retries), error(autoretry=True), t, NOW, random.Random(0))
    # Then it waits 2 * 2**retries seconds, at most 100
    assert d.action is Action.DELAY
    assert delay_s(d.due) == expected


def test_retry_backoff_true_means_a_first_delay_of_one_second():
    t = task(autoretry_for=(ValueError,), retry_backoff=True, retry_jitter=False)
    assert delay_s(decide(job(retries=0), error(autoretry=True), t, NOW, random.Random(0)).due) == 1.0
    assert delay_s(decide(job(retries=2), error(autoretry=True), t, NOW, random.Random(0)).due) == 4.0


def test_an_autoretry_with_jitter_draws_the_delay_from_the_random_source():
    # Given backoff with full jitter and a seeded random source
    t = task(autoretry_for=(ValueError,), retry_backoff=2, retry_backoff_max=100, retry_jitter=True, max_retries=None)
    # When the job is decided twice with the same seed, and once with another
    first = decide(job(retries=3), error(autoretry=True), t, NOW, random.Random(7))
    again = decide(job(retries=3), error(autoretry=True), t, NOW, random.Random(7))
    other = decide(job(retries=3), error(autoretry=True), t, NOW, random.Random(8))
    # Then the delay is the draw the seed gives, within [0, 16], the same for the same seed
    expected = random.Random(7).uniform(0, 16.0)
    assert delay_s(first.due) == pytest.approx(expected, abs=1e-6)
    assert first.due == again.due
    assert first.due != other.due
    assert 0 <= delay_s(other.due) <= 16


def test_a_backoff_policy_does_not_apply_to_an_explicit_task_retry():
    # Given a task with backoff, whose code calls self.retry() without a countdown
    t = task(retry_backoff=2, retry_jitter=False, retry_delay=30, max_retries=None)
    d = decide(job(retries=4), error(Kind.RETRY), t, NOW, random.Random(0))
    # Then the retry waits the task's retry_delay, not the backoff (2 * 2**4 = 32)
    assert delay_s(d.due) == 30


# -- task.retry -----------------------------------------------------------------------------


def test_task_retry_with_a_countdown_waits_that_long():
    d = decide(job(), error(Kind.RETRY, countdown=2.5), task(retry_delay=180), NOW, random.Random(0))
    assert d.action is Action.DELAY
    assert delay_s(d.due) == 2.5
    assert d.job.retries == 1
    assert d.job.errors[-1]["type"] == "ValueError"


def test_task_retry_with_a_countdown_of_zero_is_due_now_not_after_the_default_delay():
    d = decide(job(), error(Kind.RETRY, countdown=0), task(retry_delay=180), NOW, random.Random(0))
    assert d.due == NOW


def test_task_retry_with_a_negative_countdown_is_due_now():
    d = decide(job(), error(Kind.RETRY, countdown=-5), task(), NOW, random.Random(0))
    assert d.due == NOW


def test_task_retry_without_countdown_or_eta_waits_the_retry_delay_or_the_default():
    assert delay_s(decide(job(), error(Kind.RETRY), task(retry_delay=9), NOW, random.Random(0)).due) == 9
    # An unknown task: the defaults apply (Celery's 180 s and 3 retries)
    d = decide(job(), error(Kind.RETRY), None, NOW, random.Random(0))
    assert delay_s(d.due) == DEFAULT_RETRY_DELAY
    assert f"/{DEFAULT_MAX_RETRIES} " in d.reason


def test_task_retry_with_an_eta_is_due_then():
    eta = NOW + timedelta(hours=1)
    d = decide(job(), error(Kind.RETRY, eta=eta, countdown=5), task(), NOW, random.Random(0))
    # The eta wins over a countdown
    assert d.due == eta
    assert d.job.eta == eta


def test_task_retry_with_an_eta_in_the_past_is_due_now():
    d = decide(job(), error(Kind.RETRY, eta=NOW - timedelta(days=1)), task(), NOW, random.Random(0))
    assert d.action is Action.DELAY
    assert d.due == NOW


def test_task_retry_with_a_naive_eta_takes_it_as_utc():
    eta = (NOW + timedelta(minutes=1)).replace(tzinfo=None)
    d = decide(job(), error(Kind.RETRY, eta=eta), task(), NOW, random.Random(0))
    assert d.due == NOW + timedelta(minutes=1)
    assert d.due.tzinfo is not None


def test_task_retry_with_new_arguments_runs_next_time_with_them():
    d = decide(
        job(), error(Kind.RETRY, countdown=1, new_args=[2, 3], new_kwargs={"k": "w"}), task(), NOW, random.Random(0)
    )
    assert (d.job.args, d.job.kwargs) == ([2, 3], {"k": "w"})
    # Without new ones, the old arguments stay
    same = decide(job(), error(Kind.RETRY, countdown=1), task(), NOW, random.Random(0))
    assert (same.job.args, same.job.kwargs) == ([1], {"k": "v"})


def test_task_retry_with_new_max_retries_sets_the_limit_now_and_for_later():
    # Given a task allowing 1 retry and a job that used it: retry(max_retries=5) still retries
    d = decide(
        job(retries=1), error(Kind.RETRY, countdown=1, max_retries=5), task(max_retries=1), NOW, random.Random(0)
    )
    assert d.action is Action.DELAY
    assert d.job.max_retries == 5
    assert "retry 2/5 " in d.reason


def test_task_retry_with_max_retries_zero_fails_at_once():
    # Given retries left by the task's policy, retry(max_retries=0) means: no more
    d = decide(
        job(retries=0), error(Kind.RETRY, countdown=1, max_retries=0), task(max_retries=5), NOW, random.Random(0)
    )
    assert d.action is Action.FAIL
    assert "retries exhausted (0/0)" in d.reason


# -- death ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("retries", "expected"), [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (4, 10.0), (30, 10.0)])
def test_a_death_is_retried_after_1_2_4_seconds_capped_at_the_retry_delay(retries, expected):
    # Given a task with a 10 s retry delay and unlimited retries
    t = task(retry_delay=10, max_retries=None)
    # When the job's child died (killed, out of memory, a time limit)
    d = decide(
        job(retries=retries), Answer(Kind.DIED, exc_type="WorkerLost", message="signal 9"), t, NOW, random.Random(0)
    )
    # Then it is retried after a backoff from 1 s, never longer than the retry delay
    assert DIED_BACKOFF_BASE_S == 1.0
    assert d.action is Action.DELAY
    assert delay_s(d.due) == expected
    assert d.job.errors[-1]["type"] == "WorkerLost"
    assert d.job.retries == retries + 1


def test_a_death_has_no_jitter_whatever_the_task_says():
    t = task(retry_delay=100, retry_backoff=True, retry_jitter=True)
    dues = {decide(job(retries=2), Answer(Kind.DIED), t, NOW, random.Random(seed)).due for seed in range(5)}
    assert dues == {NOW + timedelta(seconds=4)}


# -- limits ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [Kind.RETRY, Kind.DIED, Kind.ERROR])
def test_retries_exhausted_by_the_tasks_limit_fail_the_job_with_the_whole_history(kind):
    # Given a job that used both retries its task allows, with two errors recorded
    earlier = ({"type": "E1", "message": "m1"}, {"type": "E2", "message": "m2"})
    j = job(retries=2, errors=earlier)
    # When it needs a third retry
    d = decide(j, error(kind, autoretry=kind is Kind.ERROR), task(max_retries=2), NOW, random.Random(0))
    # Then it fails, with every error kept and the last one appended
    assert d.action is Action.FAIL
    assert d.due is None
    assert d.job.retries == 2
    assert [e["type"] for e in d.job.errors] == ["E1", "E2", "ValueError"]
    assert d.reason.startswith("retries exhausted (2/2): ValueError: bad input")


def test_the_jobs_max_retries_wins_over_the_tasks():
    # Given a task allowing 10 retries and a job allowing 1, already used
    d = decide(job(retries=1, max_retries=1), error(Kind.RETRY), task(max_retries=10), NOW, random.Random(0))
    assert d.action is Action.FAIL
    # And the other way round: a job allowing 10 under a task allowing 1
    d = decide(job(retries=1, max_retries=10), error(Kind.RETRY), task(max_retries=1), NOW, random.Random(0))
    assert d.action is Action.DELAY


def test_the_answers_max_retries_wins_over_the_jobs_and_the_tasks():
    d = decide(
        job(retries=3, max_retries=10), error(Kind.RETRY, max_retries=3), task(max_retries=10), NOW, random.Random(0)
    )
    assert d.action is Action.FAIL


def test_an_unknown_task_is_retried_at_most_the_default_number_of_times():
    used = job(retries=DEFAULT_MAX_RETRIES)
    assert decide(used, error(Kind.RETRY), None, NOW, random.Random(0)).action is Action.FAIL
    left = job(retries=DEFAULT_MAX_RETRIES - 1)
    assert decide(left, error(Kind.RETRY), None, NOW, random.Random(0)).action is Action.DELAY


def test_max_retries_none_means_unlimited():
    # Given a task without a retry limit and a job retried a thousand times already
    d = decide(job(retries=1000), error(Kind.RETRY, countdown=1), task(max_retries=None), NOW, random.Random(0))
    # Then it is retried once more
    assert d.action is Action.DELAY
    assert d.job.retries == 1001


# -- properties -----------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
small_errors = st.builds(lambda t, m: {"type": t, "message": m}, st.text(min_size=1, max_size=8), st.text(max_size=20))
offsets_s = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@st.composite
def jobs(draw: st.DrawFn) -> Job:
    return Job(
        id="j1",
        task="t.policy",
        args=draw(st.lists(json_values, max_size=3)),
        kwargs=draw(st.dictionaries(st.text(max_size=5), json_values, max_size=3)),
        enqueued_at=T0,
        eta=draw(st.none() | st.builds(lambda s: NOW + timedelta(seconds=s), offsets_s)),
        retries=draw(st.integers(0, 50)),
        max_retries=draw(st.none() | st.integers(0, 60)),
        errors=tuple(draw(st.lists(small_errors, max_size=14))),
        priority=draw(st.integers(0, 9)),
        time_limit=draw(st.none() | st.floats(min_value=0.1, max_value=100)),
        result_ttl=draw(st.none() | st.floats(min_value=0, max_value=100)),
        extra=draw(st.dictionaries(st.sampled_from(["x_a", "x_b"]), json_values, max_size=2)),
    )


@st.composite
def answers(draw: st.DrawFn) -> Answer:
    kind = draw(st.sampled_from([Kind.SUCCESS, Kind.ERROR, Kind.RETRY, Kind.DIED]))
    retry = kind is Kind.RETRY
    return Answer(
        kind,
        result=draw(json_values) if kind is Kind.SUCCESS else None,
        exc_type=draw(st.text(min_size=1, max_size=10)),
        message=draw(st.text(max_size=20)),
        autoretry=kind is Kind.ERROR and draw(st.booleans()),
        countdown=draw(st.none() | st.floats(min_value=-10, max_value=1e5)) if retry else None,
        eta=draw(st.none() | st.builds(lambda s: NOW + timedelta(seconds=s), offsets_s)) if retry else None,
        new_args=draw(st.none() | st.lists(json_values, max_size=2)) if retry else None,
        new_kwargs=draw(st.none() | st.dictionaries(st.text(max_size=4), json_values, max_size=2)) if retry else None,
        max_retries=draw(st.none() | st.integers(0, 60)) if retry else None,
    )


tasks = st.none() | st.builds(
    task,
    max_retries=st.none() | st.integers(0, 60),
    retry_delay=st.floats(min_value=0, max_value=1e4),
    retry_backoff=st.booleans() | st.floats(min_value=0.01, max_value=100),
    retry_backoff_max=st.floats(min_value=0, max_value=1e4),
    retry_jitter=st.booleans(),
    result_ttl=st.none() | st.floats(min_value=0, max_value=1e4),
)


def _unchanged_except(before: Job, after: Job, *names: str) -> None:
    for f in dataclasses.fields(Job):
        if f.name not in names:
            assert getattr(after, f.name) == getattr(before, f.name), f"{f.name} changed"


@given(jobs(), answers(), tasks, st.integers(0, 2**32))
@settings(max_examples=150, deadline=None)
def test_a_decision_changes_only_what_it_must(j: Job, answer: Answer, t: Task | None, seed: int) -> None:
    # Given any job, answer and policy, When the job is decided
    d = decide(j, answer, t, NOW, random.Random(seed))
    # Then a retry charges exactly one retry and records exactly one more error, due no earlier
    # than now; the arguments and the limit change only when the answer says so
    if d.action is Action.DELAY:
        assert d.job.retries == j.retries + 1
        assert d.job.error_count() == j.error_count() + 1
        assert d.due is not None and d.due >= NOW and d.job.eta == d.due
        assert d.job.args == (j.args if answer.new_args is None else answer.new_args)
        assert d.job.kwargs == (j.kwargs if answer.new_kwargs is None else answer.new_kwargs)
        assert d.job.max_retries == (j.max_retries if answer.max_retries is None else answer.max_retries)
        _unchanged_except(j, d.job, "retries", "errors", "eta", "args", "kwargs", "max_retries")
    # A failure records one more error and nothing else
    elif d.action is Action.FAIL:
        assert answer.kind is not Kind.SUCCESS
        assert d.job.error_count() == j.error_count() + 1
        _unchanged_except(j, d.job, "errors")
    # A kept success adds the result and its times, a deleted one changes nothing
    elif d.action is Action.KEEP:
        assert answer.kind is Kind.SUCCESS
        assert d.job.result == answer.result and d.job.finished_at == NOW
        _unchanged_except(j, d.job, "result", "finished_at", "result_expires")
    else:
        assert answer.kind is Kind.SUCCESS
        assert d.job == j


@given(
    attempt=st.integers(0, 10_000),
    base=st.floats(min_value=0, max_value=1e6),
    cap=st.floats(min_value=0, max_value=1e6),
    jitter=st.booleans(),
    seed=st.integers(0, 2**32),
)
def test_compute_backoff_is_never_negative_nor_over_its_cap(attempt, base, cap, jitter, seed):
    delay = compute_backoff(attempt, base_s=base, cap_s=cap, jitter=jitter, rnd=random.Random(seed))
    assert 0 <= delay <= cap


def test_compute_backoff_doubles_per_attempt_until_the_cap():
    rnd = random.Random(0)
    delays = [compute_backoff(a, base_s=0.5, cap_s=10, jitter=False, rnd=rnd) for a in range(8)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    # A huge attempt number neither overflows nor exceeds the cap
    assert compute_backoff(10**9, base_s=1, cap_s=30, jitter=False, rnd=rnd) == 30


def test_compute_backoff_with_full_jitter_spreads_over_zero_to_the_delay():
    # Given many draws of the same attempt with full jitter
    rnd = random.Random(1234)
    draws = [compute_backoff(3, base_s=1, cap_s=100, jitter=True, rnd=rnd) for _ in range(2000)]
    # Then all lie in [0, 8], and they fill the range rather than cluster at its top
    assert all(0 <= d <= 8 for d in draws)
    assert min(draws) < 0.5 and max(draws) > 7.5
    assert 3.5 < sum(draws) / len(draws) < 4.5
