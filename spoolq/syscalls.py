"""The few system calls Python's ``os`` module does not offer, with their fallbacks.

``renameat2(RENAME_NOREPLACE)`` publishes a file without ever replacing another (a clash
raises instead); ``syncfs`` flushes a whole filesystem at once (the bulk enqueue barrier);
``prctl`` asks for a signal when the parent dies and names a process.  Each degrades to
portable calls where the C library or the filesystem lacks it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal

try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - no C library to load
    _LIBC = None

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_renameat2_works = _LIBC is not None and hasattr(_LIBC, "renameat2")
_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15

O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # never a symlink, never block on a FIFO
O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
O_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def rename_noreplace(src: str, dst: str, src_fd: int | None = None, dst_fd: int | None = None) -> None:
    """Rename that fails with FileExistsError instead of replacing ``dst``; ``src`` and
    ``dst`` are relative to the directory descriptors when given.

    One ``renameat2(RENAME_NOREPLACE)`` call where the kernel and filesystem have it.
    Elsewhere a regular file is linked then unlinked (the link is what refuses a clash, so two
    producers racing on one id still see exactly one win); anything else (a directory being
    rejected) is checked then renamed, enough because only the supervisor moves those.
    """
    global _renameat2_works
    if _renameat2_works:
        assert _LIBC is not None
        a = _AT_FDCWD if src_fd is None else src_fd
        b = _AT_FDCWD if dst_fd is None else dst_fd
        if _LIBC.renameat2(a, os.fsencode(src), b, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(err, "target exists", dst)
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), src, None, dst)  # ENOENT: FileNotFoundError
        _renameat2_works = False  # the filesystem cannot do it: fall back for good
    try:
        os.link(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError:
        pass  # a directory, or a filesystem without hard links
    else:
        os.unlink(src, dir_fd=src_fd)
        return
    try:
        os.stat(dst, dir_fd=dst_fd, follow_symlinks=False)
    except FileNotFoundError:
        os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
        return
    raise FileExistsError(errno.EEXIST, "target exists", dst)


def sync_filesystem(fd: int) -> None:
    """Flush every dirty file of the filesystem ``fd`` is on (Linux ``syncfs``); where there
    is no ``syncfs``, flush everything (slower, just as safe)."""
    if _LIBC is None or not hasattr(_LIBC, "syncfs") or _LIBC.syncfs(fd) != 0:
        os.sync()


def die_with_parent() -> bool:
    """Ask the kernel to SIGKILL this process when its parent exits; False where it cannot
    (not Linux), or when the parent is already gone (then the caller should exit)."""
    parent = os.getppid()
    if _LIBC is None or not hasattr(_LIBC, "prctl"):  # pragma: no cover - not Linux
        return True
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    return os.getppid() == parent


def set_process_name(name: str) -> None:
    """Name this process as ``ps -o comm`` and ``top`` show it (15 bytes at most)."""
    if _LIBC is not None and hasattr(_LIBC, "prctl"):
        _LIBC.prctl(_PR_SET_NAME, os.fsencode(name)[:15], 0, 0, 0)
