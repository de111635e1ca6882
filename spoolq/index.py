"""What the supervisor keeps in memory about the spool: hints, never the truth.

The directories are the truth; this index only spares the supervisor a listing per job:

- the *ready window*: a heap of ``ready/`` names, which sort in dispatch order (priority,
  then due time).  With a million jobs queued, indexing them all would cost hundreds of MB;
  instead the window holds the first :data:`READY_WINDOW` and remembers its largest name (the
  *bound*): an arrival that sorts before it (a higher priority, say) joins the window, later
  ones wait on disk, and one listing of ``ready/`` per half window drained refills it.
  Everything indexed sorts before everything spilled, so order is kept.
- the jobs parsed when they were taken in (files never change once they land), so a job is
  read and validated once; past :data:`PARSED_CACHE_MAX`, dispatch reads the file again.
- the *delayed heap* of ``(due, name)``: the supervisor sleeps until its first entry.
- the *live ids* (in ``ready/``, ``delayed/`` or ``active/``), to catch a duplicate id at
  intake; a hit is confirmed on disk before it counts.
"""

from __future__ import annotations

import heapq
import logging
from datetime import datetime

from .errors import JobNotFound
from .job import Job
from .layout import ACTIVE, DELAYED, JSON, READY, ready_id
from .spool import Spool

log = logging.getLogger("spoolq.supervisor")

READY_WINDOW = 100_000  # ready/ names kept in memory; the rest wait on disk
PARSED_CACHE_MAX = 20_000  # jobs kept parsed for dispatch


class Index:
    """The ready window, the delayed heap and the live ids of one spool.

    Parameters:
        spool: where a refill lists ``ready/`` and a duplicate is confirmed.
        window: how many ``ready/`` names to keep in memory.
    """

    def __init__(self, spool: Spool, window: int | None = None) -> None:
        self.spool = spool
        self.window = window or READY_WINDOW
        self._ready: list[str] = []  # heap of ready/ names
        self._parsed: dict[str, Job] = {}  # ready/ name -> the job as intake read it
        self._bound: str | None = None  # largest indexed name while some wait on disk
        self._spilled = False  # ready/ holds names not in the index
        self._delayed: list[tuple[datetime, str]] = []  # heap of (due, delayed/ name)
        self._live: set[str] = set()

    # -- loading -------------------------------------------------------------------------

    def load(self) -> None:
        """Index what the directories hold (at start, after recovery).  Raises SpoolError."""
        for e in self.spool.scan(DELAYED):
            if e.job_id is None or e.when is None:
                log.warning("ignoring foreign file delayed/%s (spoolq fsck reports it)", e.name)
                continue
            heapq.heappush(self._delayed, (e.when, e.name))
            self._live.add(e.job_id)
        for e in self.spool.scan(READY):
            if e.job_id is None:
                log.warning("ignoring foreign file ready/%s (spoolq fsck reports it)", e.name)
        self.refill()

    # -- ready ---------------------------------------------------------------------------

    def __len__(self) -> int:
        """How many ``ready/`` names are indexed."""
        return len(self._ready)

    def push_ready(self, name: str, job: Job | None = None) -> None:
        """Index a file that just landed in ``ready/`` (``job``: as it was read), unless it
        sorts after the window (then it waits on disk for a refill)."""
        if self._bound is not None and name > self._bound:
            self._spilled = True
            return
        heapq.heappush(self._ready, name)
        self._live.add(ready_id(name))
        if job is not None and len(self._parsed) < PARSED_CACHE_MAX:
            self._parsed[name] = job
        if self._bound is None and len(self._ready) > self.window:
            self.refill()  # too many to index: keep the window's worth, the rest wait on disk

    def pop_ready(self) -> tuple[str, Job | None] | None:
        """The first ``ready/`` name in dispatch order and the job if it is cached (None:
        read the file), or None when nothing is indexed."""
        if not self._ready:
            return None
        name = heapq.heappop(self._ready)
        return name, self._parsed.pop(name, None)

    @property
    def spilled(self) -> bool:
        """Whether ``ready/`` holds names the window does not."""
        return self._spilled

    def wants_refill(self) -> bool:
        """Whether names wait on disk and the window is half drained."""
        return self._spilled and len(self._ready) < self.window // 2

    def refill(self, handed: set[str] | frozenset[str] = frozenset()) -> None:
        """Index the first names of ``ready/`` in dispatch order, up to the window, but those
        in ``handed`` (given to a child that has not claimed them yet: indexed again, they
        would be handed out twice).  Raises SpoolError if ``ready/`` cannot be listed."""
        room = self.window - len(self._ready)
        if room < 0:  # the window overflowed: keep its first names, the rest wait on disk
            self._ready = heapq.nsmallest(self.window, self._ready)  # a sorted list is a heap
            self._spilled = True
        else:
            indexed = set(self._ready) | handed
            # A cheap filter: a foreign name that slips through is refused at dispatch.
            names = (n for n in self.spool.names(READY) if n.endswith(JSON) and n not in indexed)
            extra = heapq.nsmallest(room + 1, names)  # one more than fits: do more remain?
            self._spilled = len(extra) > room
            for name in extra[:room]:
                heapq.heappush(self._ready, name)
                self._live.add(ready_id(name))
        self._bound = max(self._ready) if self._spilled and self._ready else None
        if self._spilled:
            keep = set(self._ready)
            self._parsed = {k: v for k, v in self._parsed.items() if k in keep}

    # -- delayed -------------------------------------------------------------------------

    def push_delayed(self, due: datetime, name: str, job_id: str) -> None:
        """Index a file that just landed in ``delayed/``."""
        heapq.heappush(self._delayed, (due, name))
        self._live.add(job_id)

    def pop_due(self, now: datetime) -> tuple[datetime, str] | None:
        """The first delayed ``(due, name)`` if it is due at ``now``, taken off the heap."""
        if self._delayed and self._delayed[0][0] <= now:
            return heapq.heappop(self._delayed)
        return None

    def unpop_due(self, due: datetime, name: str) -> None:
        """Put back what :meth:`pop_due` gave (it could not be moved yet)."""
        heapq.heappush(self._delayed, (due, name))

    def next_due(self) -> datetime | None:
        """When the first delayed job is due (None: none waits)."""
        return self._delayed[0][0] if self._delayed else None

    # -- live ids ------------------------------------------------------------------------

    def live(self, job_id: str) -> None:
        """Note that ``job_id`` is in ``ready/``, ``delayed/`` or ``active/``."""
        self._live.add(job_id)

    def gone(self, job_id: str) -> None:
        """Note that ``job_id`` left the live states."""
        self._live.discard(job_id)

    def is_queued(self, job_id: str) -> bool:
        """Whether a job with this id is in ``ready/``, ``delayed/`` or ``active/`` now.  The
        index is only a hint: an operator may have moved the file away (``mv delayed/… new/``
        to run a job now), so a hit is confirmed in the listings before it counts.  (A child
        claims with RENAME_NOREPLACE, so an id that got past this into ready/ still never
        runs twice at once.)"""
        if job_id not in self._live:
            return False
        try:
            self.spool.find(job_id, (ACTIVE, READY, DELAYED))
        except JobNotFound:
            self._live.discard(job_id)
            return False
        return True
