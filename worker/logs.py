"""Structured logs: one JSON object a line on stdout, which CloudWatch Logs indexes as is.

Every line stays under ``MAX_LINE_BYTES``: Docker reads a container's output through a 16 KiB
buffer and passes a longer line on in pieces, flagged as partial (moby's
``daemon/logger/copier.go``, ``bufSize = 16 * 1024``; moby/moby#22982, #34855). The awslogs
driver ignores that flag and sends each piece as an event of its own
(aws/shim-loggers-for-containerd#23), so a longer line would reach CloudWatch as fragments
that are not JSON. Long strings are therefore cut, with a marker saying how much went.

A line may also carry CloudWatch metrics (``emf``, see :class:`worker.metrics.MetricSet`):
its ``_aws`` block is written as built, never cut, so a line cut to fit still declares only
metrics it holds.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from worker.metrics import EMF_ROOT

if TYPE_CHECKING:
    from worker.metrics import MetricSet

# Docker's buffer holds 16 KiB, the newline included.
MAX_LINE_BYTES = 16 * 1024 - 1
# A string cut for a line keeps at least this much; a line still too long loses its fields.
MIN_STRING_BYTES = 64
# When strings are cut to N bytes, lists and nested mappings keep N / ITEM_BYTES items.
ITEM_BYTES = 32
# Containers deeper than this are logged as their (cut) text: logs are not for data.
MAX_DEPTH = 8
# Integers beyond this are logged as text: readers that use doubles (JavaScript) would round
# them, and past 4300 digits Python will not even print them.
MAX_EXACT_INT = 2**53

_lock = threading.Lock()


def log(event: str, emf: MetricSet | None = None, **fields: Any) -> None:
    """Write one log line; the lock keeps lines from interleaving across worker threads.

    With ``emf``, the line also declares the metrics among ``fields`` for CloudWatch.
    """
    now = time.time()
    record = {"ts": round(now, 3), "event": event, **fields}
    if emf is not None:
        record.update(emf.embed(record, int(now * 1000)))
    line = _line(record)
    with _lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def brief(text: object, limit: int = 200) -> str:
    """Return ``text`` (SQL, an error message) cut to about ``limit`` UTF-8 bytes, for a log.

    What is cut is replaced by a marker naming how many bytes went, so a reader knows the
    value is incomplete. Anything that is not a ``str`` is first turned into one.
    """
    return _cut(_text(text), limit)


def _line(record: dict[str, Any]) -> str:
    """Encode ``record``, cutting its strings shorter and shorter until the line fits."""
    line = json.dumps(_plain(record, None, 0), ensure_ascii=False)
    size = _utf8_size(line)
    limit = MAX_LINE_BYTES // 2
    while size > MAX_LINE_BYTES and limit >= MIN_STRING_BYTES:
        line = json.dumps(_plain(record, limit, 0), ensure_ascii=False)
        size = _utf8_size(line)
        limit //= 2
    if size <= MAX_LINE_BYTES:
        return line
    # Too many fields for any cut to help: say so rather than split the line.
    return json.dumps(
        {
            "ts": record["ts"],
            "event": _cut(_text(record["event"]), MIN_STRING_BYTES),
            "log_error": f"{size} bytes of fields left out, too many to fit a log line",
        },
        ensure_ascii=False,
    )


def _plain(value: Any, limit: int | None, depth: int) -> Any:
    """Return ``value`` as JSON types only, its strings cut to ``limit`` bytes.

    Whatever ``json.dumps`` would refuse or spell as invalid JSON (other types, keys that are
    not strings, NaN, integers too big to print) becomes text, so logging never raises.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -MAX_EXACT_INT <= value <= MAX_EXACT_INT else _int_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _cut(_valid(value), limit)
    if depth < MAX_DEPTH and isinstance(value, dict):
        # The record's own fields (depth 0) are all kept; nested mappings are cut like lists.
        pairs = list(value.items())
        kept = pairs if depth == 0 else _first(pairs, limit)
        plain = {
            _cut(_text(k), limit): v
            if depth == 0 and k == EMF_ROOT
            else _plain(v, limit, depth + 1)
            for k, v in kept
        }
        if len(kept) < len(pairs):
            plain["…"] = f"[truncated {len(pairs) - len(kept)} entries]"
        return plain
    if depth < MAX_DEPTH and isinstance(value, list | tuple):
        items = [_plain(item, limit, depth + 1) for item in _first(value, limit)]
        if len(items) < len(value):
            items.append(f"…[truncated {len(value) - len(items)} items]")
        return items
    return _cut(_text(value), limit if limit is not None else MAX_LINE_BYTES)


def _first(items: Sequence[Any], limit: int | None) -> Sequence[Any]:
    """Return the items a container keeps when its strings are cut to ``limit`` bytes."""
    return items if limit is None else items[: max(1, limit // ITEM_BYTES)]


def _int_text(value: int) -> str:
    try:
        return str(value)
    except ValueError:  # past sys.get_int_max_str_digits()
        return f"<integer of {value.bit_length()} bits>"


def _text(value: object) -> str:
    """Return ``str(value)``, or a placeholder if that raises: a log call must not fail."""
    if isinstance(value, str):
        return _valid(value)
    try:
        return _valid(str(value))
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def _valid(text: str) -> str:
    """Replace lone surrogates (from undecodable bytes), which stdout cannot encode."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", errors="replace").decode("utf-8")
    return text


def _cut(text: str, limit: int | None) -> str:
    if limit is None or len(text) <= limit // 4:  # 4 bytes a character at most
        return text
    size = _utf8_size(text)
    if size <= limit:
        return text
    kept = text[:limit].encode("utf-8")[:limit].decode("utf-8", errors="ignore")
    return f"{kept}…[truncated {size - _utf8_size(kept)} bytes]"


def _utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def records(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Yield the JSON objects :func:`log` wrote among ``lines``, skipping other text.

    Other text is a traceback or a custom command's stderr; this is the one reader of the
    worker's log lines.
    """
    for line in lines:
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record
