"""A FUSE process that serves a disk image and logs every write and flush to it, in order.

Run as a script (``python fuse_logger.py IMAGE LOG MOUNTPOINT``): it mounts a directory with
two files,

``disk``
    the block device's contents, backed by IMAGE.  A loop device on this file carries the
    filesystem under test; every write the loop driver sends is logged with its offset and
    data, and every flush (the filesystem's cache flush, which the loop driver turns into an
    ``fsync`` of its backing file) is logged as a flush.
``control``
    an append-only channel for marks: each ``write`` is logged as a mark record holding its
    text (``ack ID`` after an enqueue returned, ``ran ID`` when a task body ran).

Why the log order is the order that matters (the argument the power-loss test rests on):

- The process is single-threaded (``-s``) and the files are ``direct_io``, so the kernel
  sends each write to us synchronously and we handle one request at a time: a record is in
  the log before its request completes.
- A block write completes to the filesystem only after we logged it, so every write that the
  filesystem saw complete before it issued a flush is logged before that flush.  Writes logged
  before a flush are therefore durable at any later crash point; writes after the last flush
  are in the device's volatile cache, any subset of them may survive.
- An acknowledged enqueue means ``send_task`` returned, which (with fsync on) is after its
  ``fsync`` calls returned, which is after their flushes were logged.  The producer writes its
  mark only then, and that write is logged when it reaches us: after the flushes it depends on.
  A crash "right after the acknowledgement" is the log prefix ending at the mark.
- A task writes ``ran ID`` in its body, before the worker records any outcome: nothing the
  worker does to the job's files can be logged before the mark.

The log's format is in logformat.py.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import time
from typing import Any, BinaryIO

import mfusepy
from logformat import FLUSH, M_HEAD, MARK, W_HEAD, WRITE, Z_HEAD, ZERO  # run as a script: its folder is on the path

DISK, CONTROL = "/disk", "/control"
_DISK_FH, _CONTROL_FH = 1, 2
_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE, _FALLOC_FL_ZERO_RANGE = 0x01, 0x02, 0x10


class LoggingDisk(mfusepy.Operations):
    """The two files above.  Only what a loop device and an appending writer need is served.

    Parameters:
        image: path of the disk image; changed in place as writes arrive.
        log: where the records go (kept open; flushed at each flush and mark, so a test that
            reads it after our exit sees everything).
    """

    use_ns = True

    def __init__(self, image: str, log: BinaryIO) -> None:
        self._fd = os.open(image, os.O_RDWR | os.O_CLOEXEC)
        self._size = os.fstat(self._fd).st_size
        self._log = log
        self._now = time.time_ns()

    def _attrs(self, mode: int, size: int, nlink: int = 1) -> dict[str, Any]:
        return {
            "st_mode": mode,
            "st_nlink": nlink,
            "st_size": size,
            "st_uid": os.getuid(),
            "st_gid": os.getgid(),
            "st_atime": self._now,
            "st_mtime": self._now,
            "st_ctime": self._now,
        }

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        if path == "/":
            return self._attrs(stat.S_IFDIR | 0o700, 0, nlink=2)
        if path == DISK:
            return self._attrs(stat.S_IFREG | 0o600, self._size)
        if path == CONTROL:
            return self._attrs(stat.S_IFREG | 0o600, 0)
        raise mfusepy.FuseOSError(errno.ENOENT)

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", DISK[1:], CONTROL[1:]]

    def open(self, path: str, flags: int) -> int:
        if path == DISK:
            return _DISK_FH
        if path == CONTROL:
            return _CONTROL_FH
        raise mfusepy.FuseOSError(errno.ENOENT)

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        if path == CONTROL:  # an O_TRUNC open of the channel: nothing to cut
            return 0
        raise mfusepy.FuseOSError(errno.EPERM)  # the device has a fixed size

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        if fh != _DISK_FH:
            return b""
        return os.pread(self._fd, size, offset)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        if fh == _CONTROL_FH:
            self._log.write(MARK + M_HEAD.pack(len(data)) + data)
            self._log.flush()
            return len(data)
        if offset + len(data) > self._size:
            raise mfusepy.FuseOSError(errno.ENOSPC)
        self._log.write(WRITE + W_HEAD.pack(offset, len(data)))
        self._log.write(data)
        os.pwrite(self._fd, data, offset)
        return len(data)

    def fallocate(self, path: str, mode: int, offset: int, size: int, fh: int) -> int:
        """Discard and write-zeroes requests of the loop driver: logged as a zeroed range."""
        if fh != _DISK_FH or not mode & (_FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_ZERO_RANGE):
            raise mfusepy.FuseOSError(errno.EOPNOTSUPP)
        size = max(0, min(size, self._size - offset))
        self._log.write(ZERO + Z_HEAD.pack(offset, size))
        os.pwrite(self._fd, bytes(size), offset)
        return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        if fh == _DISK_FH:
            self._log.write(FLUSH)
            self._log.flush()
        return 0

    def flush(self, path: str, fh: int) -> int:
        return 0  # a close(), not a durability point

    def release(self, path: str, fh: int) -> int:
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": 0, "f_bfree": 0, "f_bavail": 0, "f_namemax": 255}

    def destroy(self, path: str) -> None:
        self._log.flush()
        os.close(self._fd)


def main(argv: list[str]) -> int:
    """Serve IMAGE at MOUNTPOINT until unmounted, logging into LOG."""
    if len(argv) != 3:
        print("usage: fuse_logger.py IMAGE LOG MOUNTPOINT", file=sys.stderr)
        return 2
    image, log_path, mountpoint = argv
    with open(log_path, "wb") as log:
        mfusepy.FUSE(
            LoggingDisk(image, log),
            mountpoint,
            foreground=True,
            nothreads=True,
            direct_io=True,
            fsname="spoolq-powerloss",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
