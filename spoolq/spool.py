"""The spool on disk: the only module that opens, renames or unlinks spool files.

Layout (SPEC §1)::

    SPOOL/
      tmp/       <ns>.<pid>.<n>.<rand>      being written by its writer, read by nobody
      new/       <id>.json                  delivered by producers; the only place they write
      ready/     <R>-<stamp>-<id>.json      R = 9 - priority, stamp = when it became due
      active/    <id>.json                  claimed by the supervisor, running in a worker
      delayed/   <stamp>-<id>.json          stamp = due time, so `ls` sorts by due time
      failed/    <stamp>-<id>.json          stamp = when it failed; non-jobs end in `.bad`
      done/      <id>.json                  kept results, until they expire
      spoolq.lock                           flock of the running supervisor; holds its pid

Writes follow Maildir (SPEC §1): a unique ``O_EXCL`` name in ``tmp/``, write, fsync, rename into
place with ``RENAME_NOREPLACE`` (a clash raises instead of overwriting), then fsync the
directory.  A reader never sees half a file.  Moves between states are renames; the
supervisor batches their directory fsyncs with :meth:`Spool.barrier` (a rename that a crash
undoes leaves the job in its previous state, which recovery handles).  Files are never read
through a symlink, and nothing outside the spool is ever opened, changed or removed.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import logging
import os
import queue
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import (
    DuplicateJob,
    HardLinked,
    JobFormatError,
    JobNotFound,
    JobTooLarge,
    SpoolError,
    SpoolGone,
    SpoolLocked,
)
from .job import MAX_HISTORY_BYTES, MAX_PRIORITY, STAMP_LEN, Job, parse_stamp, stamp

log = logging.getLogger("spoolq.spool")

TMP, NEW, READY, ACTIVE, DELAYED, FAILED, DONE = "tmp", "new", "ready", "active", "delayed", "failed", "done"
STATES = (NEW, READY, ACTIVE, DELAYED, FAILED, DONE)
LIVE_STATES = (NEW, READY, ACTIVE, DELAYED)
DIRS = (TMP, *STATES)
_MOVE_ORDER = (NEW, DELAYED, READY, ACTIVE)  # where moves lead: a later name wins over an earlier one
LOCK_NAME = "spoolq.lock"
DEFAULT_MAX_JOB_SIZE = 1024 * 1024
BAD_SUFFIX = ".bad"
REASON_SUFFIX = ".reason"

try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
    _LIBC.syncfs  # noqa: B018 - probe that the symbol exists
except (OSError, AttributeError):  # pragma: no cover - not glibc/musl
    _LIBC = None

_O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


@dataclass(frozen=True)
class Entry:
    """A file in a state directory and what its name says."""

    state: str
    name: str
    job_id: str | None  # None when the name is not a job's name
    when: datetime | None  # due time (delayed), ready time (ready), failure time (failed)
    path: Path


def job_name(state: str, job: Job, when: datetime | None = None) -> str:
    """The file name of ``job`` in ``state``; ``when`` is the time the name sorts by."""
    if state == READY:
        return f"{MAX_PRIORITY - job.priority}-{stamp(when or job.ready_time())}-{job.id}.json"
    if state in (DELAYED, FAILED):
        if when is None:
            raise ValueError(f"a {state} name needs a time")
        return f"{stamp(when)}-{job.id}.json"
    return f"{job.id}.json"


def parse_name(state: str, name: str) -> tuple[str | None, datetime | None]:
    """The job id and time a file name carries in ``state``, or ``(None, None)`` if it is
    not a job's name there (a foreign or rejected file)."""
    if not name.endswith(".json") or name.startswith("."):
        return None, None
    base = name[:-5]
    try:
        if state == READY:
            if len(base) > STAMP_LEN + 3 and base[0].isdigit() and base[1] == "-" and base[STAMP_LEN + 2] == "-":
                return base[STAMP_LEN + 3 :], parse_stamp(base[2 : STAMP_LEN + 2])
            return None, None
        if state in (DELAYED, FAILED):
            if len(base) > STAMP_LEN + 1 and base[STAMP_LEN] == "-":
                return base[STAMP_LEN + 1 :], parse_stamp(base[:STAMP_LEN])
            return None, None
    except ValueError:
        return None, None
    return base, None


