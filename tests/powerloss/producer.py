"""A producer process of the power-loss workload.

``python producer.py SPOOL MARKS PREFIX COUNT [--no-fsync]`` enqueues COUNT jobs with ids
``PREFIX-NNNN`` and, after each enqueue call returned (the acknowledgement), appends
``ack ID TASK`` for each job it enqueued to MARKS, the FUSE logger's control file.  Ordering: the
mark is written only after ``send_task``/``send_many`` returned, so in the device log it
follows every write and flush that enqueue waited for.

The mix covers both write paths of the spool (one job: fsync the file, rename, fsync ``new/``;
``send_many``: write all, ``syncfs``, rename all, fsync ``new/`` once) and every task kind.
"""

from __future__ import annotations

import os
import sys

from powerloss_tasks import mark, open_marks

import spoolq

KINDS = ("powerloss.work", "powerloss.work", "powerloss.keep", "powerloss.fail", "powerloss.flaky")


def job_spec(job_id: str, n: int) -> dict:
    """The n-th job of a producer: a task kind, and every seventh one due a moment later."""
    spec: dict = {"name": KINDS[n % len(KINDS)], "args": [job_id], "task_id": job_id}
    if n % 7 == 3:
        spec["countdown"] = 0.3
    return spec


def main(argv: list[str]) -> int:
    """Enqueue, mark, repeat; see the module docstring for the arguments."""
    spool, marks, prefix, count = argv[0], argv[1], argv[2], int(argv[3])
    app = spoolq.App(spool, fsync="--no-fsync" not in argv[4:])
    fd = open_marks(marks)  # opened once: the mark follows the return by a single write
    n = 0
    while n < count:
        if n % 6 == 5 and n + 3 <= count:  # a batch of three behind one barrier
            specs = [job_spec(f"{prefix}-{k:04d}", k) for k in range(n, n + 3)]
            app.send_many(specs)
        else:
            specs = [job_spec(f"{prefix}-{n:04d}", n)]
            app.send_task(**specs[0])
        mark(fd, "ack", [f"{s['task_id']} {s['name']}" for s in specs])
        n += len(specs)
    app.spool.close()
    os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
