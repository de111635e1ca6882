"""Child-process plumbing: start in own session, find every descendant, measure CPU, kill.

Every worker and producer is started with ``start_new_session=True`` so that it leads its
own process group, and kill/CPU accounting covers the whole group. That is not enough on its
own: RQ's fork-per-job work horse calls ``setpgrp()``, leaving the group, so descendants are
also found by walking parent pids in ``/proc``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (field 3 is index 0)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            data = fh.read()
    except OSError:
        return None
    return data[data.rfind(")") + 2 :].split()


def _all_stats() -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat_fields(int(name))
            if fields is not None:
                out[int(name)] = fields
    return out


def tree_pids(roots: Iterable[int]) -> set[int]:
    """The roots, every member of their process groups, and all their descendants."""
    stats = _all_stats()
    roots = set(roots)
    found = {p for p in roots if p in stats}
    found |= {p for p, f in stats.items() if int(f[2]) in roots}  # f[2] = pgrp
    children: dict[int, list[int]] = {}
    for p, f in stats.items():
        children.setdefault(int(f[1]), []).append(p)  # f[1] = ppid
    todo = list(found)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime+stime+cutime+cstime summed over live pids, in seconds.

    Including the reaped-children times means a child that exits between two samples still
    counts: its time moves into the parent's ``cutime``.
    """
    total = 0
    for pid in pids:
        f = _stat_fields(pid)
        if f is not None:
            total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return total / CLK_TCK


def tree_cpu_seconds(roots: Sequence[int]) -> float:
    """CPU seconds used so far by everything under ``roots``."""
    return cpu_seconds(tree_pids(roots))


def spawn(
    argv: Sequence[str],
    env: dict[str, str],
    cwd: str,
    log_path: str,
    stdin: int | None = None,
    stdout: int | None = None,
) -> subprocess.Popen[bytes]:
    """Start a child as leader of a new session; stderr (and stdout unless piped) to a log."""
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the child, closed below
    try:
        return subprocess.Popen(
            list(argv),
            env=env,
            cwd=cwd,
            stdin=stdin,
            stdout=stdout if stdout is not None else log,
            stderr=log,
            start_new_session=True,
        )
    finally:
        log.close()


def kill_tree(procs: Iterable[subprocess.Popen[bytes]]) -> None:
    """SIGKILL every process under ``procs`` (groups and descendants) and reap the roots.

    SIGKILL and not a graceful stop: the benchmark state is thrown away after every
    workload, and a peer that ignores SIGTERM must not be able to stall the run.
    """
    procs = list(procs)
    roots = [p.pid for p in procs]
    for _ in range(3):
        pids = tree_pids(roots)
        for pgid in roots:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=2)
        if not tree_pids(roots) - set(roots):
            break
        time.sleep(0.1)
