"""Snappy chunks inflated outside pyarrow (:mod:`worker.query.local.parquet_inflate`).

The inflated copy of a row group must decode to what pyarrow decodes from the object itself,
whatever the writer's options; anything the module does not handle must be left to pyarrow
(None), never read otherwise; and a query's output must not depend on which of the two read
the chunks.
"""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.unit.bare_s3 import BytesS3
from worker.messages import InputFormat
from worker.query import QueryError, QueryRequest, run_query
from worker.query.local import parquet, parquet_inflate
from worker.query.local.parquet_inflate import inflated
from worker.query.local.thrift_compact import I32, I64, read_struct, write_struct

ROWS = 3000


def written(table: pa.Table, **options: Any) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, **{"row_group_size": 1000, **options})
    return sink.getvalue()


def footer_of(body: bytes) -> dict:
    size = int.from_bytes(body[-8:-4], "little")
    return read_struct(body[-8 - size : -8])[0]


def leaves_of(body: bytes, columns: list[str]) -> list[int]:
    schema = pq.ParquetFile(io.BytesIO(body)).metadata.schema
    return [i for i in range(len(schema)) if schema.column(i).path.split(".")[0] in columns]


def inflate(body: bytes, index: int, columns: list[str]) -> pa.Buffer | None:
    view = memoryview(body)
    return inflated(
        footer_of(body),
        index,
        leaves_of(body, columns),
        lambda offset, size: view[offset : offset + size],
    )


def table(rows: int = ROWS) -> pa.Table:
    return pa.table(
        {
            "i": pa.array([None if n % 11 == 0 else n * 7 for n in range(rows)], pa.int64()),
            "f": pa.array([n / 8 if n % 5 else None for n in range(rows)], pa.float64()),
            "s": pa.array([f"text {n % 13}" if n % 3 else None for n in range(rows)]),
            "big": pa.array([f"{n:>40}" for n in range(rows)], pa.large_string()),
            "l": pa.array([[n, n + 1] if n % 4 else [] for n in range(rows)]),
            "st": pa.array([{"a": n, "b": str(n)} for n in range(rows)]),
            "b": pa.array([n % 2 == 0 for n in range(rows)]),
        }
    )


WRITERS = {
    "V1 pages, dictionaries": {},
    "V2 pages": {"data_page_version": "2.0"},
    "no dictionaries": {"use_dictionary": False},
    "pages of 1 KiB": {"data_page_size": 1024, "write_batch_size": 16, "use_dictionary": False},
    "page checksums": {"write_page_checksum": True},
    "page index": {"write_page_index": True},
    "some columns uncompressed": {"compression": {"i": "none", "f": "snappy", "s": "snappy"}},
}


@pytest.mark.parametrize("options", list(WRITERS.values()), ids=list(WRITERS))
def test_an_inflated_row_group_decodes_as_pyarrow_decodes_the_object(options) -> None:
    """Every row group and column, each writer's way: the same values, types and NULLs."""
    body = written(table(), **{"compression": "snappy", **options})
    source = pq.ParquetFile(io.BytesIO(body))
    columns = source.schema_arrow.names
    for index in range(source.metadata.num_row_groups):
        for read in ([name] for name in columns):
            copy = inflate(body, index, read)
            codecs = {
                source.metadata.row_group(index).column(i).compression
                for i in leaves_of(body, read)
            }
            if codecs == {"UNCOMPRESSED"}:
                assert copy is None  # nothing to inflate
                continue
            assert copy is not None, f"row group {index}, {read}"
            decoded = pq.ParquetFile(pa.BufferReader(copy)).read_row_group(0, columns=read)
            assert decoded.equals(source.read_row_group(index, columns=read))
        copy = inflate(body, index, columns)
        assert copy is not None
        decoded = pq.ParquetFile(pa.BufferReader(copy)).read_row_group(0, columns=columns)
        assert decoded.equals(source.read_row_group(index, columns=columns))


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_other_codecs_are_left_to_pyarrow(compression) -> None:
    assert inflate(written(table(), compression=compression), 0, ["i", "f"]) is None


def test_a_row_group_past_the_limit_is_left_to_pyarrow(monkeypatch) -> None:
    body = written(table(), compression="snappy")
    assert inflate(body, 0, ["big"]) is not None
    monkeypatch.setattr(parquet_inflate, "MAX_INFLATED_BYTES", 40 * 1000)  # "big": ~40 KB
    assert inflate(body, 0, ["big"]) is None
    assert inflate(body, 0, ["b"]) is not None


def test_a_chunk_of_more_pages_than_the_limit_is_left_to_pyarrow(monkeypatch) -> None:
    body = written(table(), compression="snappy", **WRITERS["pages of 1 KiB"])
    assert inflate(body, 0, ["big"]) is not None  # ~40 KB of text in pages of 1 KiB
    monkeypatch.setattr(parquet_inflate, "MAX_PAGES", 30)
    assert inflate(body, 0, ["big"]) is None


