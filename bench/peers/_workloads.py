"""The six workloads, measured the same way for every peer.

Every workload runs in a fresh temp dir (probe files, file/SQLite storage, logs) and, for
Redis peers, on a flushed Redis, so no run sees another's leftovers. Every wait has a
deadline: a peer that stalls raises ``BenchTimeout`` (reported as "timeout", with the
partial numbers it reached) instead of hanging the run, and every child process is
killed by process group at the end whatever happened.

A finished workload's temp dir is not deleted but renamed into a graveyard (``bury``),
deleted once when the whole run ends (``empty_graveyards``, also run at exit), and every
measurement that times file creation first waits for creations to be cheap again
(``wait_disk_quiet``): deleting thousands of files makes file creation on the same ext4
slow (~20 µs -> ~1 ms) for a long while afterwards, so whoever was measured right after
a big delete paid for it.
"""

from __future__ import annotations

import atexit
import itertools
import json
import math
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.peers import _probe, _proc, _redis
from bench.peers._peers import PeerBench

REPO_ROOT = str(Path(__file__).resolve().parents[2])
FAR_FUTURE_S = 86_400.0  # "far future" delayed jobs are due in one day
WARMUP_JOBS = 4  # no-op jobs run before latency/delayed so every worker is up
POLL_S = 0.005


