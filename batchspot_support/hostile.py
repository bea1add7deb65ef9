"""Hostile sources (issue 11), one place for ``invoke chaos --hostile`` and the test suites.

They live in the support package, not under ``tests/``, because the chaos driver seeds some
of them amid healthy traffic too.

Each is built as it is compressed, never held whole: a bomb of 1 GiB is a few MB here.
``CASES`` maps a name to how to build the object, the query, the input format (as
:class:`worker.messages.InputFormat` fields) and a fragment of the expected outcome.
"""

from __future__ import annotations

import bz2
import gzip
import zlib
from collections.abc import Callable, Iterable
from typing import Any

MIB = 1 << 20
# Issue 14's peak-RSS budgets for one worker process: one that never loads the vectorised fast
# path keeps to the original job's 128 MiB; one that loaded pyarrow for a scan may take 256 MiB.
LEAN_PEAK_RSS_KIB = 128 * 1024
FAST_PATH_PEAK_RSS_KIB = 256 * 1024


def peak_rss_budget_kib(loaded_fast_path: bool) -> int:
    """Return the peak-RSS bound of a worker process, by whether it ran the fast path."""
    return FAST_PATH_PEAK_RSS_KIB if loaded_fast_path else LEAN_PEAK_RSS_KIB


def ran_fast_path(log_events: Iterable[dict[str, Any]]) -> bool:
    """Return whether a process's ``query-path`` log events show it ran the fast path."""
    return any(e.get("event") == "query-path" and e.get("path") == "fast" for e in log_events)


def gzipped(*parts: tuple[bytes, int]) -> bytes:
    """Return the gzip of each part repeated ``count`` times, compressed as it goes."""
    packer = zlib.compressobj(9, wbits=31)
    out = [packer.compress(chunk) for chunk, count in parts for _ in range(count)]
    return b"".join([*out, packer.flush()])


def bomb(compress: Callable[[bytes], bytes]) -> bytes:
    """1 GiB of 1 KiB lines as 64 members (gzip) or streams (bzip2) of 16 MiB each."""
    return compress((b"a" * 1023 + b"\n") * (16 << 10)) * 64


X_MIB = b"x" * MIB
RECORD = b'{"i":1,"s":"' + b"y" * 49 + b'"}\n'  # 64 bytes
CASES: dict[str, tuple[Callable[[], bytes], str, dict[str, str], str]] = {
    "64 MiB CSV line in gzip": (
        lambda: gzipped((b"a\n", 1), (X_MIB, 64), (b"\n", 1)),
        "SELECT COUNT(*) FROM S3Object s",
        {"compression": "GZIP"},
        "OverMaxRecordSize",
    ),
    "64 MiB JSON line in gzip": (
        lambda: gzipped((b'{"a":"', 1), (X_MIB, 64), (b'"}\n', 1)),
        "SELECT COUNT(*) FROM S3Object s",
        {"kind": "JSON", "compression": "GZIP"},
        "OverMaxRecordSize",
    ),
    "64 MiB DOCUMENT string in gzip": (
        lambda: gzipped((b'{"a":"', 1), (X_MIB, 64), (b'"}', 1)),
        "SELECT COUNT(*) FROM S3Object s",
        {"kind": "JSON", "json_type": "DOCUMENT", "compression": "GZIP"},
        "OverMaxRecordSize",
    ),
    "64 MiB DOCUMENT root array in gzip": (
        lambda: gzipped((b"[", 1), (b"1," * (MIB // 2), 64), (b"1]", 1)),
        "SELECT COUNT(*) FROM S3Object s",
        {"kind": "JSON", "json_type": "DOCUMENT", "compression": "GZIP"},
        "OverMaxRecordSize",
    ),
    "gzip bomb, 1 GiB of lines": (
        lambda: bomb(lambda block: gzip.compress(block, 9)),
        "SELECT COUNT(*) FROM S3Object s",
        {"compression": "GZIP"},
        "decompression bomb",
    ),
    "bzip2 bomb, 1 GiB of lines": (
        lambda: bomb(lambda block: bz2.compress(block, 9)),
        "SELECT COUNT(*) FROM S3Object s",
        {"compression": "BZIP2"},
        "decompression bomb",
    ),
    "100000-deep DOCUMENT": (
        lambda: b"[" * 100_000 + b"]" * 100_000,
        "SELECT * FROM S3Object s",
        {"kind": "JSON", "json_type": "DOCUMENT"},
        "nests JSON deeper than 64 levels",
    ),
    "32 MiB DOCUMENT of small records in gzip, streamed": (
        lambda: gzipped((RECORD, 32 * MIB // len(RECORD))),
        "SELECT COUNT(*) FROM S3Object s WHERE s.i = 1",
        {"kind": "JSON", "json_type": "DOCUMENT", "compression": "GZIP"},
        '{"_1":524288}',
    ),
}

# Hostile queries (and formats) over small, plain sources: the SQL or the format is the attack.
LONG_FIELD = b"t\n" + b"a" * 4000 + b"\n"
QUERY_CASES: dict[str, tuple[Callable[[], bytes], str, dict[str, str], str]] = {
    "LIKE blow-up": (
        lambda: LONG_FIELD,
        "SELECT * FROM S3Object s WHERE s.t LIKE '%a%a%a%a%a%a%a%a%b'",
        {},
        "",  # linear now: no record matches, and the empty result is stored
    ),
    "|| blow-up": (
        lambda: b"t\n" + b"a" * 300_000 + b"\n",
        "SELECT s.t || s.t || s.t || s.t FROM S3Object s",
        {},
        "OverMaxRecordSize",
    ),
    "deeply nested SQL": (
        lambda: LONG_FIELD,
        "SELECT * FROM S3Object s WHERE " + "(" * 1000 + "s.t = 'a'" + ")" * 1000,
        {},
        "parentheses",
    ),
    "huge numeric literal": (
        lambda: LONG_FIELD,
        "SELECT * FROM S3Object s WHERE CAST(s.t AS INT) > " + "9" * 100_000,
        {},
        "",
    ),
    "delimiter is a newline": (
        lambda: LONG_FIELD,
        "SELECT * FROM S3Object s",
        {"delimiter": "\n"},
        "",
    ),
    "quote equal to the delimiter": (
        lambda: LONG_FIELD,
        "SELECT * FROM S3Object s",
        {"quote": ","},
        "",
    ),
}


def message_input(fields: dict[str, str]) -> dict[str, str]:
    """InputFormat's field names as the message contract spells them (``kind`` is ``format``)."""
    return {("format" if name == "kind" else name): value for name, value in fields.items()}
