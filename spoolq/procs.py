"""The pool's child processes as processes: killing a child with its group, and telling a
dead forkserver from a dead child.

Each child leads its own process group (see :mod:`spoolq.runner`), so the processes its jobs
fork share it: every kill the pool makes (a time limit, shutdown, stop) is a kill of the
group, and what is left of a group after its child died is killed too.  The pool's
forkserver is the parent of every child and the supervisor's only view of a child's exit; a
forkserver that died must not be mistaken for a child that did, nor the other way round.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

FORKSERVER_LOST = "pool child lost: the pool's forkserver died; its orphaned child was killed"
FORKSERVER_EOF = 255  # the exit code multiprocessing gives a child whose forkserver died
_PF_EXITING = 0x4  # in a Linux task's flags (/proc/PID/stat): set before it closes its files


def forkserver_dying() -> bool:
    """Whether the pool's forkserver is exiting or has exited.

    Asked when a child's exit code is 255: a child can exit so, and it is also what
    multiprocessing reports when the forkserver closed the child's status pipe without
    writing a status, because it died.  The kernel marks a dying process as exiting before
    it closes any of its files, so the forkserver is seen dying the moment that pipe closes.
    (Whether the child's own pipe is still open says nothing: what a task forked holds it.)
    """
    from multiprocessing import forkserver

    pid = getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None)
    if not pid:
        return False
    try:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
    except ChildProcessError:
        return True
    except OSError:  # pragma: no cover - no /proc: a forkserver death is not told apart
        return False
    return bool(int(fields[6]) & _PF_EXITING)


def await_forkserver_exit(timeout_s: float = 5.0) -> None:
    """Wait, without reaping it, until the dead forkserver has exited.

    Its pipes close while it dies, before it becomes a zombie; in that window
    multiprocessing's ``waitpid(WNOHANG)`` still sees it alive and hands the next child's
    descriptors to its dying socket, and that spawn never returns.
    """
    from multiprocessing import forkserver

    pid = getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None)
    if not pid:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return
        except ChildProcessError:
            return
        time.sleep(0.005)


def kill_group(pid: int) -> None:
    """SIGKILL a running child and its process group: what its job forked dies with it.

    Only a group the child leads is killed: until the child has made its group (the first
    thing it does, before any job) it is in the supervisor's, and then only the child is.
    """
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # it ended meanwhile; its sentinel tells, and kill_leftovers follows


def kill_leftovers(pid: int) -> None:
    """SIGKILL what is left of the group of a child that ended: processes its jobs forked.

    The group's id is the dead child's pid, and Linux hands out no pid while a process group
    of that number has a member: the group found is the child's, or there is none.  (Only
    a whole wrap of the pid space between the death and this call could make it another
    one's, and that takes tens of thousands of forks within a few milliseconds.)
    """
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