class BenchTimeout(Exception):
    """A workload hit its hard deadline; ``partial`` holds what was measured so far."""

    def __init__(self, message: str, partial: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.partial = partial or {}


# -- deferred deletion and the quiet-disk wait ------------------------------------------
#
# Measured on the dev VM (ext4 on /dev/vda, mounted with ``discard``, no journal): after a
# tree of a few thousand files is deleted -- even *empty* files, which free no data blocks,
# so not only discard is at play -- creating a file in the same directory tree costs
# ~0.5-1 ms instead of ~20 µs for tens of seconds (over 90 s in one test); renaming the
# tree away instead leaves creation fast. (Likely cause, not verified in the kernel source:
# without a journal, ext4 skips recently freed inodes one by one when it allocates one.)
# Hence nothing is deleted during a run, and the probe below never unlinks its files.

QUIET_CREATE_US = 100.0  # a disk is "quiet" when the median creation costs less than this
QUIET_MAX_WAIT_S = 20.0  # give up waiting after this long (the wait is recorded either way)
QUIET_EVERY_S = 0.25
QUIET_FILES = 20

_GRAVEYARDS: dict[str, str] = {}  # parent directory -> its graveyard, a sibling in it
_GRAVEYARD_PID = os.getpid()  # a forked child must not delete its parent's graveyards
_PROBE_SEQ = itertools.count()


def bury(path: str | os.PathLike[str]) -> None:
    """Rename ``path`` into this run's graveyard next to it; ``empty_graveyards`` deletes it.

    The graveyard is created in ``path``'s parent directory, so this is always a rename on
    one file system, never a copy: instant, and it frees nothing (no inode, no block).
    """
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    grave = _GRAVEYARDS.get(parent)
    if grave is None:
        grave = _GRAVEYARDS[parent] = tempfile.mkdtemp(prefix="bench-graveyard-", dir=parent)
    os.rename(path, os.path.join(grave, os.path.basename(path)))


def empty_graveyards() -> float:
    """Delete every graveyard of this run (once, at its very end); return the seconds taken."""
    t0 = time.monotonic()
    if os.getpid() == _GRAVEYARD_PID:
        while _GRAVEYARDS:
            shutil.rmtree(_GRAVEYARDS.popitem()[1], ignore_errors=True)
    return time.monotonic() - t0


atexit.register(empty_graveyards)  # also on an error or Ctrl-C (SIGTERM/SIGHUP: see __main__)


def wait_disk_quiet(
    scratch: str | os.PathLike[str], max_us: float = QUIET_CREATE_US, max_wait_s: float = QUIET_MAX_WAIT_S
) -> dict[str, float]:
    """Wait until creating a file in ``scratch`` is cheap; return the wait and the last cost.

    Every ``QUIET_EVERY_S`` seconds, times ``QUIET_FILES`` creations (open O_CREAT|O_EXCL +
    close) of empty files with fresh names, until their median is under ``max_us`` µs or
    ``max_wait_s`` has passed. The files are left in place (unlinking them would free
    inodes: the very thing that slows creation down); ``scratch`` should sit next to where
    the measurement creates its files and be buried with them. The same probe runs before
    every participant's measurement.
    """
    os.makedirs(scratch, exist_ok=True)
    t_start = time.monotonic()
    probes = 0
    while True:
        costs = []
        for _ in range(QUIET_FILES):
            path = os.path.join(scratch, f"{os.getpid()}-{next(_PROBE_SEQ)}")
            t = time.perf_counter()
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            costs.append(time.perf_counter() - t)
        probes += 1
        median_us = statistics.median(costs) * 1e6
        waited = time.monotonic() - t_start
        if median_us < max_us or waited >= max_wait_s:
            return {"quiet_wait_s": waited, "quiet_create_us": median_us, "quiet_probes": probes}
        time.sleep(QUIET_EVERY_S)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): an actual observed value, no interpolation."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Run:
    """One workload of one peer: its temp dir, environment and child processes."""

    peer: PeerBench
    scale: dict[str, Any]
    tmp: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="bench-peer-"))
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    quiet: dict[str, float] = field(default_factory=dict)  # the last quiet-disk wait

    def __post_init__(self) -> None:
        self.probe = os.path.join(self.tmp, "probe")
        os.makedirs(self.probe)
        os.makedirs(os.path.join(self.tmp, "store"))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO_ROOT, env.get("PYTHONPATH")]))
        env[_probe.PROBE_ENV] = self.probe
        env["BENCH_STORE_DIR"] = os.path.join(self.tmp, "store")
        env["BENCH_REDIS_URL"] = _redis.URL
        env.update(self.peer.env)
        self.env = env
        if self.peer.needs_redis:
            _redis.client().flushall()

    def close(self) -> None:
        """Kill every child (workers, producers, their descendants) and drop all state.

        The temp dir is buried (renamed into the graveyard), not deleted: see ``bury``.
        """
        _proc.kill_tree(self.procs)
        if self.peer.needs_redis:
            _redis.client().flushall()
        if not self.scale.get("keep_tmp"):
            try:
                bury(self.tmp)
            except OSError:  # cannot happen on one file system; never lose a result over it
                shutil.rmtree(self.tmp, ignore_errors=True)

    # -- children -------------------------------------------------------------------

    def _log(self, what: str) -> str:
        return os.path.join(self.tmp, f"{what}.log")

    def start_workers(self) -> float:
        """Start the peer's consumer processes; return the wall-clock time of the spawn."""
        t = time.time()
        for i, argv in enumerate(self.peer.worker_argvs):
            argv = tuple(a.replace("{redis_url}", _redis.URL) for a in argv)
            p = _proc.spawn(argv, self.env, self.tmp, self._log(f"worker{i}"))
            self.procs.append(p)
            self.workers.append(p)
        return t

    def check_workers(self) -> None:
        """Fail fast, with the log tail, if a worker died instead of timing out later."""
        for i, p in enumerate(self.workers):
            if p.poll() is not None:
                raise RuntimeError(f"worker {i} exited {p.returncode}: {self.tail(f'worker{i}')}")

    def tail(self, what: str, n: int = 600) -> str:
        """The end of a child's log, for error messages."""
        try:
            return Path(self._log(what)).read_text(errors="replace")[-n:].strip()
        except OSError:
            return ""

    def produce(
        self, cmd: dict[str, Any], procs: int = 1, budget: float | None = None, quiet: bool = False
    ) -> tuple[float, float, int]:
        """Run ``procs`` producer processes released together; return (t0, t1, jobs).

        t0 is the earliest start and t1 the latest end of the enqueue loops, so the rate
        is the aggregate throughput of all producers. With ``quiet``, once every producer
        is ready, wait for a quiet disk (``wait_disk_quiet``, result in ``self.quiet``,
        not counted in the budget) before releasing them.
        """
        budget = self.scale["timeout_s"] if budget is None else budget
        deadline = time.monotonic() + budget
        started: list[tuple[subprocess.Popen[bytes], str]] = []
        for i in range(procs):
            log = f"producer-{cmd['mode']}-{i}"
            p = _proc.spawn(
                [_PY, "-m", "bench.peers.producer", self.peer.module, json.dumps(cmd)],
                self.env,
                self.tmp,
                self._log(log),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            self.procs.append(p)
            started.append((p, log))
        for p, log in started:
            if _readline(p, deadline) != "ready":
                raise RuntimeError(f"producer failed to start: {self.tail(log)}")
        if quiet:
            self.wait_quiet()
            deadline += self.quiet["quiet_wait_s"]
        for p, _ in started:
            assert p.stdin is not None
            p.stdin.write(b"go\n")
            p.stdin.flush()
        results = []
        for p, log in started:
            line = _readline(p, deadline)
            if not line:
                raise RuntimeError(f"producer failed: {self.tail(log)}")
            results.append(json.loads(line))
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        return (min(r["t0"] for r in results), max(r["t1"] for r in results), sum(r["n"] for r in results))

    def wait_quiet(self) -> None:
        """``wait_disk_quiet`` in this workload's temp dir, limits from the scale."""
        self.quiet = wait_disk_quiet(
            os.path.join(self.tmp, "quiet"),
            float(self.scale.get("quiet_create_us", QUIET_CREATE_US)),
            float(self.scale.get("quiet_max_wait_s", QUIET_MAX_WAIT_S)),
        )

    def prefill_noop(self, n: int) -> None:
        """Queue ``n`` no-op jobs before the workers start (not measured)."""
        if self.peer.has_bulk:
            self.produce({"mode": "bulk", "n": n, "batch": 1000}, budget=self.prefill_budget)
        else:
            k = self.peer.prefill_procs
            self.produce({"mode": "noop", "n": _ceil_div(n, k)}, procs=k, budget=self.prefill_budget)

    @property
    def prefill_budget(self) -> float:
        """Queueing work up front gets its own deadline, separate from the measurement."""
        return float(self.scale.get("prefill_timeout_s", self.scale["timeout_s"]))

    def wait_done(self, n: int, deadline: float) -> tuple[float | None, float]:
        """Wait for ``n`` no-op completions; return (time of first, time of n-th)."""
        first: float | None = None
        last_check = 0.0
        while True:
            done = _probe.done_count(self.probe)
            now = time.time()
            if first is None and done > 0:
                first = now
            if done >= n:
                return first, now
            if time.monotonic() > deadline:
                raise BenchTimeout(f"{done}/{n} jobs done", {"done": done, "first": first})
            if now - last_check > 1:
                self.check_workers()
                last_check = now
            time.sleep(POLL_S)

    def warm_up(self, deadline: float) -> None:
        """Run a few no-op jobs so the consumers are surely up before timing anything."""
        self.produce({"mode": "noop", "n": WARMUP_JOBS})
        self.wait_done(WARMUP_JOBS, deadline)
        time.sleep(float(self.scale.get("warmup_pause_s", 0.3)))

    def wait_stamps(self, n: int, deadline: float) -> list[tuple[float, float]]:
        """Wait until ``n`` stamp jobs have started; return their (ref, start) records."""
        last_check = 0.0
        while True:
            stamps = _probe.read_stamps(self.probe)
            if len(stamps) >= n:
                return stamps
            if time.monotonic() > deadline:
                raise BenchTimeout(f"{len(stamps)}/{n} jobs started", {"stamps": stamps})
            if time.time() - last_check > 1:
                self.check_workers()
                last_check = time.time()
            time.sleep(0.02)

    def worker_cpu(self) -> float:
        """CPU seconds used so far by all consumer processes and their children."""
        return _proc.tree_cpu_seconds([p.pid for p in self.workers])


_PY = sys.executable


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _readline(p: subprocess.Popen[bytes], deadline: float) -> str:
    """One line from a child's stdout, or BenchTimeout at the deadline ("" on EOF)."""
    assert p.stdout is not None
    fd = p.stdout.fileno()
    buf = b""
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise BenchTimeout("producer did not answer in time")
        ready, _, _ = select.select([fd], [], [], min(left, 1.0))
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                return buf.decode().strip()
            buf += chunk
    return buf.decode().strip()


# -- workloads ------------------------------------------------------------------------


def enqueue_1(run: Run) -> dict[str, Any]:
    """One producer process, one job per call, no consumer running."""
    t0, t1, n = run.produce({"mode": "noop", "n": run.scale["n_enqueue"]}, quiet=True)
    return {"jobs_per_s": n / (t1 - t0), "jobs": n, **run.quiet}


def enqueue_4(run: Run) -> dict[str, Any]:
    """Four producer processes released together; total jobs over the common wall time."""
    t0, t1, n = run.produce({"mode": "noop", "n": run.scale["n_enqueue"]}, procs=4, quiet=True)
    return {"jobs_per_s": n / (t1 - t0), "jobs": n, "producers": 4, **run.quiet}


def enqueue_bulk(run: Run) -> dict[str, Any]:
    """The peer's own bulk call, in batches of ``bulk_batch`` jobs."""
    if not run.peer.has_bulk:
        return {"skipped": "n/a: no bulk enqueue API"}
    batch = int(run.scale.get("bulk_batch", 500))
    t0, t1, n = run.produce({"mode": "bulk", "n": run.scale["n_enqueue"], "batch": batch}, quiet=True)
    return {"jobs_per_s": n / (t1 - t0), "jobs": n, "batch": batch, **run.quiet}


def drain(run: Run) -> dict[str, Any]:
    """Pre-queue N no-op jobs, then time from worker spawn to the N-th completion.

    ``jobs_per_s`` counts from the spawn, as the issue asks, so it includes the consumer's
    start-up; ``jobs_per_s_running`` counts from the first completion, to separate the two.
    """
    n = int(run.scale["n_drain"])
    run.prefill_noop(n)
    deadline = time.monotonic() + run.scale["timeout_s"]
    t_spawn = run.start_workers()
    try:
        first, t_end = run.wait_done(n, deadline)
    except BenchTimeout as e:
        done = int(e.partial["done"])
        elapsed = time.time() - t_spawn
        e.partial = {
            "jobs_per_s": done / elapsed,
            "jobs": done,
            "note": f"partial: {done}/{n} done when the {elapsed:.0f} s budget ran out",
        }
        raise
    assert first is not None
    out = {"jobs_per_s": n / (t_end - t_spawn), "jobs": n, "startup_s": first - t_spawn}
    if t_end > first and n > 1:
        out["jobs_per_s_running"] = (n - 1) / (t_end - first)
    return out


def latency(run: Run) -> dict[str, Any]:
    """Idle consumer; jobs sent one at a time ~``latency_pause_s`` apart; start - enqueue."""
    n = int(run.scale["n_latency"])
    deadline = time.monotonic() + run.scale["timeout_s"]
    run.start_workers()
    run.warm_up(deadline)
    # the enqueue (a file creation for the file-based peers) is inside start - ref: quiet disk
    run.produce({"mode": "latency", "n": n, "pause": run.scale["latency_pause_s"]}, quiet=True)
    stamps = run.wait_stamps(n, deadline + run.quiet["quiet_wait_s"])
    lat = [(start - ref) * 1000 for ref, start in stamps]
    return {
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
        "max_ms": max(lat),
        "jobs": len(lat),
        **run.quiet,
    }


def _wait_quiet(run: Run, deadline: float) -> float:
    """Wait until the consumers stop digesting the backlog (CPU < 10 % over a sample).

    Some peers (Celery, Dramatiq) pull delayed jobs into worker memory at start-up; the
    soon-due jobs should meet a consumer in its steady state, as in production.
    """
    t_start = time.monotonic()
    limit = min(deadline, t_start + float(run.scale.get("settle_max_s", 30)))
    sample = float(run.scale.get("settle_sample_s", 0.5))
    while time.monotonic() < limit:
        c0 = run.worker_cpu()
        time.sleep(sample)
        if (run.worker_cpu() - c0) / sample < 0.10:
            break
    return time.monotonic() - t_start


def delayed(run: Run) -> dict[str, Any]:
    """Lateness of a few soon-due jobs among many far-future ones, then idle CPU.

    Far-future jobs are queued first (not measured), then the consumer starts, warms up and
    settles; then ``n_soon`` jobs due ``soon_lead_s`` .. ``soon_lead_s + soon_window_s``
    from now are sent and lateness = start - due is recorded. Once they have all run, only
    far-future jobs are left, and the consumers' CPU is sampled from /proc over
    ``idle_window_s`` (all their processes and children; Redis' own CPU separately).
    """
    n_far, n_soon = int(run.scale["n_delayed_far"]), int(run.scale["n_delayed_soon"])
    k = run.peer.prefill_procs
    run.produce(
        {"mode": "far", "n": _ceil_div(n_far, k), "eta": time.time() + FAR_FUTURE_S}, procs=k, budget=run.prefill_budget
    )
    deadline = time.monotonic() + run.scale["timeout_s"]
    run.start_workers()
    try:
        run.warm_up(deadline)
    except BenchTimeout as e:
        e.args = (
            f"warm-up: {e} in time: the consumer was still busy with the"
            f" {n_far} far-future jobs queued before it started",
        )
        raise
    settle_s = _wait_quiet(run, deadline)
    run.produce({"mode": "soon", "n": n_soon, "lead": run.scale["soon_lead_s"], "window": run.scale["soon_window_s"]})
    c_wait, t_wait = run.worker_cpu(), time.time()
    try:
        stamps = run.wait_stamps(n_soon, deadline)
    except BenchTimeout as e:
        got = e.partial.get("stamps", [])
        busy = 100 * (run.worker_cpu() - c_wait) / (time.time() - t_wait)
        e.partial = {
            "note": f"only {len(got)}/{n_soon} soon-due jobs ran in time",
            "settle_s": settle_s,
            "consumer_cpu_pct_while_waiting": busy,
        }
        if got:
            late = [(s - due) * 1000 for due, s in got]
            e.partial.update(lateness_p50_ms=percentile(late, 50))
        raise
    late = [(start - due) * 1000 for due, start in stamps]
    out: dict[str, Any] = {
        "lateness_p50_ms": percentile(late, 50),
        "lateness_p99_ms": percentile(late, 99),
        "early_max_ms": max(0.0, -min(late)),
        "settle_s": settle_s,
        "far_jobs": n_far,
        "soon_jobs": n_soon,
    }
    window = float(run.scale["idle_window_s"])
    redis_pid = _redis.server_pid() if run.peer.needs_redis else None
    c0, r0, t0 = run.worker_cpu(), _proc.cpu_seconds([redis_pid] if redis_pid else []), time.time()
    time.sleep(window)
    c1, r1, t1 = run.worker_cpu(), _proc.cpu_seconds([redis_pid] if redis_pid else []), time.time()
    out["idle_cpu_pct"] = 100 * (c1 - c0) / (t1 - t0)
    if redis_pid:
        out["broker_idle_cpu_pct"] = 100 * (r1 - r0) / (t1 - t0)
    out["idle_window_s"] = t1 - t0
    ran_early = _probe.done_count(run.probe) - WARMUP_JOBS
    if ran_early:
        out["far_jobs_ran_early"] = ran_early
    return out


WORKLOADS = {
    "enqueue_1": enqueue_1,
    "enqueue_4": enqueue_4,
    "enqueue_bulk": enqueue_bulk,
    "drain": drain,
    "latency": latency,
    "delayed": delayed,
}
