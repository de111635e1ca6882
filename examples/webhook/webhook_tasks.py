"""A webhook notifier: POST a JSON payload to a URL, retrying with backoff until it gets through.

Enqueue from anywhere, by name (the producer need not import this module)::

    app = spoolq.App("/var/spool/myapp")
    app.send_task("webhook.notify", args=["https://example.org/hooks/orders", {"order": 42}])

or from a shell: ``spoolq send webhook.notify '["https://example.org/hooks", {"order": 42}]'``.
Run the worker with ``spoolq worker -I webhook_tasks`` (this directory on ``PYTHONPATH``).

What happens to a delivery:

- 2xx: done; the status is kept in ``done/`` for a day (``spoolq result ID``).
- connection errors (refused, reset, DNS), timeouts, 5xx, 408 and 429: retried with
  exponential backoff and full jitter (``autoretry_for`` + ``retry_backoff`` + ``retry_jitter``):
  the n-th retry waits a random time between 0 and ``WEBHOOK_BACKOFF_S * 2**n`` seconds, at most
  ``WEBHOOK_BACKOFF_MAX_S``; after ``WEBHOOK_MAX_RETRIES`` retries the job goes to ``failed/``.
- any other 4xx: the receiver refuses the payload, retrying will not help: ``failed/`` at once.

Every attempt's error stays in the job file (``errors``), so ``cat failed/…json`` tells the
whole story.  Delivery is at least once: each request carries ``X-Webhook-Id`` (the job id,
the same on every attempt) so the receiver can drop duplicates.

Settings, read when the module is imported (environment variables of the worker):
``WEBHOOK_BACKOFF_S`` (first backoff, default 2), ``WEBHOOK_BACKOFF_MAX_S`` (cap, default 600),
``WEBHOOK_MAX_RETRIES`` (default 8), ``WEBHOOK_TIMEOUT_S`` (per request, default 10).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import spoolq

BACKOFF_S = float(os.environ.get("WEBHOOK_BACKOFF_S", "2"))
BACKOFF_MAX_S = float(os.environ.get("WEBHOOK_BACKOFF_MAX_S", "600"))
MAX_RETRIES = int(os.environ.get("WEBHOOK_MAX_RETRIES", "8"))
TIMEOUT_S = float(os.environ.get("WEBHOOK_TIMEOUT_S", "10"))
RETRYABLE_STATUS = frozenset({408, 429})  # besides every 5xx


class DeliveryError(Exception):
    """The receiver may accept it later (connection error, timeout, 5xx, 408, 429): retried."""


class Rejected(Exception):
    """The receiver refused the payload (4xx): retrying will not help."""


@spoolq.task(
    name="webhook.notify",
    bind=True,
    autoretry_for=(DeliveryError,),
    retry_backoff=BACKOFF_S,
    retry_backoff_max=BACKOFF_MAX_S,
    retry_jitter=True,
    max_retries=MAX_RETRIES,
    result_ttl=24 * 3600,
)
def notify(self, url: str, payload: object, headers: dict | None = None) -> dict:
    """POST ``payload`` as JSON to ``url``; returns ``{"status": ..., "attempt": ...}``.

    Raises:
        DeliveryError: a transient failure; the job is retried with backoff.
        Rejected: a 4xx other than 408/429; the job fails for good.
    """
    attempt = self.request.retries + 1
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode("utf-8"),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "spoolq-webhook/1",
            "X-Webhook-Id": self.request.id or "",
            "X-Webhook-Attempt": str(attempt),
            **(headers or {}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return {"status": response.status, "attempt": attempt}
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code >= 500 or exc.code in RETRYABLE_STATUS:
            raise DeliveryError(f"HTTP {exc.code} {exc.reason} from {url}") from None
        raise Rejected(f"HTTP {exc.code} {exc.reason} from {url}") from None
    except urllib.error.URLError as exc:  # refused, reset, DNS; a timeout while connecting
        raise DeliveryError(f"cannot reach {url}: {exc.reason}") from None
    except (TimeoutError, ConnectionError) as exc:  # while reading the answer
        raise DeliveryError(f"{url}: {type(exc).__name__}: {exc}") from None
