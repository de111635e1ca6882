"""Benchmark of ``spoolq worker`` with real processes: throughput, latency, idle cost, memory.

    python bench/worker.py [--quick] [--jobs N] [--probes N] [--delayed N] [--window S] [--json FILE]

1. drain: enqueue N no-op jobs (fsync on, the default), then time ``spoolq worker -c 2
   --burst --loglevel WARNING`` from its start until it exits with the spool empty.  Reported
   as jobs/s over the whole run and over the run minus an empty burst's start-up and exit.
2. latency: one idle ``spoolq worker -c 2``; a producer sends ~300 jobs one at a time with
   small pauses, each carrying its enqueue time (taken just before ``send_task``); the task
   notes ``time.time()`` as it starts.  Reported: p50 and p99 of start - enqueue, in ms.
3. idle: 100 000 jobs delayed by an hour; once the supervisor has taken them in and settled,
   its CPU use (utime + stime from /proc/PID/stat) over a window of ~10 s, in percent of one
   core.
4. memory: the supervisor's peak RSS (VmHWM from /proc/PID/status) in each phase.

The tasks are in this file; the worker imports it as ``worker`` (``-I worker``, with bench/
on PYTHONPATH).  Linux only (/proc).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import spoolq

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


@spoolq.task(name="bench.noop")
def noop() -> None:
    """Nothing: the cost measured is spoolq's."""


@spoolq.task(name="bench.stamp")
def stamp(path: str, n: int, enqueued: float) -> None:
    """Note ``n enqueued started`` with one O_APPEND write, first thing."""
    started = time.time()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, f"{n} {enqueued!r} {started!r}\n".encode())
    finally:
        os.close(fd)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOLQ_")}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _worker(spool: Path, *args: str, log: Path) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "spoolq",
        "--spool",
        str(spool),
        "worker",
        "-c",
        "2",
        "-I",
        "worker",
        "--loglevel",
        "WARNING",
        *args,
    ]
    with open(log, "wb") as f:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=f, env=_env(), cwd=spool.parent)


