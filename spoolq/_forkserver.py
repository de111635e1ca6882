"""Imported only by the pool's forkserver, as its first preload: make it ignore SIGTERM.

The forkserver is the parent of every pool child and the supervisor learns a child's death
(and exit status) through it.  A SIGTERM sent to the whole process group (systemd's
``KillMode=control-group``, supervisord's ``stopasgroup``) would kill it, and every running
child would then look dead (status 255) while it still runs: its job retried while the first
run goes on.  The supervisor decides when children stop; the forkserver exits by itself when
the supervisor does.  This side effect at import is this module's only purpose.
"""

import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
