"""Bytes in named files of the spool's state directories: write, read, list, rename, remove.

The file level of the spool, below :class:`spoolq.spool.Spool` (which knows jobs): a file is
addressed by ``(state, name)``, found through :class:`spoolq.dirs.Dirs` (by path, or through
held descriptors once bound), and every failure is a :class:`~spoolq.errors.SpoolError`:
:class:`~spoolq.errors.JobGone` when the file is not there, :class:`~spoolq.errors.NameTaken`
when a target is, plain ``SpoolError`` (with its ``errno``) for the rest.  No raw ``OSError``
leaves this module.

A new file is written the Maildir way (SPEC §1): a unique ``O_EXCL`` name in ``tmp/``, write,
fsync, rename into place with ``RENAME_NOREPLACE`` (a clash raises instead of overwriting),
fsync the directory.  A reader never sees half a file.  Renames between states are flushed
in batches by :meth:`Store.barrier`.  Files are read without following a symlink and without
blocking on a FIFO; nothing outside the spool is opened, changed or removed.
"""

from __future__ import annotations

import errno
import itertools
import os
import secrets
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .dirs import Dirs, NameCursor, os_error
from .errors import HardLinked, JobFormatError, JobGone, SpoolError
from .history import MAX_HISTORY_BYTES
from .layout import LOCK_NAME, NEW, TMP, file_kind, parse_name, printable, tmp_name
from .lock import SupervisorLock
from .syscalls import O_CREATE, O_READ, rename_noreplace

DEFAULT_MAX_JOB_SIZE = 1024 * 1024


@dataclass(frozen=True)
class Entry:
    """A file in a state directory and what its name says."""

    state: str
    name: str
    job_id: str | None  # None when the name is not a job's name
    when: datetime | None  # due time (delayed), ready time (ready), failure time (failed)
    path: Path  # for people: where to look with ls and cat
    inode: int = 0  # from the listing (no stat): names that share one are one file


