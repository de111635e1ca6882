"""What happens to a job after it ran: a pure decision, no I/O, no clock.

:func:`decide` takes the job, what its run produced (an :class:`Outcome`), the task's policy,
``now`` and a random source, and returns a :class:`Decision`: delete it, keep its result in
``done/``, wait in ``delayed/`` until a time, or give up into ``failed/``.  Keeping this pure
lets tests cover every branch with a fake clock and a seeded random.
"""

from __future__ import annotations

import random as _random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .job import Job, as_utc, make_error
from .task import DEFAULT_MAX_RETRIES, DEFAULT_RETRY_DELAY, Task

SUCCESS, ERROR, RETRY, DIED = "success", "error", "retry", "died"
# A child could not claim the job it was given, so it did not run: it was gone from ready/
# (deleted or moved by hand), its id was already active, or the rename failed (I/O).
GONE, CLASH, UNCLAIMED = "gone", "clash", "unclaimed"
DELETE, KEEP, DELAY, FAIL = "delete", "keep", "delay", "fail"
# A job whose worker died is retried sooner than the task's retry delay: the death is more
# often the machine (OOM, a kill) than the input; backoff still stops a crash loop.
DIED_BACKOFF_BASE_S = 1.0


@dataclass(frozen=True)
class Outcome:
    """What one run of a job produced, as the pool reports it.

    ``kind`` is success, error (an exception), retry (``task.retry`` was raised) or died
    (the worker process ended, or was killed for its time limit, without answering); or
    gone, clash or unclaimed when the child could not claim the job and did not run it.
    """

    kind: str
    result: Any = None
    exc_type: str = ""
    message: str = ""
    traceback: str = ""
    autoretry: bool = False  # the exception is in the task's autoretry_for
    countdown: float | None = None
    eta: datetime | None = None
    new_args: list | None = None
    new_kwargs: dict | None = None
    max_retries: int | None = None
    duration_s: float = 0.0
    discarded: bool = False  # a success the child already took out of active/ (result not kept)


@dataclass(frozen=True)
class Decision:
    """Where the job goes next and the record to write there.

    ``action`` is delete, keep (``done/``), delay (``delayed/`` until ``due``, or ``ready/``
    when due now) or fail (``failed/``).  ``reason`` is one line for the log.
    """

    action: str
    job: Job
    due: datetime | None = None
    reason: str = ""


def compute_backoff(attempt: int, *, base_s: float, cap_s: float, jitter: bool, rnd: _random.Random) -> float:
    """Exponential backoff in seconds: ``base * 2**attempt`` capped at ``cap``; with
    jitter, a uniform draw in ``[0, that]`` (full jitter spreads a burst of retries)."""
    delay = min(cap_s, base_s * (2 ** min(attempt, 62)))
    return rnd.uniform(0, delay) if jitter else delay


def _limit(job: Job, outcome: Outcome, task: Task | None) -> int | None:
    if outcome.max_retries is not None:
        return outcome.max_retries
    if job.max_retries is not None:
        return job.max_retries
    return task.max_retries if task is not None else DEFAULT_MAX_RETRIES


def decide(job: Job, outcome: Outcome, task: Task | None, now: datetime, rnd: _random.Random) -> Decision:
    """The next state of ``job`` after ``outcome``.

    Parameters:
        job: the job as it was dispatched.
        outcome: what the run produced.
        task: the task's policy (None if the task is unknown here: defaults apply).
        now: the current time (UTC).
        rnd: the random source for jitter.
    Returns:
        The decision; its ``job`` is the record to write (with ``retries + 1`` and the
        error appended on a retry, the whole history on a failure).
    """
    if outcome.kind == SUCCESS:
        ttl = job.result_ttl if job.result_ttl is not None else (task.result_ttl if task else None)
        took = f"succeeded in {outcome.duration_s:.3f} s"
        if ttl is None:
            return Decision(DELETE, job, reason=took)
        return Decision(KEEP, job.succeeded(outcome.result, now, ttl), reason=took)

    error = make_error(outcome.exc_type, outcome.message, outcome.traceback, attempt=job.retries, at=now)
    limit = _limit(job, outcome, task)
    retry_wanted = outcome.kind in (RETRY, DIED) or outcome.autoretry
    if not retry_wanted:
        return Decision(FAIL, job.with_error(error), reason=f"{outcome.exc_type}: {outcome.message}")
    if limit is not None and job.retries >= limit:
        return Decision(
            FAIL,
            job.with_error(error),
            reason=f"retries exhausted ({job.retries}/{limit}): {outcome.exc_type}: {outcome.message}",
        )

    due = _due(job, outcome, task, now, rnd)
    nxt = job.retried(error, due, args=outcome.new_args, kwargs=outcome.new_kwargs, max_retries=outcome.max_retries)
    wait = (due - now).total_seconds()
    return Decision(DELAY, nxt, due=due, reason=f"retry {job.retries + 1}/{limit} in {wait:.3f} s: {outcome.message}")


def _due(job: Job, outcome: Outcome, task: Task | None, now: datetime, rnd: _random.Random) -> datetime:
    base_delay = task.retry_delay if task is not None else DEFAULT_RETRY_DELAY
    if outcome.kind == RETRY:
        if outcome.eta is not None:
            return max(as_utc(outcome.eta), now)
        delay = base_delay if outcome.countdown is None else max(0.0, outcome.countdown)
    elif outcome.kind == DIED:
        delay = compute_backoff(
            job.retries, base_s=DIED_BACKOFF_BASE_S, cap_s=base_delay, jitter=False, rnd=rnd
        )
    elif task is not None and task.retry_backoff:
        first = 1.0 if task.retry_backoff is True else float(task.retry_backoff)
        delay = compute_backoff(
            job.retries, base_s=first, cap_s=task.retry_backoff_max, jitter=task.retry_jitter, rnd=rnd
        )
    else:
        delay = base_delay
    return now + timedelta(seconds=delay)
