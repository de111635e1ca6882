"""Block devices, mounts and the FUSE logger for the power-loss test, each undone on any exit.

Everything here changes the machine (a loop device, a mount, a FUSE process), and a leaked one
breaks the next run, so every step registers its undo on an :class:`contextlib.ExitStack`
before it returns; the test's fixture closes the stack whatever happened.  Commands get only
paths this test made under ``tmp_path`` and fixed options, as argument lists (no shell).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS_DIR = HERE.parent
REPO_DIR = TESTS_DIR.parent
HANG_S = 60.0  # generous: only turns a hang into a failure


@dataclass(frozen=True)
class FsKind:
    """How to make and mount one filesystem type.

    ``size`` is the smallest the mkfs accepts with room for the workload (mkfs.xfs refuses
    under 300 MiB); images are sparse, so only what mkfs writes takes space.
    """

    name: str
    mkfs: tuple[str, ...]
    size: int
    mount_options: str = ""


MIB = 1024 * 1024
FILESYSTEMS = {
    # 4 KiB blocks as on any real disk (mke2fs picks 1 KiB for a "small" one); inode tables
    # and journal written by mkfs, not later by a kernel thread: the log holds only what the
    # workload caused.
    "ext4": FsKind(
        "ext4", ("mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "lazy_itable_init=0,lazy_journal_init=0"), 64 * MIB
    ),
    # Every crash image carries the same UUID; nouuid lets XFS mount one while a stale record
    # of another is around.
    "xfs": FsKind("xfs", ("mkfs.xfs", "-q", "-f"), 300 * MIB, "nouuid"),
    "btrfs": FsKind("btrfs", ("mkfs.btrfs", "-q", "-f"), 128 * MIB),
}


def tool(name: str) -> str | None:
    """The path of a system tool, looking in the sbin directories too (not on every PATH)."""
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def run(*cmd: str, timeout: float = HANG_S) -> str:
    """Run a system tool, return its stdout; raise with its stderr when it fails."""
    proc = subprocess.run([tool(cmd[0]) or cmd[0], *cmd[1:]], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def kernel_skip_reason() -> str | None:
    """Why this machine cannot run the test at all (no root, loop device or FUSE), or None."""
    if os.geteuid() != 0:
        return "needs root (loop devices and mounts)"
    if not os.path.exists("/dev/loop-control"):
        return "the kernel offers no loop devices (/dev/loop-control missing)"
    if not os.path.exists("/dev/fuse"):
        return "the kernel offers no FUSE (/dev/fuse missing)"
    for name in ("losetup", "mount", "umount"):
        if tool(name) is None:
            return f"{name} is not installed"
    return None


def fs_skip_reason(kind: FsKind) -> str | None:
    """Why ``kind`` cannot be tested here (its mkfs is not installed, the kernel lacks it)."""
    if tool(kind.mkfs[0]) is None:
        return f"{kind.mkfs[0]} is not installed (.ci/run installs it with apt-get)"
    with open("/proc/filesystems", encoding="ascii") as f:
        known = {line.split()[-1] for line in f if line.strip()}
    if kind.name not in known:
        with contextlib.suppress(OSError, RuntimeError, subprocess.SubprocessError):
            run("modprobe", kind.name)
        with open("/proc/filesystems", encoding="ascii") as f:
            known = {line.split()[-1] for line in f if line.strip()}
    if kind.name not in known:
        return f"the kernel does not support {kind.name} (not in /proc/filesystems)"
    return None


def make_fs(kind: FsKind, image: Path) -> None:
    """A fresh sparse image of ``kind.size`` bytes holding an empty filesystem."""
    with open(image, "wb") as f:
        f.truncate(kind.size)
    run(*kind.mkfs, str(image))


def attach_loop(stack: contextlib.ExitStack, backing: Path) -> str:
    """A loop device on ``backing``; detached when ``stack`` closes."""
    dev = run("losetup", "--find", "--show", str(backing)).strip()
    stack.callback(detach_loop, dev)
    return dev


def detach_loop(dev: str) -> None:
    """Detach a loop device; if it is still busy, let the kernel detach it once released."""
    with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
        run("losetup", "-d", dev)


def mount(stack: contextlib.ExitStack, kind: FsKind, dev: str, target: Path) -> None:
    """Mount ``dev`` (replaying the filesystem's journal); unmounted when ``stack`` closes."""
    target.mkdir(parents=True, exist_ok=True)
    opts = ("-o", kind.mount_options) if kind.mount_options else ()
    run("mount", "-t", kind.name, *opts, dev, str(target))
    stack.callback(unmount, target, kind)


def unmount(target: Path, kind: FsKind | None = None) -> None:
    """Unmount, retrying while something still holds it busy; lazily as the last resort."""
    for _ in range(50):
        if not os.path.ismount(target):
            break
        try:
            run("umount", str(target))
        except RuntimeError:
            time.sleep(0.1)
    else:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            run("umount", "-l", str(target))
    if kind is not None and kind.name == "btrfs" and tool("btrfs"):
        # btrfs remembers devices by filesystem id; crash images share one, so forget the
        # unmounted device before the next image with the same id is attached.
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            run("btrfs", "device", "scan", "--forget")


def start_logger(stack: contextlib.ExitStack, image: Path, log: Path, mountpoint: Path) -> subprocess.Popen[bytes]:
    """Start the FUSE logger serving ``image`` at ``mountpoint``; stopped when ``stack`` closes.

    Returns when the mount is up.  Its stderr goes to ``log`` + ``.err`` for a failure message.
    """
    mountpoint.mkdir(parents=True, exist_ok=True)
    err = open(f"{log}.err", "wb")  # noqa: SIM115 - closed by the stack
    stack.callback(err.close)
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "fuse_logger.py"), str(image), str(log), str(mountpoint)],
        stderr=err,
        stdout=err,
        start_new_session=True,
    )
    stack.callback(stop_logger, proc, mountpoint)
    deadline = time.monotonic() + HANG_S
    while not os.path.ismount(mountpoint):
        if proc.poll() is not None:
            raise RuntimeError(f"the FUSE logger exited {proc.returncode}: {Path(f'{log}.err').read_text()}")
        if time.monotonic() > deadline:
            raise RuntimeError("the FUSE logger did not mount within the bound")
        time.sleep(0.02)
    return proc


def stop_logger(proc: subprocess.Popen[bytes], mountpoint: Path) -> int:
    """Unmount the FUSE file system (the logger then flushes its log and exits); kill it if
    it does not.  Returns its exit status."""
    unmount(mountpoint)
    try:
        return proc.wait(HANG_S)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        return proc.wait(HANG_S)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process started in its own session, and everything in its group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(HANG_S)


def child_env(**extra: str) -> dict[str, str]:
    """Environment for spoolq processes: the repo, tests/ and this folder importable, no SPOOLQ_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOLQ_")}
    paths = [str(REPO_DIR), str(TESTS_DIR), str(HERE), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra)
    return env
