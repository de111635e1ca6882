"""RQ side of the benchmark: the job functions and the producer's client.

Workers run as ``rq worker --with-scheduler`` (``-w rq.worker.SimpleWorker`` for the
no-fork variant); the scheduler flag is needed for ``enqueue_at``. The connection comes
from ``BENCH_REDIS_URL``. Job options are RQ's defaults (results kept 500 s) since that
is what an RQ user gets.
"""

from __future__ import annotations

import datetime as dt
import os

from redis import Redis
from rq import Queue

from bench.peers import _probe


def noop() -> None:
    """The no-op job (one appended byte, see ``_probe``)."""
    _probe.noop()


def stamp(ref: float) -> None:
    """Record start time next to the enqueue or due time."""
    _probe.stamp(ref)


def _aware(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc)


class Client:
    """The producer-side calls the harness needs, in RQ's public API."""

    def __init__(self) -> None:
        self.queue = Queue("bench", connection=Redis.from_url(os.environ["BENCH_REDIS_URL"]))

    def send_noop(self) -> None:
        self.queue.enqueue(noop)

    def send_stamp(self, ref: float) -> None:
        self.queue.enqueue(stamp, ref)

    def send_noop_at(self, eta: float) -> None:
        self.queue.enqueue_at(_aware(eta), noop)

    def send_stamp_at(self, ref: float, eta: float) -> None:
        self.queue.enqueue_at(_aware(eta), stamp, ref)

    def bulk(self, n: int) -> None:
        """``Queue.enqueue_many``: one Redis pipeline for the whole batch."""
        self.queue.enqueue_many([Queue.prepare_data(noop) for _ in range(n)])
