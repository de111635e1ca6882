"""Celery side of the benchmark: app, tasks and the producer's client.

The worker runs as ``celery -A bench.peers.tasks_celery worker -P prefork -c 2``. The broker
comes from ``BENCH_REDIS_URL``. Results are ignored (no result backend), as a fire-and-forget
queue like spoolq's default needs none. Everything else is Celery's default, in particular
``acks_late=False`` and a prefetch multiplier of 4: what a Celery user gets out of the box.
"""

from __future__ import annotations

import datetime as dt
import os

from celery import Celery

from bench.peers import _probe

app = Celery("bench", broker=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6399/0"))
app.conf.update(
    task_ignore_result=True,
    result_backend=None,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    worker_send_task_events=False,
    task_default_queue="bench",
)


@app.task(name="bench.noop")
def noop() -> None:
    """The no-op job (one appended byte, see ``_probe``)."""
    _probe.noop()


@app.task(name="bench.stamp")
def stamp(ref: float) -> None:
    """Record start time next to the enqueue or due time."""
    _probe.stamp(ref)


def _aware(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc)


class Client:
    """The producer-side calls the harness needs, in Celery's public API."""

    bulk = None  # Celery (kombu) has no bulk publish; group() sends one message per task.

    def send_noop(self) -> None:
        noop.delay()

    def send_stamp(self, ref: float) -> None:
        stamp.delay(ref)

    def send_noop_at(self, eta: float) -> None:
        noop.apply_async(eta=_aware(eta))

    def send_stamp_at(self, ref: float, eta: float) -> None:
        stamp.apply_async(args=(ref,), eta=_aware(eta))
