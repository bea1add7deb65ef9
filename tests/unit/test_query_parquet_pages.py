"""Parquet's page index (issue 22): a WHERE on a sorted column reads only the pages it can match.

Golden tests run each query on one table written twice, with a page index and without (the
whole-chunk path), and expect the same output bytes from fewer bytes read. Hostile page
indexes end in a permanent failure naming the fault, quickly. The page index is
parquet-format's (https://github.com/apache/parquet-format/blob/master/PageIndex.md).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchspot_support.hostile import footer_changed, parquet_file
from tests.unit.bare_s3 import BytesS3
from tests.unit.test_query_parquet import PARQUET, RecordingS3
from worker.query import QueryError, QueryRequest, QueryUnsupported, run_query
from worker.query.local import parquet_pages, parquet_ranges
from worker.query.local.thrift_compact import (
    I32,
    I64,
    STRUCT,
    Reader,
    ThriftInvalid,
    read_struct,
    write_struct,
)

ROWS = 48_000
PAGE_ROWS = 1000  # 24 pages a column chunk
GROUP_ROWS = 24_000  # two row groups
FOOTER_GET = 64 << 10


def table() -> dict[str, Any]:
    """Sorted int and text keys, and columns of the types the page path must keep exactly."""
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    return {
        "id": pa.array(range(ROWS), pa.int64()),
        "key": [f"k{i:06d}" for i in range(ROWS)],
        "small": pa.array([i % 100 for i in range(ROWS)], pa.int32()),
        "price": [None if i % 7 == 0 else i / 8 for i in range(ROWS)],
        "zone": [f"zone {i % 13}" for i in range(ROWS)],  # dictionary-encoded
        "note": [None if i % 5 else f'note "{i}", ok' for i in range(ROWS)],
        "at": pa.array(
            [start + dt.timedelta(seconds=i) for i in range(ROWS)], pa.timestamp("ms", "UTC")
        ),
        "day": pa.array([dt.date(2024, 1, 1) + dt.timedelta(days=i % 300) for i in range(ROWS)]),
        "flag": [i % 3 == 0 for i in range(ROWS)],
    }


def written(page_index: bool, **options: Any) -> bytes:
    """The table, its dictionaries capped as pyarrow's 1 MiB caps a 64 MiB row group's: the
    many-valued columns go on in PLAIN pages after a dictionary page that every read needs."""
    return parquet_file(
        table(),
        row_group_size=GROUP_ROWS,
        max_rows_per_page=PAGE_ROWS,
        dictionary_pagesize_limit=8 << 10,
        write_page_index=page_index,
        **options,
    )


@pytest.fixture(scope="module")
def files() -> tuple[bytes, bytes]:
    """The table with a page index, and without one."""
    return written(True), written(False)


@pytest.fixture(autouse=True)
def merge_gap(monkeypatch) -> None:
    """Scale the GET-merging gap to this file: its chunks are ~1/100 of a 64 MiB row group's
    (at 1 MiB every range of a row group here would merge into one GET of it all)."""
    monkeypatch.setattr(parquet_ranges, "MERGE_GAP", 8 << 10)


def reads(body: bytes, sql: str, rows_format: str = "json") -> tuple[str, RecordingS3, int]:
    s3 = RecordingS3({"k": body})
    request = QueryRequest("b", "k", sql, PARQUET, rows_format=rows_format)
    result = run_query(s3, request, "local")
    return result.text, s3, result.bytes_scanned


GOLDEN = [
    ("SELECT * FROM S3Object s WHERE s.id = 37321", 1),
    ("SELECT * FROM S3Object s WHERE s.id < 120", 120),
    ("SELECT * FROM S3Object s WHERE s.id > 47880", 119),
    ("SELECT * FROM S3Object s WHERE s.id BETWEEN 23990 AND 24110", 121),  # across row groups
    ("SELECT * FROM S3Object s WHERE 28000 >= s.id AND s.id >= 27900", 101),
    ("SELECT s.note, s.price FROM S3Object s WHERE s.key BETWEEN 'k030000' AND 'k030100'", 101),
    ("SELECT s.at, s.day, s.flag FROM S3Object s WHERE s.key <= 'k000010'", 11),
    ("SELECT SUM(s.price), COUNT(*) FROM S3Object s WHERE s.id >= 39000 AND s.id < 39400", 1),
    ("SELECT * FROM S3Object s WHERE s.id < 300 AND s.small = 5", 3),
    ("SELECT * FROM S3Object s WHERE s.id > 2000 AND s.id < 1000", 0),
]


@pytest.mark.parametrize(("sql", "rows"), GOLDEN)
@pytest.mark.parametrize("rows_format", ["json", "csv"])
def test_pages_give_the_whole_chunks_bytes_from_fewer_bytes(files, sql, rows, rows_format) -> None:
    indexed, plain = files
    text, s3, scanned = reads(indexed, sql, rows_format)
    whole, _, whole_scanned = reads(plain, sql, rows_format)
    assert text == whole
    assert text.count("\n") == rows
    assert scanned - FOOTER_GET < (whole_scanned - FOOTER_GET) / 4
    assert all(if_match == '"bare"' for _, if_match in s3.requests[1:])


def test_a_sorted_where_reads_its_pages_in_a_get_a_column_at_most(files) -> None:
    """The footer's GET holds the page index here (it lies just before the footer); then each
    column's dictionary page and matching pages, neighbours merged: at most a GET a column."""
    indexed, plain = files
    _, s3, scanned = reads(indexed, "SELECT * FROM S3Object s WHERE s.id < 120")
    assert 2 <= len(s3.requests) <= 1 + len(table())
    _, s3_plain, plain_scanned = reads(plain, "SELECT * FROM S3Object s WHERE s.id < 120")
    assert len(s3_plain.requests) == 2  # no index: the footer, then row group 0's chunks
    assert scanned - FOOTER_GET < (plain_scanned - FOOTER_GET) / 8


