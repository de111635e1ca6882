"""Tasks for the tests, importable by pool children as ``tasks`` (tests/ is on sys.path).

Declared with the module-level ``spoolq.task`` so any App (and any worker) finds them by name.
Keep each one tiny and deterministic; add new ones at the end.
"""

from __future__ import annotations

import spoolq


@spoolq.task(name="tests.echo")
def echo(message):
    """Return the message unchanged."""
    return message


@spoolq.task(name="tests.add", result_ttl=60)
def add(a, b):
    """Return a + b and keep the result for a minute."""
    return a + b


@spoolq.task(name="tests.fail", max_retries=0)
def fail(message="boom"):
    """Always raise ValueError(message), never retried."""
    raise ValueError(message)
