"""Column-chunk metadata that pyarrow 26 aborts the process on is refused first (issue 22).

What pyarrow checks is Arrow's ``SizeStatistics::Validate`` (cpp/src/parquet/size_statistics.cc)
and the encrypted-metadata check of ``ColumnChunkMetaData``; each mismatch below, written into
an otherwise valid file, killed a Python process with SIGABRT on ``row_group(0).column(0)``.
These tests call the check alone, in process; the engine's whole path over such a file runs
in a child process in test_query_parquet.py's hostile suite, where an abort fails the test.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchspot_support.hostile import footer_changed, healthy_parquet, parquet_file
from tests.unit.bare_s3 import BytesS3
from worker.messages import InputFormat
from worker.query import Deadline, QueryRequest, QueryTimeout, run_query
from worker.query.local.parquet_chunk_check import check_chunks
from worker.query.local.parquet_ranges import ParquetInvalid
from worker.query.local.thrift_compact import (
    BINARY,
    I64,
    LIST,
    STRUCT,
    Struct,
    ThriftList,
    read_struct,
)


@pytest.fixture(params=["walked", "decoded"])
def form(request) -> str:
    """The check walks a large footer's bytes, and reads a small one the engine decoded whole."""
    return request.param


def _footer_and_schema(body: bytes, form: str) -> tuple[bytes | Struct, pq.ParquetSchema]:
    length = int.from_bytes(body[-8:-4], "little")
    footer = body[-8 - length : -8]
    held = read_struct(footer)[0] if form == "decoded" else footer
    return held, pq.ParquetFile(io.BytesIO(body)).metadata.schema


def _first_chunk(change: Callable[[dict], None]) -> bytes:
    """Return the healthy file (columns ``i`` INT64, ``s`` text) its first chunk changed."""
    return footer_changed(healthy_parquet(), lambda footer: change(footer[4][1].items[0][1][1]))


def _sizes(column: int, sizes: dict) -> Callable[[ThriftList], None]:
    def change(chunks: ThriftList) -> None:
        chunks.items[column][3][1][16] = (STRUCT, sizes)  # ColumnMetaData.size_statistics

    return change


def _histogram(*counts: int) -> tuple[int, ThriftList]:
    return LIST, ThriftList(I64, list(counts))


REFUSED = {
    "a repetition histogram of 2 for a flat column": (
        _sizes(0, {2: _histogram(5, 0)}),
        "column i of row group 0 has size statistics whose repetition level histogram holds "
        "2 entries, not the 1 its levels need",
    ),
    "a definition histogram of 3 for a nullable flat column": (
        _sizes(1, {3: _histogram(1, 2, 3)}),
        "column s of row group 0 has size statistics whose definition level histogram holds "
        "3 entries, not the 2 its levels need",
    ),
    "byte-array bytes counted for an INT64 column": (
        _sizes(0, {1: (I64, 80)}),
        "column i of row group 0 has size statistics counting byte-array bytes, but its values "
        "are INT64",
    ),
    "encrypted column metadata": (
        lambda chunks: chunks.items[0].__setitem__(
            8, (STRUCT, {2: (STRUCT, {1: (LIST, ThriftList(BINARY, [b"i"]))})})
        ),
        "column i of row group 0 has encrypted metadata, which the local engine cannot decrypt",
    ),
    "a row group missing a column's chunk (an IndexError, not an abort)": (
        lambda chunks: chunks.items.pop(),
        "row group 0 holds 1 column chunks, but the schema has 2 columns",
    ),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_chunk_metadata_pyarrow_aborts_on_is_refused_naming_it(name, form) -> None:
    change, reason = REFUSED[name]
    with pytest.raises(ParquetInvalid, match=reason):
        check_chunks(*_footer_and_schema(_first_chunk(change), form))


def test_histograms_that_fit_the_levels_or_are_absent_pass(form) -> None:
    """Nested columns' histograms run past two entries; an empty histogram may stand for any."""
    body = parquet_file(
        {
            "l": pa.array([[1, None], None, [3]], pa.list_(pa.int64())),
            "s": pa.array([{"x": "a"}, None, {"x": None}]),
        }
    )
    check_chunks(*_footer_and_schema(body, form))  # pyarrow wrote histograms of 2, 4 and 3 entries
    request = QueryRequest("b", "k", "SELECT * FROM S3Object s", InputFormat(kind="PARQUET"))
    rows = run_query(BytesS3({"k": body}), request, "local").text
    assert rows == '{"l":[1,null],"s":{"x":"a"}}\n{"l":null,"s":null}\n{"l":[3],"s":{"x":null}}\n'
    empty = _first_chunk(_sizes(0, {2: _histogram(), 3: _histogram()}))
    check_chunks(*_footer_and_schema(empty, form))


def test_a_passed_deadline_stops_the_check_between_chunks(form) -> None:
    """A footer of ~170 000 chunks (16 MiB, the largest read) takes ~7 s to check."""
    with pytest.raises(QueryTimeout, match="passed the item's deadline"):
        check_chunks(*_footer_and_schema(healthy_parquet(), form), Deadline(time.monotonic() - 1))
