"""examples/archiver: fetch, check size, checksum and CSV header; retry the transient, fail the rest.

The source is an ``http.server`` on 127.0.0.1 in a thread; the worker is a real
``spoolq worker --burst`` process with a short request timeout and tiny backoff.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import run_spoolq

import spoolq

EXAMPLE_DIR = Path(__file__).resolve().parent.parent / "examples" / "archiver"
CSV = b"id,name,price\n1,apple,0.5\n2,pear,0.7\n3,plum,0.2\n"
CSV_SHA = hashlib.sha256(CSV).hexdigest()
TIMEOUT_S = 0.5

pytestmark = pytest.mark.timeout(120)


class Source:
    """Serves CSV and not-CSV; ``/flaky`` answers 503 once, ``/slow`` stalls once past the timeout."""

    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        source = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                n = source.hits[self.path] = source.hits.get(self.path, 0) + 1
                if self.path == "/flaky.csv" and n == 1:
                    return self._send(503, b"busy")
                if self.path == "/slow.csv" and n == 1:
                    time.sleep(TIMEOUT_S * 3)
                body = {
                    "/page.csv": b"<html><body>Not found</body></html>",
                    "/latin1.csv": "id,n\xe4me\n".encode("latin-1"),
                    "/big.csv": CSV * 1000,
                }.get(self.path, CSV)
                if self.path == "/gone.csv":
                    return self._send(404, b"")
                self._send(200, body)

            def _send(self, status: int, body: bytes) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "text/csv")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up (the timeout case)
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> Source:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def source() -> Iterator[Source]:
    with Source() as s:
        yield s


def run_worker(app: spoolq.App) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOOLQ_", "ARCHIVER_"))}
    env.update(
        PYTHONPATH=str(EXAMPLE_DIR),
        ARCHIVER_TIMEOUT_S=str(TIMEOUT_S),
        ARCHIVER_BACKOFF_S="0.05",
        ARCHIVER_MAX_RETRIES="5",
        ARCHIVER_MAX_BYTES="10000",
    )
    proc = run_spoolq(
        "--spool",
        str(app.spool.path),
        "worker",
        "-I",
        "archiver_tasks",
        "-c",
        "4",
        "--burst",
        cwd=app.spool.path.parent,
        env=env,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def failed(app: spoolq.App) -> dict[str, dict]:
    jobs = [json.loads(p.read_text()) for p in (app.spool.path / "failed").iterdir()]
    return {j["id"]: j for j in jobs}


def test_good_and_transiently_failing_fetches_are_archived_with_a_receipt(app, source, tmp_path) -> None:
    # Given three sources: a good one, one that answers 503 once, one that stalls once
    archive = tmp_path / "archive"
    archive.mkdir()
    handles = {
        name: app.send_task(
            "archiver.fetch",
            args=[f"{source.base}/{name}.csv", str(archive / f"{name}.csv")],
            kwargs={"sha256": CSV_SHA, "columns": ["id", "price"]},
            task_id=name,
        )
        for name in ("good", "flaky", "slow")
    }

    # When the worker runs
    run_worker(app)

    # Then each file is in place, byte for byte, and its receipt is kept
    for name, handle in handles.items():
        receipt = handle.get(timeout=0)
        assert (archive / f"{name}.csv").read_bytes() == CSV
        assert receipt == {
            "url": f"{source.base}/{name}.csv",
            "path": str(archive / f"{name}.csv"),
            "bytes": len(CSV),
            "sha256": CSV_SHA,
            "columns": ["id", "name", "price"],
            "rows": 3,
        }
    # And the transient failures were retried, their errors kept in the record
    done = {n: json.loads((app.spool.path / "done" / f"{n}.json").read_text()) for n in handles}
    assert done["good"]["errors"] == []
    assert [(e["type"], e["message"]) for e in done["flaky"]["errors"]] == [
        ("TransientError", f"HTTP 503 Service Unavailable from {source.base}/flaky.csv")
    ]
    assert [e["type"] for e in done["slow"]["errors"]] == ["TransientError"]
    assert "timed out" in done["slow"]["errors"][0]["message"]
    assert source.hits["/flaky.csv"] == 2 and source.hits["/slow.csv"] == 2
    assert sorted(os.listdir(archive)) == ["flaky.csv", "good.csv", "slow.csv"]  # no .part left


def test_bad_files_fail_at_once_and_leave_nothing_behind(app, source, tmp_path) -> None:
    # Given sources that are not what they claim to be
    archive = tmp_path / "archive"
    archive.mkdir()
    cases = {  # id: (path, options, expected error type)
        "checksum": ("good.csv", {"sha256": "0" * 64}, "ChecksumMismatch"),
        "html": ("page.csv", {"columns": ["id"]}, "NotCSV"),
        "latin1": ("latin1.csv", {}, "NotCSV"),
        "columns": ("good.csv", {"columns": ["id", "sku"]}, "NotCSV"),
        "big": ("big.csv", {}, "TooLarge"),
        "gone": ("gone.csv", {}, "ArchiveError"),
    }
    for job_id, (path, options, _) in cases.items():
        app.send_task(
            "archiver.fetch",
            args=[f"{source.base}/{path}", str(archive / f"{job_id}.csv")],
            kwargs=options,
            task_id=job_id,
        )

    # When the worker runs
    run_worker(app)

    # Then each failed on its first attempt with the reason, and nothing was archived
    jobs = failed(app)
    assert {i: [e["type"] for e in j["errors"]] for i, j in jobs.items()} == {i: [c[2]] for i, c in cases.items()}
    assert all(j["retries"] == 0 for j in jobs.values())
    assert "lacks sku" in jobs["columns"]["errors"][0]["message"]
    assert "expected 0000" in jobs["checksum"]["errors"][0]["message"]
    assert os.listdir(archive) == []
    with pytest.raises(spoolq.TaskFailed, match="ChecksumMismatch"):
        app.result("checksum").get(timeout=0)
