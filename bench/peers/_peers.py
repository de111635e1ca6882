"""The peers and the exact configuration each one is benchmarked in.

Each entry says how its workers are started (real subprocesses, the peer's own CLI), how
durable its broker is as configured here, and whether it has a bulk enqueue. Per-job
logging is turned down to warnings for every peer, so that no one pays for log lines the
others do not write.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

PY = sys.executable
REDIS_NOT_DURABLE = "not durable: Redis without persistence (save '' / appendonly no)"


@dataclass(frozen=True)
class PeerBench:
    """One peer in one configuration."""

    name: str
    module: str  # the bench.peers.tasks_* module: tasks + producer Client
    workers: str  # human description of the consumer side
    durability: str
    worker_argvs: tuple[tuple[str, ...], ...]  # one process per argv, each its own group
    env: dict[str, str] = field(default_factory=dict)
    needs_redis: bool = False
    has_bulk: bool = False
    # Producer processes used to queue an unmeasured backlog (drain, delayed). 1 for
    # SqliteHuey: four concurrent fsyncing writers exceed its 5 s lock timeout here.
    prefill_procs: int = 4
    skip: str | None = None  # reason for not running this peer at all


def _huey(kind: str, durability: str, redis: bool, prefill_procs: int = 4) -> PeerBench:
    return PeerBench(
        name=f"huey-{kind}",
        module="bench.peers.tasks_huey",
        workers="huey_consumer -k process -w 2 (default polling: -d 0.1 -m 10 -b 1.15, scheduler 1 s)",
        durability=durability,
        worker_argvs=(
            (PY, "-m", "huey.bin.huey_consumer", "bench.peers.tasks_huey.huey", "-k", "process", "-w", "2", "-q"),
        ),
        env={"BENCH_HUEY_KIND": kind},
        needs_redis=redis,
        prefill_procs=prefill_procs,
    )


def _rq(name: str, worker_class: str, desc: str) -> PeerBench:
    argv = (
        PY,
        "-m",
        "rq.cli",
        "worker",
        "--url",
        "{redis_url}",
        "--with-scheduler",
        "--worker-class",
        worker_class,
        "--logging_level",
        "WARNING",
        "--disable-job-desc-logging",
        "bench",
    )
    return PeerBench(
        name=name,
        module="bench.peers.tasks_rq",
        workers=desc,
        durability=REDIS_NOT_DURABLE,
        worker_argvs=(argv, argv),
        needs_redis=True,
        has_bulk=True,
    )


PEERS: dict[str, PeerBench] = {
    p.name: p
    for p in [
        _huey("file", "no fsync: FileHuey writes files without fsync (page cache only)", False),
        _huey("sqlite", "durable: SQLite WAL, synchronous=FULL (fsync per commit)", False, 1),
        _huey("redis", REDIS_NOT_DURABLE, True),
        PeerBench(
            name="celery-redis",
            module="bench.peers.tasks_celery",
            workers="celery worker -P prefork -c 2 (defaults: prefetch x4, early ack)",
            durability=REDIS_NOT_DURABLE,
            worker_argvs=(
                (
                    PY,
                    "-m",
                    "celery",
                    "-A",
                    "bench.peers.tasks_celery",
                    "worker",
                    "-P",
                    "prefork",
                    "-c",
                    "2",
                    "-l",
                    "WARNING",
                    "-Q",
                    "bench",
                    "-n",
                    "bench@%h",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                ),
            ),
            needs_redis=True,
        ),
        PeerBench(
            name="celery-fs",
            module="bench.peers.tasks_celery",
            workers="celery worker with kombu's filesystem transport",
            durability="n/a",
            worker_argvs=(),
            skip="skipped: kombu filesystem transport known <25 jobs/s (22 jobs/s reported);"
            " its drain alone would take ~15 min at N=20000",
        ),
        _rq("rq-fork", "rq.worker.Worker", "2 x rq worker (default Worker: fork per job)"),
        _rq("rq-simple", "rq.worker.SimpleWorker", "2 x rq worker -w SimpleWorker (no fork)"),
        PeerBench(
            name="dramatiq-redis",
            module="bench.peers.tasks_dramatiq",
            workers="dramatiq --processes 2 --threads 1 (2 processes x 1 thread)",
            durability=REDIS_NOT_DURABLE,
            worker_argvs=((PY, "-m", "dramatiq", "bench.peers.tasks_dramatiq", "--processes", "2", "--threads", "1"),),
            needs_redis=True,
        ),
    ]
}
