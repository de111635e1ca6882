"""The ``spoolq`` command: parse, wire, echo, and map errors to documented exit codes.

One module per kind of command, each a few lines over :mod:`spoolq.app`, :mod:`spoolq.spool`,
:mod:`spoolq.replay` and :mod:`spoolq.fsck`; nothing here renames or removes a spool file
itself:

- :mod:`~spoolq.cli.group`: the click group, its options, the exit codes, shared helpers;
- :mod:`~spoolq.cli.produce`: ``send``, ``init``;
- :mod:`~spoolq.cli.look`: ``status``, ``ls``, ``show``, ``result``, ``tasks``;
- :mod:`~spoolq.cli.change`: ``retry``, ``delete``, ``purge``;
- :mod:`~spoolq.cli.check`: ``fsck``;
- :mod:`~spoolq.cli.worker`: ``worker`` (banner, logging, progress, the supervisor's run).

Every :class:`~spoolq.errors.SpoolqError` becomes a one-line ``Error: ...`` on stderr and an
exit code from :mod:`~spoolq.cli.group`, never a traceback.  Read-only commands never create
a missing spool.
"""

from . import change, check, look, produce, worker  # noqa: F401 - each adds its commands to the group
from .group import EXIT_JOB, EXIT_OK, EXIT_SPOOL, EXIT_TIMEOUT, EXIT_USAGE, main

__all__ = ["EXIT_JOB", "EXIT_OK", "EXIT_SPOOL", "EXIT_TIMEOUT", "EXIT_USAGE", "main"]
