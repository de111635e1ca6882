"""Time, passed in: the wall clock and the monotonic clock as one object.

Every timer of the supervisor and the pool (rescans, flushes, I/O backoff, hard limits, the
shutdown timeout) reads the clock it was given, never the system's directly, so a test steps
a :class:`StepClock` instead of sleeping.  Wall time (``now``) orders and stamps jobs;
monotonic time (``mono``, seconds) measures intervals and cannot jump.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Protocol


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(timezone.utc)


class Clock(Protocol):
    """What spoolq asks of a clock."""

    def now(self) -> datetime:
        """The wall time, aware, UTC."""
        ...

    def mono(self) -> float:
        """Monotonic seconds (an arbitrary origin; only differences mean anything)."""
        ...


class SystemClock:
    """The machine's clocks (bound straight to the functions: they are read several times a
    job, and a method call would double their cost)."""

    def __init__(self) -> None:
        self.now = utcnow
        self.mono = time.monotonic


class StepClock:
    """A clock that moves only when told to (for tests): both times advance together.

    Parameters:
        start: the wall time to begin at (aware).
        mono: the monotonic time to begin at, in seconds.
    """

    def __init__(self, start: datetime, mono: float = 1000.0) -> None:
        self._now = start
        self._mono = mono

    def now(self) -> datetime:
        return self._now

    def mono(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        """Move both times ``seconds`` forward."""
        self._now += timedelta(seconds=seconds)
        self._mono += seconds