def _wait_until(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out waiting for {what}")
        time.sleep(0.01)


def _ready(spool: Path) -> bool:
    # The worker writes its pid into spoolq.lock once it holds the spool; the pool is up soon
    # after.  "Ready" for the bench: the lock is held and new/ is empty.
    return spoolq.App(spool).spool.lock().is_held() and not os.listdir(spool / "new")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _hwm_kib(pid: int, key: str = "VmHWM") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(60)


def bench_drain(root: Path, jobs: int) -> dict:
    empty = root / "empty"
    spoolq.App(empty).spool.ensure()
    t0 = time.perf_counter()
    _worker(empty, "--burst", log=root / "empty.log").wait(120)
    startup = time.perf_counter() - t0

    spool = root / "drain"
    app = spoolq.App(spool)  # fsync on
    t0 = time.perf_counter()
    for start in range(0, jobs, 1000):
        app.send_many([("bench.noop", None, None) for _ in range(min(1000, jobs - start))])
    enqueue_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    proc = _worker(spool, "--burst", log=root / "drain.log")
    hwm = 0
    while proc.poll() is None:
        try:
            hwm = max(hwm, _hwm_kib(proc.pid))
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    left = sum(len(os.listdir(spool / s)) for s in ("new", "ready", "active", "delayed", "failed"))
    if proc.returncode != 0 or left:
        raise SystemExit(f"bench: drain failed (status {proc.returncode}, {left} left); see {root / 'drain.log'}")
    return {
        "jobs": jobs,
        "enqueue_s": enqueue_s,
        "wall_s": wall,
        "startup_s": startup,
        "jobs_per_s": jobs / wall,
        "jobs_per_s_steady": jobs / max(1e-9, wall - startup),
        "peak_rss_kib": hwm,
    }


def bench_latency(root: Path, probes: int) -> dict:
    spool = root / "latency"
    app = spoolq.App(spool)
    notes = root / "latency.notes"
    proc = _worker(spool, log=root / "latency.log")
    try:
        _wait_until(lambda: _ready(spool), 60, "the worker")
        time.sleep(1.0)  # let it settle: idle means idle
        returned = []
        for n in range(probes):
            app.send_task("bench.stamp", args=[str(notes), n, time.time()])
            returned.append(time.time())  # the enqueue is durable (acknowledged) here
            time.sleep(0.02 + (n % 5) * 0.01)
        _wait_until(lambda: notes.exists() and len(notes.read_text().splitlines()) >= probes, 60, "the probes")
        hwm = _hwm_kib(proc.pid)
    finally:
        _stop(proc)
    rows = [ln.split() for ln in notes.read_text().splitlines()]
    lat = sorted((float(s) - float(e)) * 1000 for _, e, s in rows)
    acked = sorted((float(s) - returned[int(n)]) * 1000 for n, _, s in rows)
    return {
        "probes": probes,
        "p50_ms": statistics.median(lat),
        "p99_ms": _p99(lat),
        "max_ms": lat[-1],
        "ack_p50_ms": statistics.median(acked),
        "ack_p99_ms": _p99(acked),
        "peak_rss_kib": hwm,
    }


def _p99(values: list[float]) -> float:
    return values[min(len(values) - 1, int(len(values) * 0.99))]


def bench_idle(root: Path, delayed: int, window_s: float) -> dict:
    spool = root / "idle"
    app = spoolq.App(spool, fsync=False)  # setup only; the worker runs with fsync on
    for start in range(0, delayed, 5000):
        app.send_many([{"name": "bench.noop", "countdown": 3600} for _ in range(min(5000, delayed - start))])
    proc = _worker(spool, log=root / "idle.log")
    try:
        t0 = time.perf_counter()
        _wait_until(lambda: _ready(spool), 600, "the delayed jobs taken in")
        ingest_s = time.perf_counter() - t0
        _wait_until(lambda: len(os.listdir(spool / "delayed")) >= delayed, 600, "delayed/ filled")
        time.sleep(2.0)  # settled
        c0, t0 = _cpu_s(proc.pid), time.perf_counter()
        time.sleep(window_s)
        c1, t1 = _cpu_s(proc.pid), time.perf_counter()
        hwm, rss = _hwm_kib(proc.pid), _hwm_kib(proc.pid, "VmRSS")
    finally:
        _stop(proc)
    return {
        "rss_kib": rss,
        "delayed": delayed,
        "ingest_s": ingest_s,
        "window_s": t1 - t0,
        "cpu_percent": 100 * (c1 - c0) / (t1 - t0),
        "peak_rss_kib": hwm,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small N for a smoke run (2000 / 100 / 10000 / 3 s)")
    ap.add_argument("--jobs", type=int, help="jobs to drain [20000]")
    ap.add_argument("--probes", type=int, help="latency probes [300]")
    ap.add_argument("--delayed", type=int, help="delayed jobs for the idle test [100000]")
    ap.add_argument("--window", type=float, help="seconds of idle CPU measurement [10]")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the spools and logs (printed path)")
    a = ap.parse_args()
    q = a.quick
    jobs = a.jobs or (2000 if q else 20000)
    probes = a.probes or (100 if q else 300)
    delayed = a.delayed or (10000 if q else 100000)
    window = a.window or (3.0 if q else 10.0)
    root = Path(tempfile.mkdtemp(prefix="spoolq-bench-"))
    print(
        f"spoolq {spoolq.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"{platform.system()} {platform.release()}; spools in {root}",
        flush=True,
    )
    results = {"drain": bench_drain(root, jobs)}
    d = results["drain"]
    print(
        f"drain     {d['jobs']} no-op jobs, -c 2, fsync on: {d['jobs_per_s']:.0f} jobs/s "
        f"({d['wall_s']:.2f} s incl. {d['startup_s']:.2f} s start+exit of an empty burst; "
        f"{d['jobs_per_s_steady']:.0f} jobs/s without it); enqueue took {d['enqueue_s']:.2f} s",
        flush=True,
    )
    results["latency"] = bench_latency(root, probes)
    lt = results["latency"]
    print(
        f"latency   enqueue -> start, idle worker, {lt['probes']} jobs one at a time: "
        f"p50 {lt['p50_ms']:.2f} ms, p99 {lt['p99_ms']:.2f} ms, max {lt['max_ms']:.2f} ms; "
        f"from send_task's return (the durable enqueue): p50 {lt['ack_p50_ms']:.2f} ms, "
        f"p99 {lt['ack_p99_ms']:.2f} ms",
        flush=True,
    )
    results["idle"] = bench_idle(root, delayed, window)
    i = results["idle"]
    print(
        f"idle      {i['delayed']} delayed jobs: supervisor CPU {i['cpu_percent']:.2f} % over {i['window_s']:.1f} s "
        f"(taking them in took {i['ingest_s']:.1f} s)",
        flush=True,
    )
    print(
        f"memory    supervisor peak RSS (VmHWM): drain {d['peak_rss_kib'] / 1024:.1f} MiB, "
        f"latency {lt['peak_rss_kib'] / 1024:.1f} MiB, idle with {i['delayed']} delayed "
        f"{i['peak_rss_kib'] / 1024:.1f} MiB (VmRSS once settled {i['rss_kib'] / 1024:.1f} MiB)",
        flush=True,
    )
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    if not a.keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
