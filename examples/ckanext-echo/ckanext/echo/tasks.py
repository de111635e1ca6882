"""The extension's tasks.  They use the module-level ``spoolq.task``: the extension never
needs to know where the spool is; whichever worker imports this module runs them by name."""

import spoolq


@spoolq.task(name="NAME.echofunction")
def echo(message):
    """Print the message (it appears on the worker's standard output)."""
    print(message)


def _deliver(message):
    """Stands for a call to a service that is down: always a transient error."""
    raise ConnectionError(f"could not deliver {message!r}: upstream unavailable")


@spoolq.task(name="NAME.flaky_echo", max_retries=10)
def echo_retry(message, countdown=180, max_retries=10):
    """Print the message through a flaky service; on a transient error, retry after
    ``countdown`` seconds, at most ``max_retries`` times, then the job ends in failed/
    with every attempt's error."""
    print(f"attempt {echo_retry.request.retries}: {message}")
    try:
        _deliver(message)
    except ConnectionError as e:
        echo_retry.retry(exc=e, countdown=countdown, max_retries=max_retries)