class Spool:
    """A spool directory.

    Parameters:
        path: the spool's directory; created (with its states) on first use.
        fsync: flush files and directories to disk before a write or move counts as done.
            ``False`` trades durability on power loss for speed; a process crash still loses
            nothing.
        max_job_size: largest job file accepted in ``new/``, in bytes.  Records the
            supervisor writes elsewhere may be larger by the bounded error history
            (:data:`~spoolq.job.MAX_HISTORY_BYTES`): see :attr:`record_limit`.
        dir_mode, file_mode: permissions of new directories and files.
        create: create missing directories (the CLI's read-only commands pass False).

    A producer's Spool finds its directories through the path at each call.  A supervisor's
    (and a pool child's) is :meth:`bound <bind>` to the directory it locked: every operation
    then goes through directory descriptors, so a spool renamed or replaced while it runs is
    never confused with whatever is at the path afterwards, and :meth:`check_place` tells it
    to stop.  A state directory removed under a bound spool is created again on first use.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync: bool = True,
        max_job_size: int = DEFAULT_MAX_JOB_SIZE,
        dir_mode: int = 0o700,
        file_mode: int = 0o600,
        create: bool = True,
    ) -> None:
        self.path = Path(path).absolute()
        self.fsync = fsync
        self.max_job_size = max_job_size
        self.record_limit = max_job_size + MAX_HISTORY_BYTES
        self.dir_mode = dir_mode
        self.file_mode = file_mode
        self._counter = 0
        self._counter_lock = threading.Lock()
        self._dirty: set[str] = set()
        self._pid = os.getpid()
        self._salt = secrets.token_hex(3)
        self._trash: _Trash | None = None
        self._root = str(self.path)
        self._root_fd: int | None = None  # set by bind()
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the bound directory
        self._fds: dict[str, tuple[int, tuple[int, int]]] = {}  # bound: state -> (fd, its identity)
        self._ready = False
        if create:
            self.ensure()

    # -- layout and safety ---------------------------------------------------------------

    def dir(self, state: str) -> Path:
        """The directory of a state (or ``tmp``), by path."""
        return self.path / state

    def ensure(self) -> None:
        """Create the layout if missing and refuse a spool that is not safely ours.

        Raises:
            SpoolError: owned by another user, writable by group or others, a symlink,
                or not creatable.
        """
        if self._ready:
            return
        try:
            self.path.mkdir(mode=self.dir_mode, parents=True, exist_ok=True)
            self._check_safe(self.path)
            for state in DIRS:
                d = self.path / state
                try:
                    d.mkdir(mode=self.dir_mode)
                except FileExistsError:
                    pass
                self._check_safe(d)
        except OSError as exc:
            raise SpoolError(f"cannot use spool {self.path}: {exc.strerror or exc}") from None
        self._ready = True

    def _check_safe(self, d: Path) -> None:
        st = os.lstat(d)
        if stat.S_ISLNK(st.st_mode) and d != self.path:
            raise SpoolError(f"spool directory {d} is a symlink; refusing to follow it")
        self._check_dir_stat(os.stat(d), d)

    def _check_dir_stat(self, st: os.stat_result, d: str | Path) -> None:
        if not stat.S_ISDIR(st.st_mode):
            raise SpoolError(f"{d} is not a directory")
        if st.st_uid != os.geteuid():
            raise SpoolError(f"spool directory {d} is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})")
        if st.st_mode & 0o022 and not (self.dir_mode & 0o022):
            raise SpoolError(
                f"spool directory {d} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
                f"run: chmod go-w {d}"
            )

    def exists(self) -> bool:
        """Whether the spool's layout is there (read-only commands must not create it)."""
        return all((self.path / s).is_dir() for s in STATES)

    # -- the bound directory -----------------------------------------------------------

    def bind(self, expect: tuple[int, int] | None = None) -> tuple[int, int]:
        """Hold the spool's directory open and act on it, not on the path, from now on.

        Parameters:
            expect: the ``(st_dev, st_ino)`` the directory must have (a pool child checks
                that the path still leads to its supervisor's spool).
        Returns:
            The directory's ``(st_dev, st_ino)``.
        Raises:
            SpoolGone: the path leads nowhere, or to another directory than ``expect``.
        """
        if self._root_fd is not None:
            return self._identity  # type: ignore[return-value]
        try:
            fd = os.open(self._root, _DIR_FLAGS)
        except OSError as exc:
            raise SpoolGone(f"cannot open spool {self.path}: {exc.strerror or exc}") from None
        st = os.fstat(fd)
        identity = (st.st_dev, st.st_ino)
        if expect is not None and identity != tuple(expect):
            os.close(fd)
            raise SpoolGone(f"spool {self.path} is not the directory it was: it was moved or replaced")
        self._root_fd, self._identity = fd, identity
        return identity

    @property
    def bound(self) -> bool:
        """Whether this spool acts through held directory descriptors (see :meth:`bind`)."""
        return self._root_fd is not None

    def check_place(self) -> None:
        """Check that the path still leads to the bound directory, and that every state
        directory in use is still in it (one removed or moved away is created again).

        Raises:
            SpoolGone: the spool was removed, moved away, or replaced by another directory.
        """
        if self._root_fd is None:
            return
        try:
            st = os.stat(self._root)
        except OSError as exc:
            raise SpoolGone(f"spool {self.path} is gone ({exc.strerror}): it was removed or moved away") from None
        if (st.st_dev, st.st_ino) != self._identity:
            raise SpoolGone(f"spool {self.path} now leads to another directory: the spool was moved or replaced")
        if os.fstat(self._root_fd).st_nlink == 0:
            raise SpoolGone(f"spool {self.path} was removed")
        for state, (_, identity) in list(self._fds.items()):
            try:
                here = os.stat(state, dir_fd=self._root_fd, follow_symlinks=False)
                moved = (here.st_dev, here.st_ino) != identity
            except FileNotFoundError:
                moved = True
            if moved:
                self._reopen(state)

    def identity_of(self, state: str) -> tuple[int, int] | None:
        """The ``(st_dev, st_ino)`` of a state directory held open by a bound spool (None if
        not open yet): it changes when the directory was removed and created again."""
        entry = self._fds.get(state)
        return entry[1] if entry is not None else None

    def _fd(self, state: str) -> int:
        """The held descriptor of a state directory of a bound spool (opened on first use)."""
        entry = self._fds.get(state)
        return entry[0] if entry is not None else self._open_state(state)

    def _open_state(self, state: str) -> int:
        root = self._root_fd
        assert root is not None
        for _ in range(2):
            try:
                fd = os.open(state, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=root)
                break
            except FileNotFoundError:
                try:
                    os.mkdir(state, self.dir_mode, dir_fd=root)
                except FileExistsError:
                    pass
                except FileNotFoundError:
                    raise SpoolGone(f"spool {self.path} was removed") from None
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise SpoolError(f"spool directory {self.path / state} is not a directory (or a symlink, "
                                     "not followed)") from None  # fmt: skip
                raise
        else:  # pragma: no cover - created and removed again between two calls
            raise SpoolError(f"cannot create {self.path / state}")
        st = os.fstat(fd)
        try:
            self._check_dir_stat(st, self.path / state)
        except SpoolError:
            os.close(fd)
            raise
        self._fds[state] = (fd, (st.st_dev, st.st_ino))
        return fd

    def _reopen(self, state: str) -> bool:
        """Open a state directory afresh if the one held was removed or moved away, creating
        it again; True if it was (the operation that failed may then be tried again)."""
        entry = self._fds.get(state)
        if entry is None:
            return False
        fd, identity = entry
        try:
            here = os.stat(state, dir_fd=self._root_fd, follow_symlinks=False)
            if (here.st_dev, here.st_ino) == identity:
                return False  # the directory is fine: what was missing is the file
        except FileNotFoundError:
            pass
        del self._fds[state]
        os.close(fd)
        self._open_state(state)
        log.warning("%s/ had been removed from spool %s (or moved away); created it again", state, self.path)
        return True

    def _loc(self, state: str, name: str) -> tuple[str, int | None]:
        """Where ``name`` in ``state`` is, for ``os`` calls: (name, directory fd) when bound,
        else (path, None)."""
        if self._root_fd is not None:
            return name, self._fd(state)
        return f"{self._root}/{state}/{name}", None

    def _split(self, path: str | os.PathLike[str]) -> tuple[str, str]:
        """The (state, name) of a path inside this spool.

        Raises:
            ValueError: the path is not a file directly in one of the spool's directories.
        """
        p = os.fspath(path)
        root = self._root
        if p.startswith(root) and p[len(root) : len(root) + 1] == "/":
            state, sep, name = p[len(root) + 1 :].partition("/")
            if sep and state in DIRS and name and "/" not in name:
                return state, name
        raise ValueError(f"{p!r} is not a file of spool {root}")

    def _retry_moved(self, states: Iterable[str], exc: FileNotFoundError) -> None:
        """After ENOENT from a bound operation: reopen the states whose directory was removed
        (then the caller tries once more), or re-raise ``exc`` (the file itself is missing)."""
        if self._root_fd is None or not any([self._reopen(s) for s in states]):
            raise exc

    # -- writing ------------------------------------------------------------------------

    def _fork_check(self) -> None:
        pid = os.getpid()
        if pid != self._pid:  # forked: new names, and the parent's unlink thread is not here
            self._pid, self._salt, self._trash = pid, secrets.token_hex(3), None

    def _tmp_name(self) -> str:
        with self._counter_lock:
            self._counter += 1
            n = self._counter
        self._fork_check()
        return f"{time.time_ns()}.{self._pid}.{n}.{self._salt}"

    def _write_tmp(self, data: bytes, *, flush: bool = True) -> str:
        """Write ``data`` to a fresh file in ``tmp/`` and (with fsync on and ``flush``) flush
        it; returns its name there, for the caller to publish.

        Raises:
            SpoolError: the file cannot be created or written (disk or inodes full, a
                read-only or vanished spool, permissions); nothing is left behind.
        """
        while True:
            name = self._tmp_name()
            where, dir_fd = self._loc(TMP, name)
            try:
                fd = os.open(where, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, self.file_mode, dir_fd=dir_fd)
                break
            except FileExistsError:  # pragma: no cover - needs a clash of ns, pid, counter and random
                continue
            except FileNotFoundError as exc:
                try:
                    self._retry_moved((TMP,), exc)
                except OSError:
                    raise SpoolError(f"cannot write to spool {self.path}: tmp/ is missing") from None
            except OSError as exc:
                raise SpoolError(f"cannot write to spool {self.path}: {exc.strerror or exc}") from None
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if self.fsync and flush:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            self._unlink_quietly(TMP, name)
            raise SpoolError(f"cannot write to spool {self.path}: {exc.strerror or exc}") from exc
        return name

    def _encode(self, job: Job) -> bytes:
        data = job.to_json()
        if len(data) > self.max_job_size:
            raise JobTooLarge(job.id, len(data), self.max_job_size)
        return data

    def publish(self, job: Job) -> Path:
        """Deliver a job into ``new/`` atomically and durably; the enqueue is acknowledged
        when this returns.

        Raises:
            JobTooLarge: the encoded job is over ``max_job_size``.
            DuplicateJob: a job with this id is in ``new/`` or ``active/`` (two producers
                racing on one id: exactly one wins).
            SpoolError: the write failed (disk full, file-size limit, permissions); nothing
                is left behind.
        """
        return Path(self.deliver([job])[0])

    def publish_many(self, jobs: Iterable[Job]) -> list[Path]:
        """See :meth:`deliver`; returns the paths in ``new/``."""
        return [Path(p) for p in self.deliver(jobs)]

    def deliver(self, jobs: Iterable[Job], *, fresh_ids: bool = False) -> list[str]:
        """Deliver many jobs behind one durability barrier; each job is still all-or-nothing.

        Every job is encoded and size-checked before anything is written.  With fsync on,
        the files are written unflushed, the filesystem is flushed once (``syncfs``), then
        each is renamed into ``new/`` and the directory is flushed once: one barrier instead
        of one per job, and no job is visible before its bytes are on disk.

        On an error, the jobs published before it stay published (the caller sees the
        exception); the failing one and those after it leave nothing behind.

        Raises:
            JobTooLarge, DuplicateJob: see :meth:`publish`.
            SpoolError: any I/O error, with its cause.
        """
        self.ensure()
        encoded = [(job, self._encode(job)) for job in jobs]
        bulk = self.fsync and len(encoded) > 1
        out: list[str] = []  # plain strings: building a Path costs as much as the rename
        tmps: list[str] = []
        # The new/ directory this call renames into and flushes: the same one, even if the
        # spool is replaced meanwhile (a flush of the old one would leave the entry unflushed).
        new_fd = self._fd(NEW) if self._root_fd is not None else None
        own_fd = new_fd is None
        try:
            if own_fd:
                new_fd = os.open(f"{self._root}/{NEW}", _DIR_FLAGS)
            for job, data in encoded:
                # A new random id cannot be running; a caller's id (task_id) may be.
                if not fresh_ids and self.has(ACTIVE, f"{job.id}.json"):
                    raise DuplicateJob(job.id, ACTIVE)
                tmps.append(self._write_tmp(data, flush=not bulk))
            if bulk:
                self._flush_filesystem()
            for (job, _), tmp in zip(encoded, tmps, strict=True):
                src, src_fd = self._loc(TMP, tmp)
                try:
                    _rename_noreplace(src, f"{job.id}.json", src_fd, new_fd)
                except FileExistsError:
                    raise DuplicateJob(job.id, NEW) from None
                out.append(f"{self._root}/{NEW}/{job.id}.json")
        except OSError as exc:
            raise SpoolError(f"cannot deliver to spool {self.path}: {exc.strerror or exc}") from exc
        finally:
            for tmp in tmps[len(out) :]:  # the ones not delivered; a delivered one has no tmp/ name left
                self._unlink_quietly(TMP, tmp)
            try:
                if out and self.fsync:
                    os.fsync(new_fd)  # type: ignore[arg-type]
            except OSError as exc:
                raise SpoolError(f"cannot flush spool {self.path}: {exc.strerror or exc}") from exc
            finally:
                if own_fd and new_fd is not None:
                    os.close(new_fd)
        return out

    def _flush_filesystem(self) -> None:
        """Flush every dirty file of the spool's filesystem at once (Linux ``syncfs``)."""
        fd = os.open(self.path / TMP, _DIR_FLAGS)
        try:
            if _LIBC is None or _LIBC.syncfs(fd) != 0:
                os.sync()  # no syncfs here: flush everything, slower but just as safe
        finally:
            os.close(fd)

    def write(self, state: str, name: str, job: Job, *, replace: bool = False) -> Path:
        """Write a job file into a state directory (the supervisor's outcomes).

        ``replace`` allows the name to exist already (a newer result in ``done/``);
        otherwise a clash raises FileExistsError and writes nothing.
        """
        return self.write_bytes(state, name, job.to_json(), replace=replace)

    def write_bytes(self, state: str, name: str, data: bytes, *, replace: bool = False) -> Path:
        """See :meth:`write`; ``data`` is written as it is.

        The directory is flushed before this returns: a new record is durable before the
        caller removes the copy it replaces (STYLE habit 4), unlike plain moves, which
        :meth:`barrier` flushes in batches because undoing one loses nothing.
        """
        tmp = self._write_tmp(data)
        try:
            self._rename(TMP, tmp, state, name, replace=replace)
        except OSError:
            self._unlink_quietly(TMP, tmp)
            raise
        self._sync_dir(state)
        return self.path / state / name

    def record(self, src: str | os.PathLike[str], state: str, name: str, job: Job) -> Path:
        """Write ``job`` as a new record ``state/name``, then remove ``src``, the copy it
        replaces (an outcome recorded, STYLE habit 4).

        If ``src`` cannot be removed (a read-only directory, say), the record just written is
        removed again before the error is raised, so a step that fails this way and is tried
        later leaves one record, not one per try.  A ``src`` already gone (removed by hand)
        counts as removed.

        Raises:
            FileExistsError: ``state/name`` is taken (nothing written).
            SpoolError, OSError: the write or the removal failed (nothing left of the record).
        """
        target = self.write(state, name, job)
        try:
            self.remove(src)
        except FileNotFoundError:
            pass
        except OSError:
            try:
                self._unlink(state, name)
                self._sync_dir(state)
            except OSError:  # pragma: no cover - the disk refuses both: recovery sorts it out
                log.error("cannot remove %s/%s again after a failed move; spoolq fsck reports it", state, name)
            raise
        return target

    # -- reading ------------------------------------------------------------------------

    def limit_of(self, state: str) -> int:
        """The largest file accepted in ``state``: ``max_job_size`` for what producers write
        (``new/``), :attr:`record_limit` for the records the supervisor writes."""
        return self.max_job_size if state == NEW else self.record_limit

    def read_bytes(self, path: str | os.PathLike[str]) -> bytes:
        """Read a regular file without following a symlink and without blocking on a FIFO.

        Raises:
            JobFormatError: not a regular file, a hard link, or larger than its state's
                limit (:meth:`limit_of`); the message names the cause.
            FileNotFoundError: it is gone (another process moved it).
        """
        try:
            state, name = self._split(path)
            where, dir_fd = self._loc(state, name)
        except ValueError:
            state, where, dir_fd = "", os.fspath(path), None
        limit = self.limit_of(state)
        try:
            fd = os.open(where, _O_READ, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise JobFormatError("a symlink, not a job file (not followed)") from None
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise JobFormatError(f"a {file_kind(st.st_mode)}, not a job file")
            if st.st_nlink > 1:
                raise HardLinked(f"a hard link ({st.st_nlink} links): may belong outside the spool, not read", st)
            if st.st_size > limit:
                raise JobFormatError(f"{st.st_size} bytes, over the limit of {limit} bytes")
            chunks = []
            remaining = limit + 1
            while remaining > 0:
                chunk = os.read(fd, min(remaining, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
            data = b"".join(chunks)
            if len(data) > limit:
                raise JobFormatError(f"over the limit of {limit} bytes")
            return data
        finally:
            os.close(fd)

    def read(self, path: str | os.PathLike[str]) -> Job:
        """Read and validate a job file; see :meth:`read_bytes` for what is refused."""
        return Job.from_json(self.read_bytes(path))

    def lstat(self, path: str | os.PathLike[str]) -> os.stat_result:
        """``lstat`` of a spool file (through the bound directory)."""
        state, name = self._split(path)
        where, dir_fd = self._loc(state, name)
        return os.stat(where, dir_fd=dir_fd, follow_symlinks=False)

    def has(self, state: str, name: str) -> bool:
        """Whether ``name`` is in ``state`` (as any kind of file; links are not followed)."""
        where, dir_fd = self._loc(state, name)
        try:
            os.stat(where, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def _listing(self, state: str) -> Any:
        """A ``scandir`` iterator over a state directory (entries' ``path`` is the name when
        bound); raises FileNotFoundError if the directory is missing and cannot be made."""
        if self._root_fd is None:
            return os.scandir(f"{self._root}/{state}")
        # A description of its own: two listings of one directory must not share an offset.
        for _ in range(2):
            try:
                fd = os.open(".", _DIR_FLAGS, dir_fd=self._fd(state))
                break
            except FileNotFoundError as exc:
                self._retry_moved((state,), exc)
        try:
            return os.scandir(fd)
        finally:
            os.close(fd)  # scandir keeps a duplicate of its own

    def scan(self, state: str) -> Iterator[Entry]:
        """The entries of a state directory, unsorted (the listing is the truth)."""
        try:
            it = self._listing(state)
        except FileNotFoundError:
            return
        base = self.path / state
        with it:
            for de in it:
                job_id, when = parse_name(state, de.name)
                yield Entry(state, de.name, job_id, when, base / de.name)

    def names(self, state: str, limit: int | None = None) -> list[str]:
        """Up to ``limit`` file names of a state, unsorted, without building entries."""
        try:
            with self._listing(state) as it:
                return [de.name for de in itertools.islice(it, limit)]
        except FileNotFoundError:
            return []

    def cursor(self, state: str) -> NameCursor:
        """Names of a state taken a batch at a time, continuing one listing between calls."""
        return NameCursor(lambda: self._listing(state))

    def entries(self, state: str) -> list[Entry]:
        """The entries of a state, sorted by name (dispatch order in ``ready/``, due order in
        ``delayed/``, failure order in ``failed/``)."""
        return sorted(self.scan(state), key=lambda e: e.name)

    def find(self, job_id: str, states: Iterable[str] = STATES) -> Entry:
        """The entry of a job by id, searching the given states in order.

        Raises:
            JobNotFound: in none of them.
        """
        for state in states:
            if state in (NEW, ACTIVE, DONE):
                name = f"{job_id}.json"
                if self.has(state, name):
                    return Entry(state, name, job_id, None, self.path / state / name)
                continue
            for e in self.scan(state):
                if e.job_id == job_id:
                    return e
        raise JobNotFound(job_id)

    def count(self, state: str) -> int:
        """How many entries a state holds."""
        return sum(1 for _ in self.scan(state))

    # -- moves --------------------------------------------------------------------------

    def file(self, state: str, name: str) -> str:
        """The path of ``name`` in a state, as a plain string (the supervisor's hot path)."""
        return f"{self._root}/{state}/{name}"

    def _rename(self, src_state: str, src_name: str, state: str, name: str, *, replace: bool = False) -> None:
        for attempt in range(2):
            src, src_fd = self._loc(src_state, src_name)
            dst, dst_fd = self._loc(state, name)
            try:
                if replace:
                    os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
                else:
                    _rename_noreplace(src, dst, src_fd, dst_fd)
                return
            except FileNotFoundError as exc:
                if attempt:
                    raise
                self._retry_moved((state, src_state), exc)

    def move(self, src: str | os.PathLike[str], state: str, name: str, from_state: str | None = None) -> str:
        """Rename a file into a state; its directory is flushed by the next :meth:`barrier`.
        ``from_state``: the state ``src`` is in, when the caller knows (saves nothing now;
        kept for callers).

        Raises FileExistsError rather than replace another file.
        """
        src_state, src_name = self._split(src)
        self._rename(src_state, src_name, state, name)
        self._dirty.add(state)
        self._dirty.add(src_state)
        return f"{self._root}/{state}/{name}"

    def _unlink(self, state: str, name: str) -> None:
        where, dir_fd = self._loc(state, name)
        os.unlink(where, dir_fd=dir_fd)

    def _unlink_quietly(self, state: str, name: str) -> None:
        try:
            self._unlink(state, name)
        except OSError:
            pass

    def remove(self, path: str | os.PathLike[str]) -> None:
        """Unlink a file of the spool (a finished job, an expired result)."""
        state, name = self._split(path)
        self._unlink(state, name)
        self._dirty.add(state)

    def discard(self, path: str | os.PathLike[str]) -> None:
        """Take a finished job out of its state now and unlink it in the background.

        Freeing a file's blocks can cost milliseconds (the journal, online discard) while a
        rename costs microseconds, so the state change is a rename into ``tmp/`` (where no
        one but its writer reads) and a helper thread does the unlink.  A crash before that
        leaves a file in ``tmp/`` that the next start sweeps; never a job to run again.
        """
        self._fork_check()
        state, name = self._split(path)
        trash = f"{time.time_ns()}.{self._pid}{DISCARDED}{name}"
        self._rename(state, name, TMP, trash, replace=True)
        self._dirty.add(state)
        if self._trash is None:
            self._trash = _Trash()
        self._trash.put(self._loc(TMP, trash))

    def reject(self, path: str | os.PathLike[str], reason: str, now: datetime) -> Path:
        """Move something that is not a valid job from ``new/`` into ``failed/`` untouched,
        with the reason beside it in ``<name>.reason``.

        The original is renamed, never read or rewritten: it may be a FIFO, a directory or a
        symlink pointing outside the spool, and renaming moves the link, not its target.
        Its name may be any bytes; the reason file says it readably (:func:`printable`).
        """
        base = _safe_name(os.path.basename(path))
        text = printable(reason.rstrip()) + "\n"
        for n in range(1000):
            suffix = f".{n}" if n else ""
            name = f"{stamp(now)}-{base}{suffix}{BAD_SUFFIX}"
            try:
                self.write_bytes(FAILED, name + REASON_SUFFIX, text.encode("utf-8"))
            except FileExistsError:
                continue
            try:
                return Path(self.move(path, FAILED, name))
            except BaseException:
                self._unlink_quietly(FAILED, name + REASON_SUFFIX)
                raise
        raise SpoolError(f"cannot find a free name in failed/ for {base!r}")  # pragma: no cover

    def touched(self, *states: str) -> None:
        """Note that another process (a pool child) renamed files in these states, so that
        the next :meth:`barrier` flushes them too."""
        self._dirty.update(states)

    @property
    def dirty(self) -> bool:
        """Whether moves are waiting for a :meth:`barrier`."""
        return bool(self._dirty)

    def barrier(self) -> None:
        """Flush the directories changed since the last barrier, making moves durable.

        Raises:
            OSError: a flush failed; the directories not flushed stay due for the next one.
        """
        while self._dirty:
            state = next(iter(self._dirty))
            self._sync_dir(state)
            self._dirty.discard(state)

    def _sync_dir(self, state: str) -> None:
        if not self.fsync:
            return
        if self._root_fd is not None:
            os.fsync(self._fd(state))
            return
        fd = os.open(f"{self._root}/{state}", _DIR_FLAGS)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Finish pending background unlinks and release the held directory descriptors."""
        if self._trash is not None:
            self._trash.close()
            self._trash = None
        fds, self._fds = self._fds, {}
        root, self._root_fd = self._root_fd, None
        if os.getpid() == self._pid:
            for fd, _ in fds.values():
                os.close(fd)
            if root is not None:
                os.close(root)

    # -- housekeeping -------------------------------------------------------------------

    def sweep_tmp(self, older_than_s: float, now_s: float) -> list[Path]:
        """Remove files in ``tmp/`` older than ``older_than_s`` seconds: writers that died.

        A live writer renames its file within milliseconds, so an hour-old one is stale.
        Finished jobs that :meth:`discard` had not unlinked yet are removed whatever their
        age: only the supervisor makes them, and only one supervisor runs.
        """
        removed = []
        for e in self.scan(TMP):
            try:
                st = self.lstat(e.path)
            except FileNotFoundError:
                continue
            stale = now_s - st.st_mtime > older_than_s or is_discarded(e.name)
            if stale and not stat.S_ISDIR(st.st_mode):
                self._unlink_quietly(TMP, e.name)
                removed.append(e.path)
        return removed

    def drop_twins(self) -> list[str]:
        """Remove the earlier name of each file that a crash left under two names of the live
        states; run it at the start, with no supervisor running.

        A move is one rename, and the two directories it changes are flushed one after the
        other.  On btrfs a power cut between the two flushes can replay the new name (its
        directory was logged) and keep the old one (the removal was not): one file, two names,
        which :meth:`read_bytes` refuses as a hard link, so the job would be given up without
        running.  Only a file whose every name is in ``new/``, ``delayed/``, ``ready/`` or
        ``active/`` is touched (a link from elsewhere may belong outside the spool); the name
        kept is the one furthest along in that order, as the move had been made.

        Returns:
            the names removed, as ``state/name``.
        """
        names: dict[tuple[int, int], list[tuple[int, str, str]]] = {}
        links: dict[tuple[int, int], int] = {}
        for rank, state in enumerate(_MOVE_ORDER):
            for e in self.scan(state):
                try:
                    st = self.lstat(e.path)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    names.setdefault(key, []).append((rank, state, e.name))
                    links[key] = st.st_nlink
        removed = []
        for key, found in names.items():
            if len(found) != links[key]:
                continue  # a name outside the live states: left to be refused
            for _, state, name in sorted(found)[:-1]:
                self._unlink_quietly(state, name)
                self._dirty.add(state)
                removed.append(f"{state}/{name}")
        return removed

    def tmp_twin(self, st: os.stat_result) -> Path | None:
        """The ``tmp/`` name of a file (given its ``lstat``) that also sits elsewhere in the
        spool: a producer killed between its link into ``new/`` and its unlink of the
        temporary name.  The job was delivered whole; only its second name is left over."""
        for e in self.scan(TMP):
            try:
                s = self.lstat(e.path)
            except FileNotFoundError:
                continue
            if s.st_ino == st.st_ino and s.st_dev == st.st_dev:
                return e.path
        return None

    def lock(self) -> SupervisorLock:
        """The supervisor's lock on this spool (not yet acquired)."""
        return SupervisorLock(self.path / LOCK_NAME)


class NameCursor:
    """One listing of a directory, read a batch at a time, across calls.

    Listing a huge directory afresh for each batch re-reads, every time, the blocks whose
    entries were already moved out (ext4 never shrinks a directory): with a million files
    queued that made every batch slower than the last.  A cursor reads each block once per
    pass; files that arrive during a pass are found by the next one.
    """

    def __init__(self, opener: Callable[[], Any]) -> None:
        self._open = opener
        self._it: Any = None

    def take(self, n: int) -> tuple[list[str], bool]:
        """Up to ``n`` more names, and whether this pass may have more."""
        if self._it is None:
            try:
                self._it = self._open()
            except FileNotFoundError:
                return [], False
        names = [de.name for de in itertools.islice(self._it, n)]
        if len(names) < n:
            self.close()  # the pass is over: the next take starts a new listing
            return names, False
        return names, True

    def close(self) -> None:
        if self._it is not None:
            it, self._it = self._it, None
            it.close()


class Readahead:
    """A few threads that bring files ingest is about to read into memory, in parallel.

    A job that waited long enough in a big backlog may have left the page cache; then each
    read waits on the disk (~0.7 ms on the dev VM) and the supervisor, reading one file at a
    time, is held up by that alone.  These threads only look: ``lstat`` (which loads the
    inode) and, for a regular file within the size limit, an ``O_NOFOLLOW`` open and
    ``posix_fadvise(WILLNEED)``, so the disk serves several at once and the supervisor's
    own read finds them in memory.
    """

    def __init__(self, max_size: int, threads: int = 4) -> None:
        self._max = max_size
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._run, name="spoolq-readahead", daemon=True)
                         for _ in range(threads)]  # fmt: skip
        for t in self._threads:
            t.start()

    def put(self, paths: Iterable[str]) -> None:
        for p in paths:
            self._queue.put(p)

    def _run(self) -> None:
        while (path := self._queue.get()) is not None:
            try:
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode) or st.st_size > self._max:
                    continue
                fd = os.open(path, _O_READ)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
                finally:
                    os.close(fd)
            except OSError:
                continue  # gone already, or not readable: ingest says why when it gets there

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(5)


class _Trash:
    """A daemon thread that unlinks discarded files off the supervisor's hot path."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[str, int | None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="spoolq-trash", daemon=True)
        self._thread.start()

    def put(self, where: tuple[str, int | None]) -> None:
        """Unlink ``(name, directory fd)`` (or ``(path, None)``) soon; the fd stays open
        until :meth:`close` returns."""
        self._queue.put(where)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                os.unlink(item[0], dir_fd=item[1])
            except OSError:
                pass  # already gone, or the disk is unhappy: the tmp/ sweep removes it later

    def close(self, timeout_s: float = 10.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout_s)


class SupervisorLock:
    """``spoolq.lock``: one supervisor per spool, with the holder's pid inside for others."""

    def __init__(self, path: Path) -> None:
        self.path = path
        import filelock  # here: only a supervisor or a status probe locks; producers never do

        self._filelock = filelock
        self._lock = filelock.FileLock(str(path), timeout=0, mode=0o600)

    def acquire(self) -> None:
        """Take the lock or raise :class:`SpoolLocked` naming the holder's pid."""
        try:
            self._lock.acquire()
        except self._filelock.Timeout:
            raise SpoolLocked(str(self.path.parent), self.holder()) from None
        # A separate descriptor: filelock's own must stay as it is, and the flock is per open
        # file description, so writing through another one leaves it untouched.
        fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        finally:
            os.close(fd)

    def release(self) -> None:
        """Give the lock up (the pid stays in the file; ``is_held`` is what tells)."""
        self._lock.release()

    def holder(self) -> int | None:
        """The pid written by the holder, if any."""
        try:
            text = self.path.read_text().strip()
            return int(text) if text else None
        except (OSError, ValueError):
            return None

    def is_held(self) -> bool:
        """Whether some process holds the lock now (probes without keeping it)."""
        if not self.path.exists():  # nobody holds it, and probing would create the file
            return False
        probe = self._filelock.FileLock(str(self.path), timeout=0)
        try:
            probe.acquire()
        except self._filelock.Timeout:
            return True
        except OSError:
            return False
        probe.release()
        return False

    def __enter__(self) -> SupervisorLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_renameat2_works = _LIBC is not None and hasattr(_LIBC, "renameat2")


def _rename_noreplace(src: str, dst: str, src_fd: int | None = None, dst_fd: int | None = None) -> None:
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


DISCARDED = ".done."  # in a tmp/ name: a finished job waiting for its unlink


def is_discarded(name: str) -> bool:
    """Whether a ``tmp/`` name is a finished job left by :meth:`Spool.discard`."""
    head, sep, _ = name.partition(DISCARDED)
    return bool(sep) and head.replace(".", "").isdigit()


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words, for rejection reasons and fsck findings."""
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "special file"


def printable(text: str) -> str:
    """``text`` safe to print and log: bytes that are not UTF-8 (a file name's, kept by
    Python as surrogate escapes) as ``\\xNN``, control characters as escapes.

    Any byte string can be a file name; one must never crash a log line or a reason file,
    nor move a terminal's cursor.
    """
    if text.isprintable():
        return text
    try:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that was not a byte of a name
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(ch if ch.isprintable() or ch == " " else repr(ch)[1:-1] for ch in text)


def _safe_name(name: str) -> str:
    """A printable, bounded version of a foreign file's name, for its place in failed/."""
    cleaned = printable(name).replace("/", "_").replace("\\", "_").lstrip(".")
    if len(cleaned.encode("utf-8")) > 150 or not cleaned:
        cleaned = (cleaned.encode("utf-8")[:100].decode("utf-8", "ignore") or "file") + "~"
    return cleaned
