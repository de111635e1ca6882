"""Crash images from a device log: the base image plus the writes a power loss could have kept.

The model (the one dm-log-writes replays and SQLite's crash VFS simulates): a device write
completes into a volatile cache; a flush makes every write completed before it durable.  So a
power cut right after log position ``n`` leaves on the platter

- every write before the last flush that precedes ``n`` (the durable prefix), and
- any subset of the writes between that flush and ``n``, each possibly torn: a disk writes
  4 KiB sectors independently, so a multi-sector write may land in part.

Crash points are the marks (``ack ID``, ``ran ID``) the workload wrote into the same log; see
fuse_logger.py for why their position is ordered with the device writes.
"""

from __future__ import annotations

import mmap
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from .logformat import FLUSH, M_HEAD, MARK, W_HEAD, WRITE, Z_HEAD, ZERO
from .workload import copy_sparse, data_extents

SECTOR = 4096
_CHUNK = 16 * 1024 * 1024


@dataclass(frozen=True)
class Op:
    """One device request: a write (``data_at`` is where its bytes are in the log), a zeroed
    range, or a flush."""

    kind: bytes
    offset: int = 0
    length: int = 0
    data_at: int = 0


@dataclass(frozen=True)
class Mark:
    """A workload event; ``at`` device ops were logged before it."""

    at: int
    kind: str
    job_id: str
    task: str = ""


@dataclass
class DeviceLog:
    """A parsed log.  ``durable[n]``: how many ops are durable when the first ``n`` were issued."""

    ops: list[Op]
    marks: list[Mark]
    raw: mmap.mmap | bytes
    durable: list[int] = field(default_factory=list)

    def payload(self, op: Op) -> bytes:
        """The bytes ``op`` put on the device."""
        if op.kind == ZERO:
            return bytes(op.length)
        return bytes(self.raw[op.data_at : op.data_at + op.length])

    def unflushed(self, point: int) -> list[int]:
        """Indexes of the writes issued before ``point`` but after its last flush."""
        return [i for i in range(self.durable[point], point) if self.ops[i].kind != FLUSH]


def parse_log(path: Path) -> DeviceLog:
    """Read a log written by fuse_logger.py.

    Raises:
        ValueError: a record is cut short or of an unknown kind (the logger did not exit cleanly).
    """
    with open(path, "rb") as f:
        empty = os.fstat(f.fileno()).st_size == 0
        raw: mmap.mmap | bytes = b"" if empty else mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    ops: list[Op] = []
    marks: list[Mark] = []
    pos, end = 0, len(raw)
    while pos < end:
        kind = raw[pos : pos + 1]
        pos += 1
        if kind == WRITE:
            offset, length = W_HEAD.unpack_from(raw, pos)
            pos += W_HEAD.size
            ops.append(Op(WRITE, offset, length, pos))
            pos += length
        elif kind == ZERO:
            offset, length = Z_HEAD.unpack_from(raw, pos)
            pos += Z_HEAD.size
            ops.append(Op(ZERO, offset, length))
        elif kind == FLUSH:
            ops.append(Op(FLUSH))
        elif kind == MARK:
            (length,) = M_HEAD.unpack_from(raw, pos)
            pos += M_HEAD.size
            for line in bytes(raw[pos : pos + length]).decode().splitlines():
                mark_kind, _, rest = line.partition(" ")
                job_id, _, task = rest.partition(" ")
                marks.append(Mark(len(ops), mark_kind, job_id, task))
            pos += length
        else:
            raise ValueError(f"unknown record {kind!r} at byte {pos - 1} of {path}")
        if pos > end:
            raise ValueError(f"{path} ends inside a record")
    durable = [0]
    for i, op in enumerate(ops):
        durable.append(i + 1 if op.kind == FLUSH else durable[-1])
    return DeviceLog(ops, marks, raw, durable)


@dataclass(frozen=True)
class CrashState:
    """A device image a power cut could leave: the durable prefix plus ``kept`` pieces of the
    unflushed writes, each ``(op index, start, end)`` in bytes of that write."""

    durable: int
    kept: tuple[tuple[int, int, int], ...]

    @property
    def label(self) -> str:
        return f"durable={self.durable} kept={len(self.kept)} pieces" if self.kept else f"durable={self.durable}"


