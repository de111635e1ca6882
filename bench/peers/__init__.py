"""The peers' half of the spoolq benchmark: Huey, Celery, RQ and Dramatiq on this host.

Public interface, used by the harness that also runs spoolq and prints the combined table:

* ``PEERS``: name -> ``PeerBench`` (configuration, durability, how workers start);
* ``WORKLOADS``: the workload names, in table order;
* ``DEFAULT_SCALE`` / ``QUICK_SCALE``: the sizes of a full run and of a smoke test;
* ``run_peer(name, workload, scale) -> dict``: one measurement, never raises for a peer
  that fails or stalls, never leaves a process behind;
* ``ensure_redis()``: context manager that installs/starts the benchmark Redis once for a
  whole run (``run_peer`` also enters it itself, so using it is an optimisation).

Every result dict has ``status`` ("ok", "skipped", "timeout" or "error"), ``peer``,
``workload``, ``durability``, ``workers`` and ``seconds`` (wall time of the measurement,
set-up included), plus the numbers: ``jobs_per_s`` (enqueue_*, drain), ``p50_ms`` /
``p99_ms`` (latency), ``lateness_p50_ms`` / ``lateness_p99_ms`` / ``idle_cpu_pct``
(delayed). A skipped result also has ``skipped``, a failed one ``timeout`` or ``error``
(the reason), with whatever partial numbers were reached.
"""

from __future__ import annotations

import os
import time
import traceback
from typing import Any

from bench.peers._peers import PEERS, PeerBench
from bench.peers._redis import ensure_redis
from bench.peers._workloads import WORKLOADS as _WORKLOAD_FUNCS
from bench.peers._workloads import BenchTimeout, Run

__all__ = ["DEFAULT_SCALE", "PEERS", "QUICK_SCALE", "WORKLOADS", "PeerBench", "ensure_redis", "run_peer"]

WORKLOADS: tuple[str, ...] = tuple(_WORKLOAD_FUNCS)

#: A full run: the sizes the issue asks for (delayed: 20 000 far-future jobs here; pass
#: ``n_delayed_far=100_000`` to match spoolq's run, at the cost of a longer prefill).
DEFAULT_SCALE: dict[str, Any] = {
    "n_enqueue": 2000,  # jobs per producer process
    "bulk_batch": 500,
    "n_drain": 20_000,
    "n_latency": 200,
    "latency_pause_s": 0.05,
    "n_delayed_far": 20_000,
    "n_delayed_soon": 100,
    "soon_lead_s": 2.0,
    "soon_window_s": 1.0,
    "idle_window_s": 5.0,
    "settle_max_s": 20.0,
    "settle_sample_s": 0.5,
    "warmup_pause_s": 0.3,
    # Hard limit for the measured part of a workload. 60 s, not more, keeps a full run of
    # all peers under 15 min although several of them do hit it (drain, delayed); a peer
    # that does is reported with the partial rate it reached. Raise it with --set.
    "timeout_s": 60.0,
    "prefill_timeout_s": 120.0,  # separate limit for queueing the backlog up front
}

#: A smoke test: every code path, tiny sizes, the whole peer run in well under a minute.
QUICK_SCALE: dict[str, Any] = {
    **DEFAULT_SCALE,
    "n_enqueue": 50,
    "bulk_batch": 25,
    "n_drain": 100,
    "n_latency": 10,
    "latency_pause_s": 0.02,
    "n_delayed_far": 200,
    "n_delayed_soon": 5,
    "soon_lead_s": 0.3,
    "soon_window_s": 0.2,
    "idle_window_s": 0.3,
    "settle_max_s": 1.0,
    "settle_sample_s": 0.2,
    "warmup_pause_s": 0.1,
    "timeout_s": 20.0,
    "prefill_timeout_s": 20.0,
}


def run_peer(name: str | PeerBench, workload: str, scale: dict[str, Any] | None = None) -> dict[str, Any]:
    """Measure one workload for one peer and return its numbers (see the module doc).

    ``name`` is a key of ``PEERS``, or a ``PeerBench`` not in it (how the main harness
    measures spoolq itself with this same workload code). ``scale`` overrides keys of
    ``DEFAULT_SCALE``. Failures are returned, not raised, so one broken peer cannot cost
    the rest of the table.
    """
    if isinstance(name, PeerBench):
        peer, name = name, name.name
    elif name not in PEERS:
        raise KeyError(f"unknown peer {name!r}; known: {', '.join(PEERS)}")
    else:
        peer = PEERS[name]
    if workload not in _WORKLOAD_FUNCS:
        raise KeyError(f"unknown workload {workload!r}; known: {', '.join(WORKLOADS)}")
    full_scale = {**DEFAULT_SCALE, **(scale or {})}
    base: dict[str, Any] = {"peer": name, "workload": workload, "durability": peer.durability, "workers": peer.workers}
    if peer.skip:
        return {**base, "status": "skipped", "skipped": peer.skip, "seconds": 0.0}
    t0 = time.monotonic()
    # Other work on this 2-core host skews every number: record how busy it was.
    base["loadavg_1m_before"] = round(os.getloadavg()[0], 2)
    try:
        if peer.needs_redis:
            with ensure_redis():
                result = _run(peer, workload, full_scale)
        else:
            result = _run(peer, workload, full_scale)
    except BenchTimeout as e:
        result = {**e.partial, "status": "timeout", "timeout": str(e)}
    except Exception as e:  # noqa: BLE001 - report any peer failure in the table
        result = {"status": "error", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=3)}
    result.setdefault("status", "skipped" if "skipped" in result else "ok")
    return {**base, **result, "seconds": round(time.monotonic() - t0, 2)}


def _run(peer: PeerBench, workload: str, scale: dict[str, Any]) -> dict[str, Any]:
    """Run one workload in its own temp dir, always cleaning up children and state."""
    run = Run(peer, scale)
    try:
        return _WORKLOAD_FUNCS[workload](run)
    finally:
        run.close()
