"""The supervisor's CPU time per job while it drains a queue: a steadier figure than jobs/s.

    python bench/supervisor_cpu.py [--repo PATH] [-n 20000]

Enqueues N no-op jobs (fsync on), runs ``spoolq worker --burst -c 2`` on them and reads the
supervisor's utime + stime from /proc until it exits.  Wall-clock drain rates on a busy VM
swing by tens of percent between identical runs; the CPU the supervisor spends per job moves
far less, so two checkouts (``--repo``, e.g. a worktree of an older commit) compare fairly.
Linux only (/proc).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TASKS = "import spoolq\n\n\n@spoolq.task(name='bench.noop')\ndef noop():\n    pass\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("-n", type=int, default=20000, help="jobs to drain [20000]")
    args = parser.parse_args()
    repo = args.repo.resolve()
    sys.path.insert(0, str(repo))
    import spoolq

    tick = os.sysconf("SC_CLK_TCK")
    with tempfile.TemporaryDirectory(prefix="spoolq-cpu-") as d:
        spool = Path(d) / "spool"
        (Path(d) / "cpu_tasks.py").write_text(TASKS)
        spoolq.App(spool).send_many([("bench.noop", None, None) for _ in range(args.n)])
        env = {**os.environ, "PYTHONPATH": f"{repo}{os.pathsep}{d}"}
        cmd = [
            sys.executable,
            "-m",
            "spoolq",
            "--spool",
            str(spool),
            "worker",
            "--burst",
            "-c",
            "2",
            "-I",
            "cpu_tasks",
            "-l",
            "WARNING",
        ]
        started = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cpu_s = 0.0
        while proc.poll() is None:
            try:
                fields = Path(f"/proc/{proc.pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
                cpu_s = (int(fields[11]) + int(fields[12])) / tick
            except OSError:
                pass
            time.sleep(0.02)
        wall_s = time.monotonic() - started
        left = sum(len(os.listdir(spool / s)) for s in ("new", "ready", "active"))
    print(
        f"{repo.name}: {args.n} jobs in {wall_s:.2f} s ({args.n / wall_s:.0f}/s), supervisor CPU {cpu_s:.2f} s "
        f"= {1e6 * cpu_s / args.n:.0f} us/job, {left} left"
    )


if __name__ == "__main__":
    main()
