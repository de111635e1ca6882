"""spoolq side of the benchmark: the tasks its worker runs and the producer's client.

The counterpart of ``bench/peers/tasks_*.py``, so spoolq is measured by the very same
workload code as the peers (``bench.peers._workloads``): the same no-op (one byte appended
to the probe file), the same stamp task, the same producer subprocesses and timing points.
The worker is started as ``spoolq --spool store/spool worker -c 2 -I bench.spoolq_tasks``
in the workload's temp dir; the producer's spool is ``$BENCH_STORE_DIR/spool``, the same
directory. ``BENCH_SPOOLQ_FSYNC=0`` makes the producer enqueue without fsync.
"""

from __future__ import annotations

import datetime as dt
import os

import spoolq
from bench.peers import _probe

NOOP = "bench.noop"
STAMP = "bench.stamp"


@spoolq.task(name=NOOP)
def noop() -> None:
    """The no-op job (one appended byte, see ``bench.peers._probe``)."""
    _probe.noop()


@spoolq.task(name=STAMP)
def stamp(ref: float) -> None:
    """Record start time next to the enqueue or due time."""
    _probe.stamp(ref)


def spool_path() -> str:
    """The spool both sides use: ``$BENCH_STORE_DIR/spool``."""
    return os.path.join(os.environ.get("BENCH_STORE_DIR", "."), "spool")


def _at(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc)


class Client:
    """The producer-side calls the harness needs, in spoolq's public API."""

    def __init__(self) -> None:
        fsync = os.environ.get("BENCH_SPOOLQ_FSYNC", "1") != "0"
        self.app = spoolq.App(spool_path(), fsync=fsync)
        self.app.spool.ensure()

    def send_noop(self) -> None:
        self.app.send_task(NOOP)

    def bulk(self, k: int) -> None:
        self.app.send_many([(NOOP, None, None)] * k)

    def send_stamp(self, ref: float) -> None:
        self.app.send_task(STAMP, args=[ref])

    def send_noop_at(self, eta: float) -> None:
        self.app.send_task(NOOP, eta=_at(eta))

    def send_stamp_at(self, ref: float, eta: float) -> None:
        self.app.send_task(STAMP, args=[ref], eta=_at(eta))