class Store:
    """The files of one spool directory.

    Parameters:
        path: the spool's directory; created (with its states) on first use.
        fsync: flush files and directories to disk before a write or move counts as done.
            ``False`` trades durability on power loss for speed; a process crash still loses
            nothing.
        max_job_size: largest file accepted in ``new/``, in bytes; the records the
            supervisor writes elsewhere may be larger by the bounded error history
            (:attr:`record_limit`).
        dir_mode, file_mode: permissions of new directories and files.
        create: create missing directories (the CLI's read-only commands pass False).
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
        self._root = str(self.path)
        self._counter = itertools.count(1)
        self._dirty: set[str] = set()
        self._pid = os.getpid()
        self._salt = secrets.token_hex(3)
        self.dirs = Dirs(self.path, dir_mode)
        if create:
            self.ensure()

    # -- layout and safety ---------------------------------------------------------------

    def dir(self, state: str) -> Path:
        """The directory of a state (or ``tmp``), by path."""
        return self.path / state

    def path_of(self, state: str, name: str) -> Path:
        """Where a file is, by path: for messages and for people, never for I/O here."""
        return self.path / state / name

    def ensure(self) -> None:
        """Create the layout if missing and refuse a spool that is not safely ours.

        Raises:
            SpoolError: owned by another user, writable by group or others, a symlink,
                or not creatable.
        """
        self.dirs.ensure()

    def exists(self) -> bool:
        """Whether the spool's layout is there (read-only commands must not create it)."""
        return self.dirs.exists()

    def lock(self) -> SupervisorLock:
        """The supervisor's lock on this spool (not yet acquired)."""
        return SupervisorLock(self.path / LOCK_NAME)

    # -- the bound directory (see spoolq.dirs) ---------------------------------------------

    def bind(self, expect: tuple[int, int] | None = None) -> tuple[int, int]:
        """Act on the spool's directory, not its path, from now on; see :meth:`Dirs.bind`."""
        return self.dirs.bind(expect)

    @property
    def bound(self) -> bool:
        """Whether this spool acts through held directory descriptors."""
        return self.dirs.bound

    def check_place(self) -> None:
        """Raise SpoolGone if the spool is no longer at its path; see :meth:`Dirs.check_place`."""
        self.dirs.check_place()

    def identity_of(self, state: str) -> tuple[int, int] | None:
        """The identity of a held state directory; see :meth:`Dirs.identity_of`."""
        return self.dirs.identity_of(state)

    # -- files ----------------------------------------------------------------------------

    def _write_tmp(self, data: bytes, *, flush: bool = True) -> str:
        """Write ``data`` to a fresh file in ``tmp/`` (flushed with fsync on and ``flush``);
        its name there, for the caller to publish.  Nothing is left behind on an error."""
        pid = os.getpid()
        if pid != self._pid:  # forked: names of its own
            self._pid, self._salt = pid, secrets.token_hex(3)
        name = tmp_name(time.time_ns(), pid, next(self._counter), self._salt)
        try:
            fd = self.dirs.open(TMP, name, O_CREATE, self.file_mode)
        except OSError as exc:
            raise os_error(exc, f"cannot write to spool {self.path}") from None
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
            raise os_error(exc, f"cannot write to spool {self.path}") from None
        return name

    def write_bytes(self, state: str, name: str, data: bytes, *, replace: bool = False) -> None:
        """See :meth:`write`; ``data`` is written as it is."""
        tmp = self._write_tmp(data)
        try:
            self._rename(TMP, tmp, state, name, replace=replace)
        except SpoolError:
            self._unlink_quietly(TMP, tmp)
            raise
        self._sync_dir(state)

    # -- reading -------------------------------------------------------------------------

    def limit_of(self, state: str) -> int:
        """The largest file accepted in ``state``: ``max_job_size`` for what producers write
        (``new/``), :attr:`record_limit` for the records the supervisor writes."""
        return self.max_job_size if state == NEW else self.record_limit

    def read_bytes(self, state: str, name: str) -> bytes:
        """Read a regular file without following a symlink and without blocking on a FIFO.

        Raises:
            JobFormatError: not a regular file, a hard link (:class:`HardLinked`), or over
                its state's limit; the message names the cause.
            JobGone: it is not there (another process moved it).
            SpoolError: it cannot be read (``errno`` says why: EACCES, EIO...).
        """
        limit = self.limit_of(state)
        try:
            fd = self.dirs.open(state, name, O_READ)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise JobFormatError("a symlink, not a job file (not followed)") from None
            raise os_error(exc, f"cannot read {state}/{printable(name)}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise JobFormatError(f"a {file_kind(st.st_mode)}, not a job file")
            if st.st_nlink > 1:
                raise HardLinked(f"a hard link ({st.st_nlink} links): may belong outside the spool, not read", st)
            if st.st_size > limit:
                raise JobFormatError(f"{st.st_size} bytes, over the limit of {limit} bytes")
            chunks, remaining = [], limit + 1
            while remaining > 0 and (chunk := os.read(fd, min(remaining, 1 << 20))):
                chunks.append(chunk)
                remaining -= len(chunk)
        except OSError as exc:
            raise os_error(exc, f"cannot read {state}/{printable(name)}") from None
        finally:
            os.close(fd)
        data = b"".join(chunks)
        if len(data) > limit:
            raise JobFormatError(f"over the limit of {limit} bytes")
        return data

    def lstat(self, state: str, name: str) -> os.stat_result:
        """``lstat`` of a spool file.  Raises JobGone, SpoolError."""
        try:
            where, dir_fd = self.dirs.at(state, name)
            return os.stat(where, dir_fd=dir_fd, follow_symlinks=False)
        except OSError as exc:
            raise os_error(exc, f"cannot look at {state}/{printable(name)}") from None

    def has(self, state: str, name: str) -> bool:
        """Whether ``name`` is in ``state`` (as any kind of file; links are not followed)."""
        try:
            self.lstat(state, name)
        except JobGone:
            return False
        return True

    def scan(self, state: str) -> Iterator[Entry]:
        """The entries of a state directory, unsorted (the listing is the truth); none if
        the directory is missing.  Raises SpoolError if it cannot be listed."""
        try:
            it = self.dirs.listing(state)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise os_error(exc, f"cannot list {state}/") from None
        base = self.path / state
        with it:
            for de in it:
                job_id, when = parse_name(state, de.name)
                yield Entry(state, de.name, job_id, when, base / de.name, de.inode())

    def names(self, state: str, limit: int | None = None) -> list[str]:
        """Up to ``limit`` file names of a state, unsorted.  Raises SpoolError."""
        try:
            with self.dirs.listing(state) as it:
                return [de.name for de in itertools.islice(it, limit)]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise os_error(exc, f"cannot list {state}/") from None

    def entries(self, state: str) -> list[Entry]:
        """The entries of a state, sorted by name (dispatch order in ``ready/``, due order in
        ``delayed/``, failure order in ``failed/``)."""
        return sorted(self.scan(state), key=lambda e: e.name)

    def cursor(self, state: str) -> NameCursor:
        """Names of a state taken a batch at a time, continuing one listing between calls."""
        return NameCursor(lambda: self.dirs.listing(state))

    def count(self, state: str) -> int:
        """How many entries a state holds."""
        return sum(1 for _ in self.scan(state))

    # -- moves ---------------------------------------------------------------------------

    def _rename(self, state: str, name: str, to_state: str, to_name: str, *, replace: bool = False) -> None:
        for attempt in (1, 2):  # once more if a state had lost its directory
            try:
                src, src_fd = self.dirs.at(state, name)
                dst, dst_fd = self.dirs.at(to_state, to_name)
                if replace:
                    os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
                else:
                    rename_noreplace(src, dst, src_fd, dst_fd)
                return
            except FileNotFoundError as exc:
                if attempt == 2 or not self.dirs.lost(to_state, state):
                    raise os_error(exc, f"cannot move {state}/{printable(name)} to {to_state}/") from None
            except OSError as exc:
                raise os_error(exc, f"cannot move {state}/{printable(name)} to {to_state}/") from None

    def move(self, state: str, name: str, to_state: str, to_name: str) -> None:
        """Rename a file into another state; its directories are flushed by the next
        :meth:`barrier`.  Raises JobGone, NameTaken (never replaces), SpoolError."""
        self._rename(state, name, to_state, to_name)
        self._dirty.add(state)
        self._dirty.add(to_state)

    def _at_unlink(self, state: str, name: str) -> None:
        where, dir_fd = self.dirs.at(state, name)
        os.unlink(where, dir_fd=dir_fd)

    def _unlink_quietly(self, state: str, name: str) -> None:
        try:
            self._at_unlink(state, name)
        except (OSError, SpoolError):
            pass

    def remove(self, state: str, name: str) -> None:
        """Unlink a file of the spool (a finished job, an expired result).  Raises JobGone,
        SpoolError."""
        try:
            self._at_unlink(state, name)
        except OSError as exc:
            raise os_error(exc, f"cannot remove {state}/{printable(name)}") from None
        self._dirty.add(state)

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
        Raises SpoolError; the directories not flushed stay due for the next one."""
        while self._dirty:
            state = next(iter(self._dirty))
            self._sync_dir(state)
            self._dirty.discard(state)

    def _sync_dir(self, state: str) -> None:
        if self.fsync:
            self.dirs.sync(state)

    def close(self) -> None:
        """Finish pending background unlinks and release the held directory descriptors."""
        if os.getpid() == self._pid:
            self.dirs.close()