def test_a_wide_span_and_a_where_the_index_cannot_use_read_whole_chunks(files, monkeypatch):
    def by_pages(*args: Any) -> None:
        raise AssertionError("read by pages")

    monkeypatch.setattr(parquet_pages.PageIndex, "read", by_pages)
    indexed, plain = files
    for sql in (
        "SELECT COUNT(*) FROM S3Object s WHERE s.id < 20000",  # most of row group 0
        "SELECT COUNT(*) FROM S3Object s WHERE s.small = 5",  # every page may hold a 5
        "SELECT COUNT(*) FROM S3Object s WHERE s.id + 1 < 50",  # not a column against a literal
    ):
        assert reads(indexed, sql)[0] == reads(plain, sql)[0]


def test_pages_of_a_compressed_file_keep_its_dictionary(files) -> None:
    """GZIP pages behind their dictionary page: a one-page file of them decodes the same."""
    body = written(True, compression="gzip")
    sql = "SELECT s.zone, s.key FROM S3Object s WHERE s.id BETWEEN 4321 AND 4400"
    assert reads(body, sql)[0] == reads(files[1], sql)[0]


# --- hostile page indexes ------------------------------------------------------------------


def first_chunk(footer: dict) -> dict:
    return footer[4][1].items[0][1][1].items[0]


def index_over_the_footer(footer: dict) -> None:
    first_chunk(footer)[5] = (I32, 1 << 30)


def offset_index_changed(body: bytes, change: Any) -> bytes:
    """Return ``body`` with the first chunk's offset index passed to ``change`` (no longer)."""
    length = int.from_bytes(body[-8:-4], "little")
    chunk = first_chunk(read_struct(body[-8 - length : -8])[0])
    offset, size = chunk[4][1], chunk[5][1]
    index = read_struct(body[offset : offset + size])[0]
    change(index[1][1].items)
    encoded = write_struct(index)
    assert len(encoded) <= size
    return body[:offset] + encoded.ljust(size, b"\0") + body[offset + size :]


def rows_out_of_order(pages: list) -> None:
    pages[1][3] = (I64, 0)  # the second page starts at row 0 again


def rows_shifted(pages: list) -> None:
    """The second page starts a row late: in order, but page 0 claims 1001 rows, page 1 999
    (read alone, page 1 would give its first 999 values as rows 1001-1999)."""
    pages[1][3] = (I64, PAGE_ROWS + 1)


def pages_past_the_chunk(footer: dict) -> None:
    first_chunk(footer)[3][1][7] = (I64, 10)  # total_compressed_size: the pages lie past it


