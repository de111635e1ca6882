"""``python -m bench.peers``: run the peers alone and print their table.

    python -m bench.peers [--quick] [--peer NAME ...] [--workload W ...] [--json out.json]
                          [--set KEY=VALUE ...]

The combined spoolq-vs-peers table is printed by the main harness; this CLI exists so the
peer half can be run, checked and timed on its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
from typing import Any

from bench.peers import DEFAULT_SCALE, PEERS, QUICK_SCALE, WORKLOADS, ensure_redis, run_peer

HEADERS = {
    "enqueue_1": "enqueue 1p",
    "enqueue_4": "enqueue 4p",
    "enqueue_bulk": "bulk enqueue",
    "drain": "drain 2w",
    "latency": "latency p50/p99",
    "delayed": "delayed late p50/p99, idle CPU",
}


def cell(r: dict[str, Any]) -> str:
    """Format one result for the table: the headline numbers, or why there are none."""
    status = r.get("status")
    if status == "skipped":
        reason = str(r.get("skipped", ""))
        return "n/a" if reason.startswith("n/a") else "skipped"
    if status == "error":
        return "error"
    mark = " (timeout)" if status == "timeout" else ""
    if "jobs_per_s" in r:
        return f"{r['jobs_per_s']:,.0f}/s{mark}"
    if "p50_ms" in r:
        return f"{r['p50_ms']:.1f}/{r['p99_ms']:.1f} ms{mark}"
    if "lateness_p50_ms" in r and "lateness_p99_ms" in r:
        return f"{r['lateness_p50_ms']:.0f}/{r['lateness_p99_ms']:.0f} ms, {r['idle_cpu_pct']:.1f}%{mark}"
    return "timeout" if status == "timeout" else "?"


def table(results: list[dict[str, Any]], workloads: list[str]) -> str:
    """A Markdown table: one row per peer, one column per workload, then durability."""
    peers = list(dict.fromkeys(r["peer"] for r in results))
    by = {(r["peer"], r["workload"]): r for r in results}
    head = ["peer", *(HEADERS[w] for w in workloads), "durability"]
    rows = [head, ["---"] * len(head)]
    for p in peers:
        rows.append([p, *(cell(by[(p, w)]) if (p, w) in by else "" for w in workloads), PEERS[p].durability])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def notes(results: list[dict[str, Any]]) -> str:
    """Every skip, timeout, error and extra number that the table cells leave out.

    A peer skipped as a whole gets one line, not one per workload.
    """
    lines = []
    seen_skips: set[tuple[str, str]] = set()
    for r in results:
        if r["status"] == "skipped":
            key = (r["peer"], str(r["skipped"]))
            if key not in seen_skips:
                seen_skips.add(key)
                lines.append(f"- {r['peer']}: {r['skipped']}")
            continue
        extra = {
            k: v
            for k, v in r.items()
            if k not in {"peer", "workload", "durability", "workers", "status", "traceback", "loadavg_1m_before"}
        }
        if r["status"] != "ok" or r["workload"] in {"drain", "latency", "delayed"}:
            shown = ", ".join(f"{k}={_fmt(v)}" for k, v in extra.items())
            lines.append(f"- {r['peer']} / {r['workload']}: {r['status']}: {shown}")
    return "\n".join(lines)


def _fmt(v: object) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def parse_set(items: list[str], base: dict[str, Any] = DEFAULT_SCALE) -> dict[str, Any]:
    """``KEY=VALUE`` overrides of the scale (keys of ``base``); values parsed as JSON."""
    out: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        if key not in base:
            raise SystemExit(f"unknown scale key {key!r}; known: {', '.join(base)}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the selected peers x workloads, print the table, optionally save JSON."""
    ap = argparse.ArgumentParser(
        prog="python -m bench.peers", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    ap.add_argument("--peer", action="append", choices=list(PEERS), help="repeatable")
    ap.add_argument("--workload", action="append", choices=list(WORKLOADS), help="repeatable")
    ap.add_argument("--json", metavar="FILE", help="also write all results as JSON")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one scale value, e.g. --set n_drain=5000",
    )
    args = ap.parse_args(argv)

    scale = {**(QUICK_SCALE if args.quick else DEFAULT_SCALE), **parse_set(args.set)}
    peers = args.peer or list(PEERS)
    workloads = args.workload or list(WORKLOADS)
    results: list[dict[str, Any]] = []
    t0 = time.monotonic()
    # SIGTERM/SIGHUP unwind like Ctrl-C, so that every child and Redis are still killed.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    with ensure_redis():
        for p in peers:
            for w in workloads:
                r = run_peer(p, w, scale)
                results.append(r)
                print(f"{p:15} {w:13} {r['status']:8} {cell(r):28} {r['seconds']:6.1f} s", file=sys.stderr, flush=True)
                if args.json:  # after each measurement: an interrupted run keeps its data
                    _save(args.json, scale, time.monotonic() - t0, results)
    total = time.monotonic() - t0
    load = os.getloadavg()
    print(table(results, workloads))
    print()
    print(notes(results))
    print(
        f"\n{len(results)} measurements in {total:.0f} s on {platform.node()}"
        f" ({platform.python_implementation()} {platform.python_version()}),"
        f" scale: {'quick' if args.quick else 'default'}"
        f"{' + ' + ', '.join(args.set) if args.set else ''};"
        f" load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
        f" ({os.cpu_count()} CPUs): other work on the host skews the numbers"
    )
    if args.json:
        _save(args.json, scale, total, results)
    return 0


def _save(path: str, scale: dict[str, Any], seconds: float, results: list[dict[str, Any]]) -> None:
    with open(path, "w") as fh:
        json.dump({"scale": scale, "seconds": seconds, "results": results}, fh, indent=1)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    sys.exit(main())
