"""Huey side of the benchmark: the tasks the consumer runs and the producer's client.

One module serves the three storages (``BENCH_HUEY_KIND`` = file | sqlite | redis) so the
task code is identical across them and only the storage differs. The consumer is started
as ``python -m huey.bin.huey_consumer bench.peers.tasks_huey.huey``; it imports this
module with the same environment as the producer, which is how both agree on the storage.
Results are disabled: the tasks return nothing and storing ``None`` would only add writes
that spoolq does not do either.
"""

from __future__ import annotations

import datetime as dt
import os

from huey import FileHuey, RedisHuey, SqliteHuey
from huey.api import Huey

from bench.peers import _probe


def _make_huey() -> Huey:
    """Build the Huey instance described by the environment set by the harness."""
    kind = os.environ.get("BENCH_HUEY_KIND", "file")
    store = os.environ.get("BENCH_STORE_DIR", ".")
    if kind == "file":
        # FileHuey has no fsync option at all: writes reach the page cache only.
        # Create its directory first: FileHuey's own check-then-mkdir races when several
        # producers start at once on a fresh directory (seen as FileExistsError).
        path = os.path.join(store, "huey")
        os.makedirs(path, exist_ok=True)
        return FileHuey("bench", path=path, results=False)
    if kind == "sqlite":
        # WAL journal and synchronous=FULL (fsync=True): each commit is fsynced.
        return SqliteHuey(
            "bench",
            filename=os.path.join(store, "huey.db"),
            results=False,
            fsync=True,
            journal_mode="wal",
        )
    if kind == "redis":
        return RedisHuey("bench", url=os.environ["BENCH_REDIS_URL"], results=False)
    raise ValueError(f"unknown BENCH_HUEY_KIND {kind!r}")


huey = _make_huey()


@huey.task(name="bench.noop")
def noop() -> None:
    """The no-op job (one appended byte, see ``_probe``)."""
    _probe.noop()


@huey.task(name="bench.stamp")
def stamp(ref: float) -> None:
    """Record start time next to the enqueue or due time."""
    _probe.stamp(ref)


def _utc(ts: float) -> dt.datetime:
    """Huey compares etas in naive UTC when ``utc=True`` (its default)."""
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).replace(tzinfo=None)


class Client:
    """The producer-side calls the harness needs, in Huey's public API."""

    bulk = None  # Huey has no bulk enqueue.

    def send_noop(self) -> None:
        noop()

    def send_stamp(self, ref: float) -> None:
        stamp(ref)

    def send_noop_at(self, eta: float) -> None:
        noop.schedule(eta=_utc(eta))

    def send_stamp_at(self, ref: float, eta: float) -> None:
        stamp.schedule(args=(ref,), eta=_utc(eta))
