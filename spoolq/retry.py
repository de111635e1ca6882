"""What happens to a job after it ran: a pure decision, no I/O, no clock.

:func:`decide` takes the job, what its run produced (an :class:`~spoolq.protocol.Answer`), the task's policy,
``now`` and a random source, and returns a :class:`Decision`: delete it, keep its result in
``done/``, wait in ``delayed/`` until a time, or give up into ``failed/``.  Keeping this pure
lets tests cover every branch with a fake clock and a seeded random.
"""

from __future__ import annotations

import enum
import random as _random
from dataclasses import dataclass
from datetime import datetime, timedelta

from .codec import as_utc
from .job import Job, make_error
from .protocol import Answer, Kind
from .task import DEFAULT_MAX_RETRIES, DEFAULT_RETRY_DELAY, Task

# A job whose child died is retried sooner than the task's retry delay: the death is more
# often the machine (OOM, a kill) than the input; backoff still stops a crash loop.
DIED_BACKOFF_BASE_S = 1.0


class Action(str, enum.Enum):
    """Where a job goes after a run."""

    DELETE = "delete"  # succeeded, no result to keep
    KEEP = "keep"  # succeeded, the result kept in done/
    DELAY = "delay"  # run again at ``due`` (delayed/, or ready/ when due now)
    FAIL = "fail"  # given up: failed/


@dataclass(frozen=True)
class Decision:
    """Where the job goes next and the record to write there; ``reason`` is one line for
    the log."""

    action: Action
    job: Job
    due: datetime | None = None
    reason: str = ""


def compute_backoff(attempt: int, *, base_s: float, cap_s: float, jitter: bool, rnd: _random.Random) -> float:
    """Exponential backoff in seconds: ``base * 2**attempt`` capped at ``cap``; with
    jitter, a uniform draw in ``[0, that]`` (full jitter spreads a burst of retries)."""
    delay = min(cap_s, base_s * (2 ** min(attempt, 62)))
    return rnd.uniform(0, delay) if jitter else delay


def _limit(job: Job, answer: Answer, task: Task | None) -> int | None:
    if answer.max_retries is not None:
        return answer.max_retries
    if job.max_retries is not None:
        return job.max_retries
    return task.max_retries if task is not None else DEFAULT_MAX_RETRIES


def decide(job: Job, answer: Answer, task: Task | None, now: datetime, rnd: _random.Random) -> Decision:
    """The next state of ``job`` after ``answer``.

    Parameters:
        job: the job as it was dispatched.
        answer: what the run produced.
        task: the task's policy (None if the task is unknown here: defaults apply).
        now: the current time (UTC).
        rnd: the random source for jitter.
    Returns:
        The decision; its ``job`` is the record to write (with ``retries + 1`` and the
        error appended on a retry, the whole history on a failure).
    """
    if answer.kind is Kind.SUCCESS:
        ttl = job.result_ttl if job.result_ttl is not None else (task.result_ttl if task else None)
        took = f"succeeded in {answer.duration_s:.3f} s"
        if ttl is None:
            return Decision(Action.DELETE, job, reason=took)
        return Decision(Action.KEEP, job.succeeded(answer.result, now, ttl), reason=took)

    error = make_error(answer.exc_type, answer.message, answer.traceback, attempt=job.retries, at=now)
    limit = _limit(job, answer, task)
    retry_wanted = answer.kind in (Kind.RETRY, Kind.DIED) or answer.autoretry
    if not retry_wanted:
        return Decision(Action.FAIL, job.with_error(error), reason=f"{answer.exc_type}: {answer.message}")
    if limit is not None and job.retries >= limit:
        return Decision(
            Action.FAIL,
            job.with_error(error),
            reason=f"retries exhausted ({job.retries}/{limit}): {answer.exc_type}: {answer.message}",
        )

    due = _due(job, answer, task, now, rnd)
    nxt = job.retried(error, due, args=answer.new_args, kwargs=answer.new_kwargs, max_retries=answer.max_retries)
    wait = (due - now).total_seconds()
    reason = f"retry {job.retries + 1}/{limit} in {wait:.3f} s: {answer.message}"
    return Decision(Action.DELAY, nxt, due=due, reason=reason)


def _due(job: Job, answer: Answer, task: Task | None, now: datetime, rnd: _random.Random) -> datetime:
    base_delay = task.retry_delay if task is not None else DEFAULT_RETRY_DELAY
    if answer.kind is Kind.RETRY:
        if answer.eta is not None:
            return max(as_utc(answer.eta), now)
        delay = base_delay if answer.countdown is None else max(0.0, answer.countdown)
    elif answer.kind is Kind.DIED:
        delay = compute_backoff(job.retries, base_s=DIED_BACKOFF_BASE_S, cap_s=base_delay, jitter=False, rnd=rnd)
    elif task is not None and task.retry_backoff:
        first = 1.0 if task.retry_backoff is True else float(task.retry_backoff)
        delay = compute_backoff(
            job.retries, base_s=first, cap_s=task.retry_backoff_max, jitter=task.retry_jitter, rnd=rnd
        )
    else:
        delay = base_delay
    return now + timedelta(seconds=delay)