HOSTILE = {
    "page index over the footer": (
        lambda b: footer_changed(b, index_over_the_footer),
        "places its page index at bytes",
    ),
    "page rows out of order": (
        lambda b: offset_index_changed(b, rows_out_of_order),
        "starts page 1 at row 0, out of order",
    ),
    "page rows shifted": (
        lambda b: offset_index_changed(b, rows_shifted),
        "is not a data page of 999 rows",
    ),
    "pages past their chunk": (
        lambda b: footer_changed(b, pages_past_the_chunk),
        "outside the chunk",
    ),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_page_index_is_refused_for_good_naming_its_fault(files, name) -> None:
    damage, expected = HOSTILE[name]
    body = damage(files[0])
    started = time.monotonic()
    with pytest.raises(QueryUnsupported, match=expected):
        reads(body, "SELECT * FROM S3Object s WHERE s.id BETWEEN 1500 AND 1510")
    assert time.monotonic() - started < 2


def test_a_list_claiming_more_elements_than_bytes_is_refused_before_it_is_built() -> None:
    huge = b"\x19\xfc\xff\xff\xff\x0f\x00"  # field 1: a list of 2**25 - 1 structs, then 1 byte
    with pytest.raises(ThriftInvalid, match="claims 33554431 elements, more than the 1 bytes"):
        read_struct(huge)
    deep = b"\x1c" * 100 + b"\x00" * 100  # structs inside structs, 100 deep
    with pytest.raises(ThriftInvalid, match="nests more than 16 deep"):
        read_struct(deep)


@pytest.mark.parametrize(
    ("data", "fault"),
    [
        (b"\x16" + b"\xff" * 10 + b"\x01\x00", "a varint before byte 11 runs past 10 bytes"),
        (b"\x16\xac", "it ends at byte 2, inside a value"),  # an i64 cut inside its varint
        (b"\x18\x05ab", "a value at byte 2 claims 5 bytes, past the 2 left"),  # a binary
        (b"\x16\x02", "it ends at byte 2, inside a value"),  # no field header, no stop
        (b"", "it ends at byte 0, inside a value"),
    ],
)
def test_bytes_that_end_or_run_on_inside_a_value_are_refused_naming_where(data, fault) -> None:
    """Decoding and walking (the chunk check's skip) stop at the same fault, never read past."""
    with pytest.raises(ThriftInvalid, match=fault):
        read_struct(data)
    with pytest.raises(ThriftInvalid, match=fault):
        Reader(data).skip(STRUCT, 0)


def test_a_footer_past_the_limit_takes_the_whole_chunk_path(files, monkeypatch) -> None:
    monkeypatch.setattr(parquet_ranges, "MAX_DECODED_FOOTER_BYTES", 100)
    text, s3, _ = reads(files[0], "SELECT * FROM S3Object s WHERE s.id < 120")
    assert text.count("\n") == 120
    assert len(s3.requests) == 2  # the footer, then row group 0's chunks: no index read


# --- fuzz: any damage to an indexed file ends in rows or one clear refusal ------------------


@pytest.fixture(scope="module")
def small_indexed() -> tuple[bytes, int, int]:
    """A small file with a page index, and where its index lies: ``[start, end)``."""
    columns = {"i": list(range(300)), "s": [f"v{i % 7}" for i in range(300)]}
    body = parquet_file(columns, row_group_size=100, max_rows_per_page=20, write_page_index=True)
    length = int.from_bytes(body[-8:-4], "little")
    footer = read_struct(body[-8 - length : -8])[0]
    chunks = [chunk for group in footer[4][1].items for chunk in group[1][1].items]
    start = min(chunk[field][1] for chunk in chunks for field in (4, 6))
    return body, start, len(body) - 8 - length


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(damage=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1))
def test_a_damaged_page_index_gives_rows_or_one_clear_refusal(small_indexed, damage) -> None:
    """Bytes of the page index overwritten: its Thrift, its offsets, its counts, its bounds."""
    body, start, end = small_indexed
    damaged = bytearray(body)
    for position, value in damage:
        damaged[start + position % (end - start)] = value
    request = QueryRequest("b", "k", "SELECT s.s FROM S3Object s WHERE s.i < 30", PARQUET)
    try:
        assert run_query(BytesS3({"k": bytes(damaged)}), request, "local").text is not None
    except QueryError as error:
        assert str(error) and "\n" not in str(error)
