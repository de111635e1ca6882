"""One policy for I/O that keeps failing: back off, say it once, then summarise.

A disk that is full, read-only, or missing a directory fails the same way on every try, and
a loop that retries at once turns that into 100 % CPU and a log flood while nothing moves.
Every step of the supervisor that touches the disk (taking jobs in, recording outcomes,
claiming, flushing) reports its failures and its successes here, and asks before it tries
again.  Each step backs off on its own, so a ``failed/`` that cannot be written does not stop
valid jobs from flowing from ``new/`` to ``ready/``.

The first failure of a streak is logged at once with its cause; later ones are counted and
summarised in one line per :data:`SUMMARY_INTERVAL_S`; the end of a streak is logged with
its length.  Time is passed in (monotonic seconds): nothing here reads a clock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
SUMMARY_INTERVAL_S = 60.0


@dataclass
class Streak:
    """The failures of one step since it last worked."""

    since: float  # monotonic seconds of the first failure
    last: str  # the latest failure, one line
    count: int = 1
    delay_s: float = FIRST_BACKOFF_S
    retry_at: float = 0.0
    summarised_at: float = 0.0
    summarised_count: int = 1


class Faults:
    """The backoff and logging of failing I/O, per step.

    Parameters:
        log: where the first failure, the summaries and the recovery go.
        first_s, cap_s: the first backoff and its cap, in seconds (doubling in between).
        summary_s: seconds between summary lines of a streak that goes on.
    """

    def __init__(
        self,
        log: logging.Logger,
        *,
        first_s: float = FIRST_BACKOFF_S,
        cap_s: float = MAX_BACKOFF_S,
        summary_s: float = SUMMARY_INTERVAL_S,
    ) -> None:
        self.log = log
        self.first_s = first_s
        self.cap_s = cap_s
        self.summary_s = summary_s
        self.streaks: dict[str, Streak] = {}

    def ready(self, step: str, now: float) -> bool:
        """Whether ``step`` may touch the disk at ``now`` (it is not backing off)."""
        streak = self.streaks.get(step)
        return streak is None or now >= streak.retry_at

    def failed(self, step: str, what: str, now: float) -> None:
        """Record that ``step`` failed (``what``: one line with the cause) and back it off.

        Several failures within one try (one per job of a batch) count once towards the
        backoff, so the delay doubles per try, not per job.
        """
        streak = self.streaks.get(step)
        if streak is None:
            streak = self.streaks[step] = Streak(since=now, last=what, delay_s=self.first_s, summarised_at=now)
            streak.retry_at = now + streak.delay_s
            self.log.error(
                "%s; retrying in %.1f s (while it goes on, one summary line every %.0f s)",
                what,
                streak.delay_s,
                self.summary_s,
            )
            return
        streak.count += 1
        streak.last = what
        if now >= streak.retry_at:  # a new try that failed again: wait longer
            streak.delay_s = min(self.cap_s, streak.delay_s * 2)
            streak.retry_at = now + streak.delay_s
        if now - streak.summarised_at >= self.summary_s:
            self.log.error(
                "still failing after %.0f s (%d errors in the last %.0f s): %s; next try in %.1f s",
                now - streak.since,
                streak.count - streak.summarised_count,
                now - streak.summarised_at,
                what,
                max(0.0, streak.retry_at - now),
            )
            streak.summarised_at, streak.summarised_count = now, streak.count

    def ok(self, step: str, now: float) -> None:
        """Record that ``step`` worked: its streak, if any, ends (and is logged as over)."""
        streak = self.streaks.pop(step, None)
        if streak is not None:
            self.log.warning(
                "recovered: %s works again after %.1f s and %d error(s)", step, now - streak.since, streak.count
            )

    def retry_at(self, step: str) -> float:
        """When ``step`` may try again (monotonic; 0 if it is not backing off)."""
        streak = self.streaks.get(step)
        return streak.retry_at if streak is not None else 0.0

    def next_retry(self, now: float) -> float | None:
        """The earliest time after ``now`` that a backing-off step may try again (monotonic),
        or None.  A step whose wait is over but that has not tried yet is not counted: the
        loop would otherwise wake for it at once, again and again."""
        return min((s.retry_at for s in self.streaks.values() if s.retry_at > now), default=None)

    def failing_since(self) -> float | None:
        """When the oldest streak still going on began (monotonic), or None."""
        return min((s.since for s in self.streaks.values()), default=None)

    def describe(self) -> str:
        """One line naming every step that is failing and its latest cause."""
        return "; ".join(f"{step}: {s.last}" for step, s in sorted(self.streaks.items()))

    def __bool__(self) -> bool:
        return bool(self.streaks)
