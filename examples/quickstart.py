"""spoolq in one minute: enqueue 20 jobs into ./spool, run a worker until they are done, look.

Run it from anywhere (``pip install -e .`` is all it needs)::

    python examples/quickstart.py

It enqueues 20 jobs of the tasks in ``quickstart_tasks.py``: 12 that succeed, 6 that fail for
a while and are retried after short waits, 2 that fail for good.  Then it runs
``spoolq worker --burst`` (which exits once nothing is left to do), prints ``spoolq status``
and shows where the failed jobs are.  Running it again starts over: it first removes what an
earlier run left in ./spool's failed/ and done/ for these tasks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import spoolq

HERE = Path(__file__).resolve().parent
SPOOL = Path("spool")  # relative to where you run it, as spoolq's default
TASK_MODULE = "quickstart_tasks"
PREFIX = "quickstart."


def spoolq_cmd(*args: str) -> list[str]:
    """``spoolq --spool ./spool ARGS`` with this Python, whatever is on $PATH."""
    return [sys.executable, "-m", "spoolq", "--spool", str(SPOOL), *args]


def forget_previous_run(app: spoolq.App) -> None:
    """Remove this demo's jobs left in failed/ and done/ by an earlier run (nothing else)."""
    removed = 0
    for state in ("failed", "done"):
        for entry in app.spool.entries(state):
            try:
                job = app.spool.read(state, entry.name)
                if job.task.startswith(PREFIX):
                    app.spool.remove(state, entry.name)
                    removed += 1
            except spoolq.SpoolqError:  # not a job, or gone meanwhile
                continue
    app.spool.barrier()
    if removed:
        print(f"(removed {removed} job files of an earlier run from {SPOOL}/failed and {SPOOL}/done)")


def enqueue(app: spoolq.App) -> list[spoolq.AsyncResult]:
    """The 20 jobs, published together (one durability barrier for the batch)."""
    import quickstart_tasks as t

    with app.batch():
        sums = [t.add.delay(i, i * 10) for i in range(11)]
        sums.append(t.add.apply_async(args=[100, 1], countdown=1))  # waits in delayed/ for a second
        for name, bad in (("billing", 1), ("mailer", 2), ("search", 1), ("geocoder", 3)):
            t.flaky.delay(name, bad)  # retried 1 to 3 times, then fine
        for n in (7, 8):
            t.unreliable.delay(n)  # autoretry with backoff, then fine
        t.flaky.apply_async(args=["legacy-api", 99], task_id=f"{PREFIX}legacy-api")  # gives up after 3 retries
        t.divide.apply_async(args=[1, 0], task_id=f"{PREFIX}divide-by-zero")  # fails at once
    return sums


def main() -> int:
    sys.path.insert(0, str(HERE))
    app = spoolq.App(SPOOL)
    forget_previous_run(app)
    sums = enqueue(app)
    print(f"enqueued 20 jobs into {SPOOL.absolute()}/new\n")
    subprocess.run(spoolq_cmd("status"), check=False)

    print(f"\n$ spoolq --spool {SPOOL} worker -I {TASK_MODULE} -c 4 --burst\n", flush=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))
    worker = subprocess.run(spoolq_cmd("worker", "-I", TASK_MODULE, "-c", "4", "--burst"), env=env, check=False)
    if worker.returncode != 0:
        print(f"\nthe worker exited with status {worker.returncode}", file=sys.stderr)
        return worker.returncode

    print(f"\n$ spoolq --spool {SPOOL} status", flush=True)
    subprocess.run(spoolq_cmd("status"), check=False)
    print(f"\nkept results: 0 + 0 = {sums[0].get(timeout=5)}, 100 + 1 = {sums[-1].get(timeout=5)}")

    failed = app.spool.entries("failed")
    print(f"\n$ spoolq --spool {SPOOL} ls failed", flush=True)
    subprocess.run(spoolq_cmd("ls", "failed"), check=False)
    if failed:
        print("\nEach failed job is a JSON file with its whole error history, tracebacks included:")
        for entry in failed:
            print(f"  cat {SPOOL / 'failed' / entry.name}")
        print(f"Send one back to run:   spoolq --spool {SPOOL} retry {failed[0].job_id}")
    here = os.path.relpath(__file__)
    print(f"Run it again any time:  python {here if not here.startswith('..') else __file__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
