"""A job's error history, bounded: however often a job fails, its file stays small.

Every failed attempt appends ``{"at", "attempt", "type", "message", "traceback"}`` to the
job's ``errors``.  Unbounded, a job that retries with long tracebacks would grow past the
size limit and be refused by the supervisor that wrote it.  :func:`bound_history` keeps the
first error (the original cause) and the latest ones whole, folds the ones between into one
``SummarisedErrors`` entry (count, types, attempts), cuts long texts (their ends kept) and
says so in the text: at most :data:`MAX_HISTORY_BYTES`.  Pure functions, no I/O.
"""

from __future__ import annotations

from typing import Any

from .codec import encode_json

# A job's error history is bounded, so that a job never outgrows the size limit by retrying:
# the first error (the original cause) and the latest ones are kept, the ones between are
# summarised in one entry, long messages and tracebacks are cut (their ends kept).  Records
# outside new/ may exceed max_job_size by at most this much (see Spool.record_limit).
MAX_HISTORY_BYTES = 64 * 1024
MAX_ERRORS_KEPT = 10
MAX_MESSAGE_CHARS = 1000
MAX_TRACEBACK_CHARS = 4000
MAX_TYPE_CHARS = 200


def _cut(text: Any, limit: int, *, keep_head: int) -> Any:
    """``text`` cut to about ``limit`` characters, its head and tail kept, saying how much
    went; anything but a string is left as it is."""
    if not isinstance(text, str) or len(text) <= limit:
        return text
    tail = limit - keep_head
    cut = len(text) - keep_head - tail
    return f"{text[:keep_head]}\n[... {cut} characters cut to keep the job file small ...]\n{text[-tail:]}"


def _trim(error: dict) -> dict:
    out = dict(error)
    out["type"] = _cut(out.get("type"), MAX_TYPE_CHARS, keep_head=MAX_TYPE_CHARS // 2)
    out["message"] = _cut(out.get("message"), MAX_MESSAGE_CHARS, keep_head=MAX_MESSAGE_CHARS // 2)
    # The end of a traceback (the raising frame and the error) matters most.
    out["traceback"] = _cut(out.get("traceback"), MAX_TRACEBACK_CHARS, keep_head=MAX_TRACEBACK_CHARS // 4)
    return out


def _summary(errors: list[dict]) -> dict:
    """One entry standing for several: how many, of which types, over which attempts."""
    count = sum(int(e.get("summarised") or 1) for e in errors)
    types: dict[str, int] = {}
    for e in errors:
        for name, n in (e.get("types") or {str(e.get("type")): 1}).items():
            key = str(name)[:MAX_TYPE_CHARS]
            types[key] = types.get(key, 0) + (n if isinstance(n, int) else 1)
    first, last = errors[0], errors[-1]
    kinds = ", ".join(f"{name} x{n}" for name, n in sorted(types.items(), key=lambda kv: -kv[1])[:10])
    return {
        "at": first.get("at"),
        "attempt": first.get("attempt"),
        "type": "SummarisedErrors",
        "message": f"{count} errors of attempts {first.get('attempt')} to {last.get('attempt')} summarised "
        f"to keep the job file small ({kinds}); the last was: {_cut(str(last.get('message')), 200, keep_head=100)}",
        "traceback": "",
        "summarised": count,
        "types": dict(sorted(types.items(), key=lambda kv: -kv[1])[:20]),
        "until": last.get("at"),
    }


def _history_size(errors: Any) -> int:
    return len(encode_json(list(errors)))


def bound_history(errors: tuple[dict, ...] | list[dict]) -> tuple[dict, ...]:
    """An error history that fits :data:`MAX_HISTORY_BYTES`, saying what it left out.

    Long texts are cut (:data:`MAX_MESSAGE_CHARS`, :data:`MAX_TRACEBACK_CHARS`); of more
    than :data:`MAX_ERRORS_KEPT` entries the first and the latest are kept whole and those
    between become one ``SummarisedErrors`` entry (count, types, attempts); then, while still
    too large, more are folded into it, and as a last resort entries lose their tracebacks
    and fields this version does not know.
    """
    entries = [_trim(e) for e in errors]
    if len(entries) > MAX_ERRORS_KEPT:
        keep_last = MAX_ERRORS_KEPT - 2
        entries = [entries[0], _summary(entries[1:-keep_last]), *entries[-keep_last:]]
    if _history_size(entries) <= MAX_HISTORY_BYTES:
        return tuple(entries)
    while len(entries) > 3 and _history_size(entries) > MAX_HISTORY_BYTES:
        entries = [entries[0], _summary(entries[1:3]), *entries[3:]]
    if _history_size(entries) > MAX_HISTORY_BYTES:  # foreign entries with huge fields of their own
        entries = [_bare(e) for e in entries]
    return tuple(entries)


def _bare(error: dict) -> dict:
    """An entry reduced to short known fields: the last resort of :func:`bound_history`."""
    attempt = error.get("attempt")
    return {
        "at": _cut(str(error.get("at")), 64, keep_head=32),
        "attempt": attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else None,
        "type": _cut(str(error.get("type")), MAX_TYPE_CHARS, keep_head=MAX_TYPE_CHARS // 2),
        "message": _cut(str(error.get("message")), MAX_MESSAGE_CHARS, keep_head=MAX_MESSAGE_CHARS // 2),
        "traceback": "",
    }
