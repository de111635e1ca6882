"""The spool's directories: found by path, or held open once a supervisor has bound them.

A producer finds the spool through its path at each call.  A supervisor (and each pool
child) :meth:`binds <Dirs.bind>` the directory it locked and from then on acts through held
descriptors (``openat``, ``renameat``, ``unlinkat``): a spool renamed or replaced while it
runs is never confused with whatever is at the path afterwards, and :meth:`Dirs.check_place`
says so.  A state directory removed under a bound spool is created again when next needed
(the operation that met its absence is tried once more).
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import JobGone, NameTaken, SpoolError, SpoolGone
from .layout import DIRS, STATES
from .syscalls import O_DIR

log = logging.getLogger("spoolq.spool")


def os_error(exc: OSError, what: str) -> SpoolError:
    """The spool's error for an ``OSError`` met while doing ``what``: :class:`JobGone` for
    a missing file, :class:`NameTaken` for a taken name, else :class:`SpoolError`."""
    text = f"{what}: {exc.strerror or exc}"
    if isinstance(exc, FileNotFoundError):
        return JobGone(text, errno=exc.errno)
    if isinstance(exc, FileExistsError):
        return NameTaken(text, errno=exc.errno)
    return SpoolError(text, errno=exc.errno)


class Dirs:
    """The directories of one spool, by path or through held descriptors.

    Parameters:
        path: the spool's directory.
        dir_mode: permissions of directories created.
    """

    def __init__(self, path: Path, dir_mode: int) -> None:
        self.path = path
        self.dir_mode = dir_mode
        self._root = str(path)
        self._root_fd: int | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the bound directory
        self._fds: dict[str, tuple[int, tuple[int, int]]] = {}  # state -> (fd, its identity)
        self._ready = False

    # -- creation and safety -------------------------------------------------------------

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
            self.check(os.stat(self.path), self.path)
            for state in DIRS:
                d = self.path / state
                try:
                    d.mkdir(mode=self.dir_mode)
                except FileExistsError:
                    pass
                if stat.S_ISLNK(os.lstat(d).st_mode):
                    raise SpoolError(f"spool directory {d} is a symlink; refusing to follow it")
                self.check(os.stat(d), d)
        except OSError as exc:
            raise SpoolError(f"cannot use spool {self.path}: {exc.strerror or exc}", errno=exc.errno) from None
        self._ready = True

    def check(self, st: os.stat_result, d: str | Path) -> None:
        """Refuse a directory that is not ours alone (see :meth:`ensure`)."""
        if not stat.S_ISDIR(st.st_mode):
            raise SpoolError(f"{d} is not a directory")
        if st.st_uid != os.geteuid():
            raise SpoolError(f"spool directory {d} is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})")
        if st.st_mode & 0o022 and not (self.dir_mode & 0o022):
            raise SpoolError(
                f"spool directory {d} is writable by group or others (mode "
                f"{stat.S_IMODE(st.st_mode):04o}); run: chmod go-w {d}"
            )

    def exists(self) -> bool:
        """Whether the spool's layout is there (read-only commands must not create it)."""
        return all((self.path / s).is_dir() for s in STATES)

    # -- binding -------------------------------------------------------------------------

    def bind(self, expect: tuple[int, int] | None = None) -> tuple[int, int]:
        """Hold the spool's directory open and act on it, not on the path, from now on.

        Parameters:
            expect: the ``(st_dev, st_ino)`` the directory must have (a pool child checks that
                the path still leads to its supervisor's spool).
        Returns:
            The directory's ``(st_dev, st_ino)``.
        Raises:
            SpoolGone: the path leads nowhere, or to another directory than ``expect``.
        """
        if self._root_fd is None:
            try:
                fd = os.open(self._root, O_DIR)
            except OSError as exc:
                raise SpoolGone(f"cannot open spool {self.path}: {exc.strerror or exc}", errno=exc.errno) from None
            st = os.fstat(fd)
            if expect is not None and (st.st_dev, st.st_ino) != tuple(expect):
                os.close(fd)
                raise SpoolGone(f"spool {self.path} is not the directory it was: it was moved or replaced")
            self._root_fd, self._identity = fd, (st.st_dev, st.st_ino)
        assert self._identity is not None
        return self._identity

    @property
    def bound(self) -> bool:
        """Whether operations go through held descriptors."""
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
        for state in list(self._fds):
            self._reopen(state)

    def identity_of(self, state: str) -> tuple[int, int] | None:
        """The ``(st_dev, st_ino)`` of a state directory held open (None if not open yet): it
        changes when the directory was removed and created again."""
        entry = self._fds.get(state)
        return entry[1] if entry is not None else None

    def fd(self, state: str) -> int:
        """The held descriptor of a state directory (bound only; opened, or made, on first use)."""
        entry = self._fds.get(state)
        return entry[0] if entry is not None else self._open_state(state)

    def _open_state(self, state: str) -> int:
        root = self._root_fd
        assert root is not None
        try:
            try:
                fd = os.open(state, O_DIR | os.O_NOFOLLOW, dir_fd=root)
            except FileNotFoundError:
                try:
                    os.mkdir(state, self.dir_mode, dir_fd=root)
                except FileExistsError:
                    pass
                fd = os.open(state, O_DIR | os.O_NOFOLLOW, dir_fd=root)
        except FileNotFoundError:
            raise SpoolGone(f"spool {self.path} was removed") from None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise SpoolError(
                    f"spool directory {self.path / state} is not a directory (a symlink is not followed)"
                ) from None
            raise os_error(exc, f"cannot open {self.path / state}") from None
        st = os.fstat(fd)
        try:
            self.check(st, self.path / state)
        except SpoolError:
            os.close(fd)
            raise
        self._fds[state] = (fd, (st.st_dev, st.st_ino))
        return fd

    def _reopen(self, state: str) -> bool:
        """Open a state directory afresh if the one held was removed or moved away, creating
        it again; True if it was."""
        entry = self._fds.get(state)
        if entry is None or self._root_fd is None:
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

    # -- operations ----------------------------------------------------------------------

    def at(self, state: str, name: str) -> tuple[str, int | None]:
        """Where ``name`` in ``state`` is for ``os`` calls: (name, directory fd) when bound,
        else (path, None)."""
        if self._root_fd is not None:
            return name, self.fd(state)
        return f"{self._root}/{state}/{name}", None

    def lost(self, *states: str) -> bool:
        """After ENOENT from an operation in ``states``: whether one of them had lost its
        directory and is now open (made) again, so that the operation may be tried once more."""
        return self._root_fd is not None and any([self._reopen(s) for s in states])

    def open(self, state: str, name: str, flags: int, mode: int = 0o777) -> int:
        """``open`` a file of a state (once more if its directory was lost); raises OSError."""
        where, dir_fd = self.at(state, name)
        try:
            return os.open(where, flags, mode, dir_fd=dir_fd)
        except FileNotFoundError:
            if not self.lost(state):
                raise
        where, dir_fd = self.at(state, name)
        return os.open(where, flags, mode, dir_fd=dir_fd)

    def listing(self, state: str) -> Any:
        """A ``scandir`` iterator over a state directory; FileNotFoundError if it is missing
        (and cannot be made), another OSError if it cannot be read."""
        if self._root_fd is None:
            return os.scandir(f"{self._root}/{state}")
        # A description of its own: two listings of one directory must not share an offset.
        try:
            fd = os.open(".", O_DIR, dir_fd=self.fd(state))
        except FileNotFoundError:
            if not self.lost(state):
                raise
            fd = os.open(".", O_DIR, dir_fd=self.fd(state))
        try:
            return os.scandir(fd)
        finally:
            os.close(fd)  # scandir keeps a duplicate of its own

    def sync(self, state: str) -> None:
        """Flush a state directory's entries to disk.  Raises SpoolError."""
        try:
            if self._root_fd is not None:
                os.fsync(self.fd(state))
                return
            fd = os.open(f"{self._root}/{state}", O_DIR)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise os_error(exc, f"cannot flush {state}/") from None

    def close(self) -> None:
        """Release the held descriptors."""
        fds, self._fds = self._fds, {}
        root, self._root_fd = self._root_fd, None
        for fd, _ in fds.values():
            os.close(fd)
        if root is not None:
            os.close(root)


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
        """Up to ``n`` more names, and whether this pass may have more.  Raises SpoolError."""
        try:
            if self._it is None:
                self._it = self._open()
            names = [de.name for de in itertools.islice(self._it, n)]
        except FileNotFoundError:
            self.close()
            return [], False
        except OSError as exc:
            self.close()
            raise os_error(exc, "cannot list a spool directory") from None
        if len(names) < n:
            self.close()  # the pass is over: the next take starts a new listing
            return names, False
        return names, True

    def close(self) -> None:
        """End the pass (the next :meth:`take` lists afresh)."""
        if self._it is not None:
            it, self._it = self._it, None
            it.close()
