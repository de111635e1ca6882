"""Rigs for persistent I/O failures under a live worker (tests/test_torture_io.py, bench/faults.py).

Each rig puts a real ``spoolq worker`` in front of one failure that does not go away by
itself (a full disk, a read-only spool, a directory that is not writable, a removed state
directory) and measures what the worker does meanwhile: its CPU time and its log lines.  A
worker that spins shows 100 % CPU and thousands of lines a second; one that backs off shows
almost nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from torture_tasks import TESTS_DIR, child_env, worker_argv

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of one process so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class Usage:
    """What a worker did over a window: CPU share of one core, and log lines a minute."""

    window_s: float
    cpu_s: float
    log_lines: int

    @property
    def cpu_percent(self) -> float:
        return 100.0 * self.cpu_s / self.window_s

    @property
    def lines_per_minute(self) -> float:
        return 60.0 * self.log_lines / self.window_s


class LiveWorker:
    """A real worker on ``spool`` with the torture tasks, its log in ``log``."""

    def __init__(self, spool: Path, log: Path, *args: str, obey_modes: bool = False) -> None:
        self.log = log
        self.out = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            worker_argv(spool, "--loglevel", "INFO", *args),
            env=child_env(),
            cwd=TESTS_DIR,
            stdout=self.out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=drop_permission_override if obey_modes else None,
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def lines(self) -> int:
        return len(self.text().splitlines())

    def wait_for(self, predicate: Callable[[], object], what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert self.proc.poll() is None or what.startswith("exit"), f"worker exited:\n{self.text()[-3000:]}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{self.text()[-3000:]}"
            time.sleep(0.05)

    def measure(self, window_s: float) -> Usage:
        """CPU and log lines over the next ``window_s`` seconds."""
        cpu0, lines0 = cpu_seconds(self.proc.pid), self.lines()
        time.sleep(window_s)
        return Usage(window_s, cpu_seconds(self.proc.pid) - cpu0, self.lines() - lines0)

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
            raise
        finally:
            self.out.close()


def mount(kind: str, target: Path, *options: str, source: str | None = None) -> str | None:
    """Mount a filesystem for a test; None if done, else why it could not be (to skip)."""
    target.mkdir(exist_ok=True)
    args = ["mount", "-t", kind, *(["-o", ",".join(options)] if options else []), source or kind, str(target)]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot mount {kind}: {exc}"
    return None if done.returncode == 0 else f"cannot mount {kind}: {done.stderr.strip() or done.returncode}"


def umount(target: Path) -> None:
    subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=60)


def remount(target: Path, *options: str) -> None:
    done = subprocess.run(
        ["mount", "-o", ",".join(("remount", *options)), str(target)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


@contextlib.contextmanager
def small_ext4(where: Path, size_mib: int = 8, *options: str) -> Iterator[Path | str]:
    """A small ext4 filesystem (no reserved blocks) on a loop device, mounted at ``where``
    (its image beside it, ``where.img``); yields the mount point, or a reason string when it
    cannot be made here."""
    image = where.with_suffix(".img")
    mkfs = shutil.which("mkfs.ext4") or "/usr/sbin/mkfs.ext4"
    with open(image, "wb") as f:
        f.truncate(size_mib * 1024 * 1024)
    made = (
        subprocess.run(
            [mkfs, "-q", "-F", "-m", "0", "-N", "4096", str(image)], capture_output=True, text=True, timeout=60
        )
        if os.path.exists(mkfs)
        else None
    )
    if made is None or made.returncode != 0:
        yield f"cannot make an ext4 image: {made.stderr.strip() if made else 'no mkfs.ext4'}"
        return
    why = mount("ext4", where, "loop", *options, source=str(image))
    if why is not None:
        yield why
        return
    try:
        yield where
    finally:
        umount(where)


def fill(path: Path) -> None:
    """Write ``path`` until the filesystem is full (ENOSPC), to the last byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        chunk = b"\0" * 65536
        while True:
            try:
                os.write(fd, chunk)
            except OSError:
                if len(chunk) == 1:
                    return
                chunk = chunk[: len(chunk) // 2]
    finally:
        os.close(fd)


_PR_CAPBSET_DROP = 24
# The capabilities that let root ignore permission bits: without them, a directory of mode
# 0500 refuses root's writes as it would any user's.
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _CAP_FOWNER = 1, 2, 3


def drop_permission_override() -> None:
    """In a child before ``exec``: drop the capabilities that bypass permission bits from
    the bounding set, so the program runs as root but meets modes as an ordinary user does
    (and its children too)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _CAP_FOWNER):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            os._exit(121)


def permissions_enforced() -> str | None:
    """None if a process here can be made to obey permission bits, else why not (to skip)."""
    if os.geteuid() != 0:
        return None  # an ordinary user obeys them anyway
    probe = subprocess.run(
        ["sh", "-c", "touch /proc/1/x 2>/dev/null; exit 0"],
        preexec_fn=drop_permission_override,
        capture_output=True,
        timeout=30,
    )
    return None if probe.returncode == 0 else "cannot drop CAP_DAC_OVERRIDE here"


def break_ext4(where: Path) -> None:
    """Make the ext4 mounted at ``where`` (with ``errors=remount-ro``) hit an error, as a
    failing disk does: the kernel turns it read-only until it is unmounted and checked."""
    device = subprocess.run(
        ["findmnt", "-n", "-o", "SOURCE", str(where)], capture_output=True, text=True, timeout=30
    ).stdout.strip()
    Path(f"/sys/fs/ext4/{os.path.basename(device)}/trigger_fs_error").write_text("1\n")


def repair_ext4(where: Path) -> None:
    """Unmount, check and mount again the ext4 :func:`break_ext4` broke."""
    umount(where)
    image = where.with_suffix(".img")
    subprocess.run(["e2fsck", "-fy", str(image)], capture_output=True, timeout=120)
    why = mount("ext4", where, "loop", "errors=remount-ro", source=str(image))
    assert why is None, why