def random_subset(log: DeviceLog, unflushed: list[int], rng: random.Random) -> tuple[tuple[int, int, int], ...]:
    """A random subset of the unflushed writes, each kept one torn into a random subset of its
    4 KiB sectors half of the time (sectors aligned on the device, as a disk tears them)."""
    kept: list[tuple[int, int, int]] = []
    for i in unflushed:
        if rng.random() < 0.5:
            continue
        op = log.ops[i]
        if op.length <= SECTOR or rng.random() < 0.5:
            kept.append((i, 0, op.length))
            continue
        cut = op.offset
        while cut < op.offset + op.length:
            nxt = min((cut // SECTOR + 1) * SECTOR, op.offset + op.length)
            if rng.random() < 0.5:
                kept.append((i, cut - op.offset, nxt - op.offset))
            cut = nxt
    return tuple(kept)


@dataclass(frozen=True)
class CrashPoint:
    """A power cut after the first ``at`` device ops and the first ``marks`` marks."""

    at: int
    marks: int
    why: str


def crash_points(log: DeviceLog) -> list[CrashPoint]:
    """Every place a power cut can fall that matters: right after each mark (an enqueue
    returned, a task started) and right before each flush.  Between two flushes the durable
    prefix does not change, so with these every image of the "unflushed writes dropped" kind
    is checked against every set of jobs it must hold."""
    points = [CrashPoint(m.at, k + 1, f"after {m.kind} {m.job_id}") for k, m in enumerate(log.marks)]
    k = 0
    for i, op in enumerate(log.ops):
        if op.kind == FLUSH:
            while k < len(log.marks) and log.marks[k].at <= i:
                k += 1
            points.append(CrashPoint(i, k, f"before the flush at op {i}"))
    return points


def plan(
    log: DeviceLog, points: list[CrashPoint], subset_points: int, subsets: int, rng: random.Random
) -> dict[CrashState, list[CrashPoint]]:
    """The crash states to check and, for each, the crash points it stands for.

    Every point gets the state with all unflushed writes dropped; points with the same durable
    prefix share it (one image, mounted once, checked against each point's jobs).  At
    ``subset_points`` points drawn at random among those with unflushed writes (the
    acknowledgements first), ``subsets`` random subsets of those writes are kept as well.
    """
    states: dict[CrashState, list[CrashPoint]] = {}
    for point in points:
        states.setdefault(CrashState(log.durable[point.at], ()), []).append(point)
    torn = [p for p in points if log.unflushed(p.at)]
    acks = [p for p in torn if p.why.startswith("after ack")]
    others = [p for p in torn if not p.why.startswith("after ack")]
    chosen = rng.sample(acks, min(subset_points, len(acks)))
    chosen += rng.sample(others, min(subset_points - len(chosen), len(others)))
    for point in chosen:
        unflushed = log.unflushed(point.at)
        for _ in range(subsets):
            kept = random_subset(log, unflushed, rng)
            if kept:
                states.setdefault(CrashState(log.durable[point.at], kept), []).append(point)
    return dict(sorted(states.items(), key=lambda kv: kv[0].durable))


class ImageBuilder:
    """Builds crash images in durable-prefix order, applying each logged write once.

    It keeps one image at the current durable prefix and advances it; a crash image is a
    sparse copy of that plus the kept pieces, so a state costs a copy of the image's data
    (a few MiB), not a replay from the base.
    """

    def __init__(self, log: DeviceLog, base: Path, work: Path) -> None:
        self._log = log
        self._path = work / "durable.img"
        self._size = os.stat(base).st_size
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        os.ftruncate(self._fd, self._size)
        with open(base, "rb") as src:
            copy_sparse(src.fileno(), self._fd)
        self._applied = 0

    def advance(self, upto: int) -> None:
        """Apply the logged ops up to ``upto`` (exclusive) to the durable image."""
        if upto < self._applied:
            raise ValueError("crash states must come in durable-prefix order")
        for op in self._log.ops[self._applied : upto]:
            if op.kind != FLUSH:
                os.pwrite(self._fd, self._log.payload(op), op.offset)
        self._applied = upto

    def build(self, state: CrashState, out: Path) -> Path:
        """Write the image of ``state`` to ``out``."""
        self.advance(state.durable)
        fd = os.open(out, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, self._size)
            copy_sparse(self._fd, fd)
            for i, start, end in state.kept:
                op = self._log.ops[i]
                os.pwrite(fd, self._log.payload(op)[start:end], op.offset + start)
        finally:
            os.close(fd)
        return out

    def matches(self, final: Path) -> bool:
        """Whether base + every logged write equals the image the logger ended with: the log
        missed nothing the device received."""
        self.advance(len(self._log.ops))
        with open(final, "rb") as f:
            if os.fstat(f.fileno()).st_size != self._size:
                return False
            # Holes read as zeros in both: only what holds data in either file is compared.
            for fd in (f.fileno(), self._fd):
                for start, end in data_extents(fd):
                    for off in range(start, end, _CHUNK):
                        n = min(_CHUNK, end - off)
                        if os.pread(f.fileno(), n, off) != os.pread(self._fd, n, off):
                            return False
        return True

    def close(self) -> None:
        os.close(self._fd)
        self._path.unlink(missing_ok=True)
