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
import math
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


# --- Parquet (issue 22): a valid file, then each way its footer or pages can lie ----------

PARQUET_ROWS = 12345  # a count whose varint is found only where the footer counts rows


def parquet_file(columns: dict[str, Any], **options: Any) -> bytes:
    """Return ``columns`` (name -> pyarrow array or list) written as one Parquet file."""
    import pyarrow as pa  # the support package's one pyarrow user: imported only here
    import pyarrow.parquet as pq

    out = pa.BufferOutputStream()
    pq.write_table(pa.table(columns), out, **options)
    return out.getvalue().to_pybytes()


def healthy_parquet(rows: int = PARQUET_ROWS) -> bytes:
    """Return a file of an integer and a text column, one row group."""
    return parquet_file({"i": list(range(rows)), "s": [f"row {i}" for i in range(rows)]})


def _footer(data: bytes) -> tuple[bytes, bytes]:
    """Split a Parquet file into its body and its footer (the trailer dropped)."""
    length = int.from_bytes(data[-8:-4], "little")
    return data[: -8 - length], data[-8 - length : -8]


def _framed(body: bytes, footer: bytes) -> bytes:
    return body + footer + len(footer).to_bytes(4, "little") + b"PAR1"


def _varint(value: int) -> bytes:
    """Thrift compact protocol's unsigned varint (of a zigzag-encoded i64 here)."""
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def claiming_rows(rows: int) -> bytes:
    """Return a file whose footer and row group claim ``rows`` rows; its columns hold 12345.

    The four i64 fields holding 12345 are, in order, the file's num_rows, each column's
    num_values, and the row group's num_rows: the first and last are rewritten.
    """
    body, footer = _footer(healthy_parquet())
    field = b"\x16" + _varint(PARQUET_ROWS << 1)
    claim = b"\x16" + _varint(rows << 1)
    first, last = footer.index(field), footer.rindex(field)
    footer = (
        footer[:first]
        + claim
        + footer[first + len(field) : last]
        + claim
        + footer[last + len(field) :]
    )
    return _framed(body, footer)


def claiming_columns(columns: int) -> bytes:
    """Return a file whose schema list claims ``columns`` elements (it holds three)."""
    body, footer = _footer(healthy_parquet())
    schema_list = b"\x19\x3c"  # field 2, a list of 3 structs
    at = footer.index(schema_list)
    footer = footer[:at] + b"\x19\xfc" + _varint(columns) + footer[at + len(schema_list) :]
    return _framed(body, footer)


def chunks_outside() -> bytes:
    """Return a large file's footer over a small body: its chunks lie past the end."""
    body, footer = _footer(healthy_parquet(200_000))
    return _framed(body[:64], footer)


def footer_changed(body: bytes, change: Callable[[dict], None]) -> bytes:
    """Return a Parquet file with its footer decoded, passed to ``change``, and encoded again."""
    from worker.query.local.thrift_compact import read_struct, write_struct

    data, footer = _footer(body)
    fields = read_struct(footer)[0]
    change(fields)
    return _framed(data, write_struct(fields))


def page_index_outside() -> bytes:
    """Return a file with a page index whose first offset index lies 1 TiB past its end."""
    from worker.query.local.thrift_compact import I64

    def outside(footer: dict) -> None:
        first_chunk = footer[4][1].items[0][1][1].items[0]  # row group 0's first column chunk
        first_chunk[4] = (I64, 1 << 40)  # ColumnChunk.offset_index_offset

    columns = {"i": list(range(PARQUET_ROWS)), "s": [f"row {i}" for i in range(PARQUET_ROWS)]}
    return footer_changed(parquet_file(columns, write_page_index=True), outside)


def size_statistics_misfit() -> bytes:
    """Return a file whose first chunk's repetition level histogram has 2 entries, not 1.

    pyarrow (26) aborts the process (SIGABRT) on reading that chunk's metadata.
    """
    from worker.query.local.thrift_compact import I64, LIST, STRUCT, ThriftList

    def misfit(footer: dict) -> None:
        meta = footer[4][1].items[0][1][1].items[0][3][1]  # row group 0, chunk 0, meta_data
        meta[16] = (STRUCT, {2: (LIST, ThriftList(I64, [PARQUET_ROWS, 0]))})  # size_statistics

    return footer_changed(healthy_parquet(), misfit)


