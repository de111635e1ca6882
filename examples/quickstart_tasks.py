"""The tasks of examples/quickstart.py: one that works, two that fail for a while, one that never works.

A task module needs no spool path: ``@spoolq.task`` declares the task for whichever App or
worker imports the module (``spoolq worker -I quickstart_tasks``).
"""

from __future__ import annotations

import spoolq


@spoolq.task(name="quickstart.add", result_ttl=3600)
def add(a, b):
    """Add two numbers; the result is kept in done/ for an hour (``spoolq result ID``)."""
    return a + b


@spoolq.task(name="quickstart.flaky", bind=True, max_retries=3)
def flaky(self, name, bad_attempts):
    """Fail the first ``bad_attempts`` runs, then succeed: a service that is briefly down.

    ``self.retry`` records the error in the job and puts it into delayed/ for half a second.
    """
    if self.request.retries < bad_attempts:
        error = ConnectionError(f"{name}: service unavailable (attempt {self.request.retries + 1})")
        raise self.retry(exc=error, countdown=0.5)
    return f"{name}: ok after {self.request.retries} retries"


@spoolq.task(
    name="quickstart.unreliable",
    bind=True,
    autoretry_for=(TimeoutError,),
    retry_backoff=0.25,
    retry_jitter=True,
    max_retries=5,
)
def unreliable(self, n):
    """Time out on the first two runs; ``autoretry_for`` retries with exponential backoff and jitter."""
    if self.request.retries < 2:
        raise TimeoutError(f"no answer for item {n}")
    return n * n


@spoolq.task(name="quickstart.divide", max_retries=0)
def divide(a, b):
    """Divide; ``divide(1, 0)`` raises and, not being a retryable error, fails at once."""
    return a / b
