"""An archiver: fetch a CSV file from a URL, check it, keep it, and keep a receipt.

As CKAN's archiver does for a dataset's resources: download to a file, refuse what is too
large, verify the SHA-256 the publisher announced, check that it really is the CSV it claims to
be (UTF-8, a header with the expected columns), then move it into place atomically.  The
receipt (path, size, checksum, columns, rows) is kept in ``done/`` for a week::

    app = spoolq.App("/var/spool/myapp")
    r = app.send_task("archiver.fetch", args=["https://example.org/data.csv", "/srv/archive/data.csv"],
                      kwargs={"sha256": "9f86d0…", "columns": ["id", "name"]})
    r.get(timeout=60)   # {"path": "/srv/archive/data.csv", "bytes": 1234, "sha256": "…", ...}

Transient errors (connection errors, timeouts, 5xx, 429) are retried with exponential backoff
and jitter; a wrong checksum, a file that is not the expected CSV, a 4xx or a file over the
limit fail at once into ``failed/`` (retrying would fetch the same bytes), and nothing is left
at the destination.

Settings (environment of the worker, read at import): ``ARCHIVER_TIMEOUT_S`` (default 30),
``ARCHIVER_BACKOFF_S`` (first backoff, default 5), ``ARCHIVER_MAX_RETRIES`` (default 5),
``ARCHIVER_MAX_BYTES`` (default 100 MiB).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import urllib.error
import urllib.request

import spoolq

TIMEOUT_S = float(os.environ.get("ARCHIVER_TIMEOUT_S", "30"))
BACKOFF_S = float(os.environ.get("ARCHIVER_BACKOFF_S", "5"))
MAX_RETRIES = int(os.environ.get("ARCHIVER_MAX_RETRIES", "5"))
MAX_BYTES = int(os.environ.get("ARCHIVER_MAX_BYTES", str(100 * 1024 * 1024)))
RESULT_TTL_S = 7 * 24 * 3600
CHUNK = 64 * 1024


class TransientError(Exception):
    """The source may answer later: a connection error, a timeout, a 5xx or 429.  Retried."""


class ArchiveError(Exception):
    """The file is not what was promised; fetching it again gives the same bytes.  Not retried."""


class TooLarge(ArchiveError):
    """Over the size limit."""


class ChecksumMismatch(ArchiveError):
    """The SHA-256 is not the announced one."""


class NotCSV(ArchiveError):
    """Not UTF-8 CSV, or the header lacks expected columns."""


@spoolq.task(
    name="archiver.fetch",
    autoretry_for=(TransientError,),
    retry_backoff=BACKOFF_S,
    retry_jitter=True,
    max_retries=MAX_RETRIES,
    result_ttl=RESULT_TTL_S,
)
def fetch(
    url: str, dest: str, sha256: str | None = None, columns: list[str] | None = None, max_bytes: int | None = None
) -> dict:
    """Download ``url`` to ``dest`` if it checks out; return the receipt.

    Parameters:
        url: where to fetch from.
        dest: the file to create or replace (its directory must exist).
        sha256: the expected hex digest, if the publisher gave one.
        columns: column names the CSV header must contain (any order, extras allowed).
        max_bytes: refuse larger files (default ``ARCHIVER_MAX_BYTES``).
    Raises:
        TransientError: retried with backoff.
        ArchiveError: TooLarge, ChecksumMismatch or NotCSV; the job fails at once.
    """
    limit = MAX_BYTES if max_bytes is None else max_bytes
    part = f"{dest}.part"
    try:
        size, digest = _download(url, part, limit)
        if sha256 is not None and digest != sha256.lower():
            raise ChecksumMismatch(f"sha256 of {url} is {digest}, expected {sha256.lower()}")
        header, rows = _check_csv(part, columns or [])
        os.replace(part, dest)
    finally:
        if os.path.exists(part):
            os.unlink(part)
    return {"url": url, "path": dest, "bytes": size, "sha256": digest, "columns": header, "rows": rows}


def _download(url: str, part: str, limit: int) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(part, "wb") as out:
            announced = response.headers.get("Content-Length")
            if announced is not None and announced.isdigit() and int(announced) > limit:
                raise TooLarge(f"{url} announces {announced} bytes, over the limit of {limit}")
            while chunk := response.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"{url} is over the limit of {limit} bytes")
                digest.update(chunk)
                out.write(chunk)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code >= 500 or exc.code == 429:
            raise TransientError(f"HTTP {exc.code} {exc.reason} from {url}") from None
        raise ArchiveError(f"HTTP {exc.code} {exc.reason} from {url}") from None
    except urllib.error.URLError as exc:
        raise TransientError(f"cannot reach {url}: {exc.reason}") from None
    except (TimeoutError, ConnectionError) as exc:
        raise TransientError(f"{url}: {type(exc).__name__}: {exc or 'timed out'}") from None
    return size, digest.hexdigest()


def _check_csv(path: str, columns: list[str]) -> tuple[list[str], int]:
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            text = fh.read()
    except UnicodeDecodeError as exc:
        raise NotCSV(f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    try:
        reader = csv.reader(io.StringIO(text), strict=True)
        header = next(reader, None)
        rows = sum(1 for _ in reader)
    except csv.Error as exc:
        raise NotCSV(f"not valid CSV: {exc}") from None
    if not header:
        raise NotCSV("empty file: no CSV header")
    header = [h.strip() for h in header]
    missing = [c for c in columns if c not in header]
    if missing:
        raise NotCSV(f"the CSV header lacks {', '.join(missing)} (header: {', '.join(header)[:200]})")
    return header, rows
