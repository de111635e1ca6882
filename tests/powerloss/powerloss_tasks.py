"""Tasks of the power-loss workload; the worker imports them with ``-I powerloss_tasks``.

Each body first appends ``ran ID`` to the file named by ``POWERLOSS_MARKS`` with one
``write``: during the run that file is the FUSE logger's ``control``, so the mark lands in the
device log before anything the worker does with the job's outcome (see fuse_logger.py);
during a drain of a crash image it is a plain file.  The kinds cover every outcome path:
discard on success, a kept result in ``done/``, a retry through ``delayed/``, ``failed/``.
"""

from __future__ import annotations

import os
import time

import spoolq

MARKS_ENV = "POWERLOSS_MARKS"  # not SPOOLQ_*: spoolq refuses variables it does not know


def open_marks(path: str) -> int:
    """A descriptor to append marks to ``path`` (created if it is a plain file)."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)


def mark(fd: int, kind: str, ids: list[str]) -> None:
    """Append one ``KIND ID`` line per id in a single write (one log record); an "id" may
    carry more words (``ack ID TASK``)."""
    os.write(fd, "".join(f"{kind} {i}\n" for i in ids).encode())


def _ran(job_id: str) -> None:
    fd = open_marks(os.environ[MARKS_ENV])
    try:
        mark(fd, "ran", [job_id])
    finally:
        os.close(fd)


@spoolq.task(name="powerloss.work")
def work(job_id: str) -> None:
    """Take a moment, so that a backlog builds up in the spool, then succeed (the job is
    discarded).  Without it the worker often runs a job before its producer's mark is logged
    (the rename is visible while the producer still flushes the directory), and a job that
    already started is not checked as a waiting one."""
    _ran(job_id)
    time.sleep(0.02)


@spoolq.task(name="powerloss.keep", result_ttl=3600)
def keep(job_id: str) -> str:
    """Succeed with a result kept in ``done/``."""
    _ran(job_id)
    return job_id


@spoolq.task(name="powerloss.fail", max_retries=0)
def fail(job_id: str) -> None:
    """Fail for good: the job goes to ``failed/`` with the error."""
    _ran(job_id)
    raise ValueError(f"{job_id} fails on purpose")


@spoolq.task(name="powerloss.flaky", bind=True, max_retries=3)
def flaky(self: spoolq.Task, job_id: str) -> None:
    """Ask for one retry a moment later (through ``delayed/``), then succeed."""
    _ran(job_id)
    if self.request.retries == 0:
        self.retry(exc=RuntimeError("first attempt retries"), countdown=0.2)
