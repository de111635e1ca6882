"""examples/webhook: deliveries retried with backoff through 500s and refused connections.

The receiver is an ``http.server`` on 127.0.0.1 in a thread of the test; the worker is a real
``spoolq worker --burst`` process with tiny backoff settings.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from conftest import run_spoolq

import spoolq

EXAMPLE_DIR = Path(__file__).resolve().parent.parent / "examples" / "webhook"
REFUSE_S = 0.5  # how long the receiver is down after its 500: a few retries at 0.2 s at most each

pytestmark = pytest.mark.timeout(120)


class Receiver:
    """Scripted receiver: answers ``statuses`` in turn (None: stop listening for REFUSE_S)."""

    def __init__(self, statuses: list[int | None]) -> None:
        self.statuses = list(statuses)
        self.requests: list[dict] = []
        self.server = self._server(0)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks/orders"
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _server(self, port: int) -> HTTPServer:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                if receiver.statuses and receiver.statuses[0] is None:
                    self.server.socket.close()  # down before the client even reads this answer
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        return HTTPServer(("127.0.0.1", port), Handler)

    def _run(self) -> None:
        while not self.stopping:
            if self.statuses[0] is None:
                self.statuses.pop(0)
                self.server.server_close()
                time.sleep(REFUSE_S)
                self.server = self._server(self.port)  # back up on the same port
            self.server.timeout = 0.05
            self.server.handle_request()
        self.server.server_close()

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping = True
        self.thread.join(10)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_worker(app: spoolq.App) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOOLQ_", "WEBHOOK_"))}
    env.update(
        PYTHONPATH=str(EXAMPLE_DIR),
        WEBHOOK_BACKOFF_S="0.05",
        WEBHOOK_BACKOFF_MAX_S="0.2",
        WEBHOOK_MAX_RETRIES="30",
        WEBHOOK_TIMEOUT_S="5",
    )
    proc = run_spoolq(
        "--spool",
        str(app.spool.path),
        "worker",
        "-I",
        "webhook_tasks",
        "-c",
        "2",
        "--burst",
        cwd=app.spool.path.parent,
        env=env,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def only_file(d: Path) -> dict:
    (name,) = os.listdir(d)
    return json.loads((d / name).read_text())


def test_delivery_survives_a_500_and_a_refused_connection(app: spoolq.App) -> None:
    # Given a receiver that answers 500, then is down (connection refused), then answers 200
    with Receiver([500, None, 200]) as receiver:
        # When a notification is sent by name and a worker runs until nothing is due
        handle = app.send_task("webhook.notify", args=[receiver.url, {"order": 42}], task_id="order-42")
        run_worker(app)

    # Then it was delivered, with the history of what went wrong before
    result = handle.get(timeout=0)
    done = json.loads((app.spool.path / "done" / "order-42.json").read_text())
    errors = done["errors"]
    assert result == {"status": 200, "attempt": len(errors) + 1}
    assert errors[0]["type"] == "DeliveryError" and "HTTP 500" in errors[0]["message"]
    assert len(errors) >= 2 and all(e["type"] == "DeliveryError" for e in errors)
    assert all("Connection refused" in e["message"] for e in errors[1:])
    assert [e["attempt"] for e in errors] == list(range(len(errors)))
    # And the receiver saw the same payload and id on each attempt that reached it
    assert [r["body"] for r in receiver.requests] == [{"order": 42}, {"order": 42}]
    assert [r["headers"]["X-Webhook-Id"] for r in receiver.requests] == ["order-42", "order-42"]
    assert [r["headers"]["X-Webhook-Attempt"] for r in receiver.requests] == ["1", str(len(errors) + 1)]
    assert all(os.listdir(app.spool.path / s) == [] for s in ("new", "ready", "active", "delayed", "failed"))


def test_unreachable_url_gives_up_into_failed_with_the_history(app: spoolq.App) -> None:
    # Given a URL nobody listens on, with a budget of 3 retries for this job
    url = f"http://127.0.0.1:{closed_port()}/hooks"
    app.send_task("webhook.notify", args=[url, {"n": 1}], task_id="unreachable", max_retries=3)

    # When the worker runs
    proc = run_worker(app)

    # Then the job is in failed/ after 4 attempts, each refused connection recorded
    job = only_file(app.spool.path / "failed")
    assert job["id"] == "unreachable" and job["retries"] == 3
    assert [e["type"] for e in job["errors"]] == ["DeliveryError"] * 4
    assert all("Connection refused" in e["message"] for e in job["errors"])
    assert "retries exhausted (3/3)" in proc.stderr
    assert all(os.listdir(app.spool.path / s) == [] for s in ("new", "ready", "active", "delayed", "done"))


def test_a_4xx_is_not_retried(app: spoolq.App) -> None:
    # Given a receiver that refuses the payload
    with Receiver([422]) as receiver:
        app.send_task("webhook.notify", args=[receiver.url, {"bad": True}], task_id="refused")
        run_worker(app)

    # Then the job failed at once: one attempt, one error
    job = only_file(app.spool.path / "failed")
    assert job["retries"] == 0
    assert [(e["type"], e["message"]) for e in job["errors"]] == [
        ("Rejected", f"HTTP 422 Unprocessable Entity from {receiver.url}")
    ]
    assert len(receiver.requests) == 1
