"""Producer subprocess: enqueues jobs through one peer's public client API.

Run as ``python -m bench.peers.producer MODULE COMMAND_JSON``. Producers are separate
processes (never the harness itself) because the peers configure themselves at import time
from the environment, and because the 4-producer workload needs real processes anyway.

Protocol on stdout/stdin, so that import and connection time are not measured and several
producers can be released together: the producer prints ``ready``, waits for one line on
stdin, does its work, and prints one JSON line ``{"t0": .., "t1": .., "n": ..}`` with the
wall-clock time around the enqueue loop only.

Modes (``COMMAND_JSON["mode"]``):

* ``noop``: ``n`` one-job enqueue calls of the no-op task;
* ``bulk``: ``n`` no-op jobs through the peer's bulk call in batches of ``batch``;
* ``far``: ``n`` no-op jobs due at ``eta`` (far in the future);
* ``latency``: ``n`` stamp jobs carrying their enqueue time, one every ``pause`` seconds
  (jittered +/-50 %, seeded, so a polling consumer's period cannot phase-lock with us);
* ``soon``: ``n`` stamp jobs due at ``start + lead + i * window / n``, carrying that due time.
"""

from __future__ import annotations

import importlib
import json
import random
import sys
import time
from typing import Any


def run(client: Any, cmd: dict[str, Any]) -> int:
    """Execute one command; return how many jobs were enqueued."""
    mode = cmd["mode"]
    n = int(cmd["n"])
    if mode == "noop":
        for _ in range(n):
            client.send_noop()
    elif mode == "bulk":
        batch = int(cmd.get("batch", 500))
        left = n
        while left > 0:
            k = min(batch, left)
            client.bulk(k)
            left -= k
    elif mode == "far":
        eta = float(cmd["eta"])
        for _ in range(n):
            client.send_noop_at(eta)
    elif mode == "latency":
        pause = float(cmd["pause"])
        rng = random.Random(1234)
        for _ in range(n):
            client.send_stamp(time.time())
            time.sleep(pause * rng.uniform(0.5, 1.5))
    elif mode == "soon":
        start = time.time() + float(cmd["lead"])
        window = float(cmd["window"])
        for i in range(n):
            due = start + i * window / n
            client.send_stamp_at(due, due)
    else:
        raise ValueError(f"unknown mode {mode!r}")
    return n


def main(argv: list[str]) -> int:
    """Import the peer module, say ready, wait for go, enqueue, report timings."""
    module = importlib.import_module(argv[0])
    cmd = json.loads(argv[1])
    client = module.Client()
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.time()
    n = run(client, cmd)
    t1 = time.time()
    print(json.dumps({"t0": t0, "t1": t1, "n": n}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
