"""Enqueue throughput of one producer, against the file system's own limit, in one run.

Cases (each in a fresh spool in a temporary directory):

- ``send_task``: one job per call, acknowledged when durable (fsync on) or when renamed (off);
- ``send_many``: the same N jobs in one bulk call (one durability barrier);
- ``bare fs``: what any Maildir-style writer must do per job, without spoolq: create a small
  file in tmp/, write, fsync it, rename it into new/, fsync new/ (or the same without the
  fsyncs) — the ceiling the per-call cases are compared with.

Before each case the disk is left to quiet down (``bench.peers._workloads.wait_disk_quiet``),
and each case's directory is renamed into a graveyard deleted only when the run ends
(``bury``): deleting thousands of files makes file creation slow for a long while after,
which would be charged to the next case.

Usage::

    python bench/enqueue.py              # N = 2000, best of 3 rounds
    python bench/enqueue.py -n 10000 --dir /var/tmp    # measure another file system
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (python bench/enqueue.py): import bench.peers
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.peers._workloads import (  # noqa: E402
    QUIET_CREATE_US,
    QUIET_MAX_WAIT_S,
    bury,
    empty_graveyards,
    wait_disk_quiet,
)
from spoolq import App  # noqa: E402

PAYLOAD = ["Hello World", {"n": 1, "tags": ["a", "b"]}]


def bare_fs(root: Path, n: int, fsync: bool) -> None:
    """N small files through tmp/ → new/ with the syscalls a durable enqueue needs, no spoolq."""
    tmp, new = root / "tmp", root / "new"
    tmp.mkdir(parents=True)
    new.mkdir()
    body = json.dumps({"v": 1, "task": "NAME.echofunction", "args": PAYLOAD}).encode() + b"\n"
    dir_fd = os.open(new, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(n):
            path = f"{tmp}/{i}"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, body)
            if fsync:
                os.fsync(fd)
            os.close(fd)
            os.rename(path, f"{new}/{i}.json")
            if fsync:
                os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def per_call(root: Path, n: int, fsync: bool) -> None:
    app = App(root, fsync=fsync)
    for _ in range(n):
        app.send_task("NAME.echofunction", PAYLOAD)


def bulk(root: Path, n: int, fsync: bool) -> None:
    App(root, fsync=fsync).send_many([("NAME.echofunction", PAYLOAD, None)] * n)


def measure(
    base: Path,
    name: str,
    fn: Callable[[Path, int, bool], None],
    n: int,
    fsync: bool,
    quiet_us: float = QUIET_CREATE_US,
    quiet_max_s: float = QUIET_MAX_WAIT_S,
) -> tuple[float, dict[str, Any]]:
    """Seconds to run ``fn`` once on a fresh directory in ``base``, and the quiet-disk wait.

    Waits for a quiet disk first (``wait_disk_quiet``, probing next to the spool), checks
    that N files landed, then buries the directory (deleted when the run ends).
    """
    case = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))
    quiet = wait_disk_quiet(case / "quiet", quiet_us, quiet_max_s)
    root = case / "spool"
    t0 = time.perf_counter()
    fn(root, n, fsync)
    elapsed = time.perf_counter() - t0
    landed = len(os.listdir(root / "new"))
    if landed != n:
        raise SystemExit(f"{name}: expected {n} files in new/, found {landed}")
    bury(case)
    return elapsed, quiet


CASES: list[tuple[str, Callable[[Path, int, bool], None]]] = [
    ("bare fs (tmp→rename→new)", bare_fs),
    ("send_task, one per call", per_call),
    ("send_many, one bulk call", bulk),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=2000, help="jobs per case (default 2000)")
    parser.add_argument("-r", "--repeat", type=int, default=3, help="rounds; the best time of each case counts")
    parser.add_argument("--dir", default=None, help="where to make the temporary spools (default: system temp)")
    args = parser.parse_args()
    for sig in (signal.SIGTERM, signal.SIGHUP):  # unwind like Ctrl-C: the finally still cleans up
        signal.signal(sig, _interrupt)
    base = Path(tempfile.mkdtemp(prefix="spoolq-bench-", dir=args.dir))
    best: dict[tuple[str, bool], float] = {}
    waits: list[float] = []
    try:
        for _ in range(args.repeat):  # rounds interleave the cases, so a busy moment hits them all alike
            for fsync in (True, False):
                for label, fn in CASES:
                    seconds, quiet = measure(base, label.split(",")[0].split()[0], fn, args.n, fsync)
                    best[label, fsync] = min(seconds, best.get((label, fsync), seconds))
                    waits.append(quiet["quiet_wait_s"])
    finally:
        empty_graveyards()  # the cases' directories, once, at the end
        shutil.rmtree(base, ignore_errors=True)
    print(f"enqueue: N={args.n} jobs per case, one producer, best of {args.repeat}, in {base.parent}")
    print(f"waited for a quiet disk before each case: {sum(waits):.1f} s in all, at most {max(waits):.1f} s")
    print(f"{'case':<26} {'fsync':<5} {'seconds':>8} {'jobs/s':>9} {'of bare fs':>10}")
    for fsync in (True, False):
        bare = best[CASES[0][0], fsync]
        for label, _ in CASES:
            seconds = best[label, fsync]
            print(
                f"{label:<26} {'on' if fsync else 'off':<5} {seconds:>8.3f} {args.n / seconds:>9.0f} "
                f"{bare / seconds:>9.2f}x"
            )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    main()