def geometry_contradictions() -> bytes:
    """Return a file whose text column ``s`` is a GEOMETRY with impossible geospatial statistics.

    A NaN bounding box corner and geometry type codes no spec defines (parquet.thrift
    ``ColumnMetaData.geospatial_statistics``, field 17): pyarrow (26) keeps them as they are
    rather than aborting; the column itself is binary, which S3 Select does not read.
    """
    from worker.query.local.thrift_compact import DOUBLE, I32, LIST, STRUCT, ThriftList

    def contradict(footer: dict) -> None:
        column = next(e for e in footer[2][1].items if e.get(4, (0, b""))[1] == b"s")
        column.pop(6, None)  # the converted type UTF8
        column[10] = (STRUCT, {17: (STRUCT, {})})  # LogicalType GEOMETRY
        meta = footer[4][1].items[0][1][1].items[1][3][1]  # row group 0, chunk 1, meta_data
        meta.pop(16, None)  # size statistics: a geometry's are not text's
        box = {1: (DOUBLE, math.nan), 2: (DOUBLE, 1.0), 3: (DOUBLE, 2.0), 4: (DOUBLE, -1.0)}
        meta[17] = (STRUCT, {1: (STRUCT, box), 2: (LIST, ThriftList(I32, [-5, 99_999_999]))})

    return footer_changed(healthy_parquet(), contradict)


def page_bomb() -> bytes:
    """2 Mi zeros in GZIP pages (PLAIN, no dictionary): 8 MiB from 14 KiB, ~600x.

    Deflate cannot pass ~1032x, and each page's own header and trailer keep it nearer 600x.
    """
    import pyarrow as pa

    zeros = pa.Array.from_buffers(pa.int64(), 2 << 20, [None, pa.py_buffer(bytes(16 << 20))])
    return parquet_file(
        {"z": zeros}, compression="gzip", use_dictionary=False, data_page_size=64 << 20
    )


def nested(depth: int) -> bytes:
    """One NULL row of a struct nested ``depth`` levels."""
    import pyarrow as pa

    data_type = pa.int64()
    for _ in range(depth):
        data_type = pa.struct([("x", data_type)])
    return parquet_file({"n": pa.nulls(1, data_type)})


PARQUET = {"kind": "PARQUET"}
PARQUET_CASES: dict[str, tuple[Callable[[], bytes], str, dict[str, str], str]] = {
    "truncated Parquet": (
        lambda: healthy_parquet()[: len(healthy_parquet()) // 2],
        "SELECT COUNT(*) FROM S3Object s",
        PARQUET,
        "magic bytes PAR1",
    ),
    "Parquet footer longer than the object": (
        lambda: healthy_parquet()[:-8] + (1 << 31).to_bytes(4, "little") + b"PAR1",
        "SELECT COUNT(*) FROM S3Object s",
        PARQUET,
        "its footer claims 2147483648 bytes",
    ),
    "Parquet claiming billions of rows": (
        lambda: claiming_rows(3_000_000_000),
        "SELECT * FROM S3Object s",
        PARQUET,
        "claims 3000000000 rows",
    ),
    "Parquet claiming billions of columns": (
        lambda: claiming_columns(2_000_000_000),
        "SELECT * FROM S3Object s",
        PARQUET,
        "not a readable Parquet file",
    ),
    "Parquet geometry with impossible geospatial statistics": (
        geometry_contradictions,
        "SELECT * FROM S3Object s",
        PARQUET,
        "column 's' holds binary values",
    ),
    "GZIP Parquet pages inflating 600x": (
        page_bomb,
        "SELECT SUM(s.z) FROM S3Object s",
        PARQUET,
        "decompression bomb",
    ),
    "Parquet schema nested 1000 deep": (
        lambda: nested(1000),
        "SELECT * FROM S3Object s",
        PARQUET,
        "too deeply nested",
    ),
    "Parquet page index outside the object": (
        page_index_outside,
        "SELECT * FROM S3Object s WHERE s.i < 10",
        PARQUET,
        "places its page index at bytes 1099511627776",
    ),
    "Parquet size statistics that pyarrow aborts on": (
        size_statistics_misfit,
        "SELECT SUM(s.i) FROM S3Object s",
        PARQUET,
        "repetition level histogram holds 2 entries",
    ),
    "Parquet column chunks outside the object": (
        chunks_outside,
        "SELECT SUM(s.i) FROM S3Object s",
        PARQUET,
        "outside the object's data",
    ),
}
