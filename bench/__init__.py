"""spoolq's benchmark: ``python -m bench`` runs spoolq and its peers and prints one table.

See ``bench/harness.py`` (the combined run), ``bench/peers/`` (the peers' half, whose
workload code also measures spoolq), ``bench/enqueue.py`` and ``bench/worker.py`` (older
spoolq-only scripts; the bare file-system limit and /proc helpers are reused from them).
"""
