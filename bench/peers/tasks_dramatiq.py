"""Dramatiq side of the benchmark: broker, actors and the producer's client.

The worker runs as ``dramatiq bench.peers.tasks_dramatiq --processes 2 --threads 1``: two
processes of one thread each, i.e. one job at a time per core, like the other peers'
two worker processes. The broker is Redis from ``BENCH_REDIS_URL`` with Dramatiq's default
middleware. Retries are left at their default since no job fails here.
"""

from __future__ import annotations

import os
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.peers import _probe

broker = RedisBroker(url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6399/0"))
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="bench_noop", queue_name="bench")
def noop() -> None:
    """The no-op job (one appended byte, see ``_probe``)."""
    _probe.noop()


@dramatiq.actor(actor_name="bench_stamp", queue_name="bench")
def stamp(ref: float) -> None:
    """Record start time next to the enqueue or due time."""
    _probe.stamp(ref)


def _delay_ms(eta: float) -> int:
    """Dramatiq schedules by a relative delay in milliseconds, not an absolute eta."""
    return max(0, int((eta - time.time()) * 1000))


class Client:
    """The producer-side calls the harness needs, in Dramatiq's public API."""

    bulk = None  # The Redis broker enqueues one message per call; group() just loops.

    def send_noop(self) -> None:
        noop.send()

    def send_stamp(self, ref: float) -> None:
        stamp.send(ref)

    def send_noop_at(self, eta: float) -> None:
        noop.send_with_options(delay=_delay_ms(eta))

    def send_stamp_at(self, ref: float, eta: float) -> None:
        stamp.send_with_options(args=(ref,), delay=_delay_ms(eta))