def _first_page_header(body: bytes, leaf: int) -> tuple[int, dict, int]:
    meta = footer_of(body)[4][1].items[0][1][1].items[leaf][3][1]
    start = meta[11][1] if 11 in meta else meta[9][1]
    header, after = read_struct(body[start : start + 256])
    return start, header, after


def _with_first_header(body: bytes, leaf: int, change: dict) -> bytes:
    """Return ``body`` with a chunk's first page header re-encoded, of the same length."""
    start, header, after = _first_page_header(body, leaf)
    header.update(change)
    encoded = write_struct(header)
    assert len(encoded) == after, "the change keeps the header's length"
    return body[:start] + encoded + body[start + after :]


def _with_chunk_size(body: bytes, leaf: int, uncompressed: int) -> bytes:
    """Return ``body`` whose footer says row group 0's chunk ``leaf`` is that big inflated."""
    footer = footer_of(body)
    footer[4][1].items[0][1][1].items[leaf][3][1][6] = (I64, uncompressed)
    encoded = write_struct(footer)
    data_end = len(body) - 8 - int.from_bytes(body[-8:-4], "little")
    return body[:data_end] + encoded + len(encoded).to_bytes(4, "little") + b"PAR1"


def test_pages_claiming_more_than_their_chunk_are_left_to_pyarrow() -> None:
    """A header's uncompressed size is the size inflated into: past the chunk's metadata
    (which the engine holds to its limits), the row group is pyarrow's to judge."""
    body = written(table(), compression="snappy", use_dictionary=False)
    _, header, after = _first_page_header(body, 0)
    assert inflate(_with_chunk_size(body, 0, header[2][1] + after), 0, ["i"]) is not None
    assert inflate(_with_chunk_size(body, 0, header[2][1] - 1), 0, ["i"]) is None


@pytest.mark.parametrize("change", [-8, 8])
def test_a_page_that_does_not_inflate_to_its_declared_size_is_left_to_pyarrow(change) -> None:
    """Declared a few bytes short of what its Snappy stream holds, or a few past it (which
    its chunk's metadata, counting the headers too, leaves room for)."""
    body = written(table(), compression="snappy", use_dictionary=False)
    _, header, _ = _first_page_header(body, 0)
    misdeclared = _with_first_header(body, 0, {2: (I32, header[2][1] + change)})
    assert inflate(misdeclared, 0, ["i"]) is None


# --- the engine: the same output, inflated or not ----------------------------------------

# Aggregates are what the engine inflates for (they read every row of their columns).
QUERIES = [
    "SELECT SUM(s.f), COUNT(s.i), MAX(s.s) FROM S3Object s WHERE s.i > 1000",
    "SELECT MIN(s.big), AVG(s.i), COUNT(s.f) FROM S3Object s",
    "SELECT COUNT(*), MAX(s.f) FROM S3Object s WHERE s.s = 'text 4'",
    "SELECT SUM(s.i) FROM S3Object s WHERE s.f < 100.0 AND s.i >= 7",
    "SELECT MIN(s.s), COUNT(s.s), MAX(s.big) FROM S3Object s WHERE s.f > 10.0",
]


def engine(body: bytes, sql: str) -> str:
    request = QueryRequest("b", "k", sql, InputFormat(kind="PARQUET"))
    try:
        return run_query(BytesS3({"k": body}), request, "local").text
    except QueryError as error:
        return f"{type(error).__name__}: {error}"


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.integers(1, 2500),
    group=st.integers(100, 1200),  # a footer within what the engine decodes
    options=st.sampled_from(list(WRITERS.values())),
    sql=st.sampled_from(QUERIES),
)
@example(rows=2500, group=1000, options={}, sql=QUERIES[1])  # every row group read
def test_a_querys_output_is_the_same_inflated_or_read_by_pyarrow(
    monkeypatch, rows, group, options, sql
) -> None:
    body = written(table(rows), **{"compression": "snappy", "row_group_size": group, **options})
    codecs: list[set[str]] = []  # of the chunks pyarrow decoded, for each row group read whole
    group_reader = parquet._group_reader

    def spied(reader, file, index, leaves, texts) -> tuple[pq.ParquetFile, int]:
        source, group = group_reader(reader, file, index, leaves, texts)
        codecs.append({source.metadata.row_group(group).column(i).compression for i in leaves})
        return source, group

    with monkeypatch.context() as patched:  # one fixture serves every example: undo each
        patched.setattr(parquet, "_group_reader", spied)
        answer = engine(body, sql)
    assert all(read == {"UNCOMPRESSED"} for read in codecs), "pyarrow decoded inflated chunks"
    assert codecs or "WHERE" in sql, "the row groups were read"
    with monkeypatch.context() as patched:
        patched.setattr(parquet, "inflated", lambda *args: None)
        assert engine(body, sql) == answer
