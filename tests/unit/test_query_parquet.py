"""Parquet on the local engine (issue 22): S3 Select's answers, from only the bytes needed.

Golden tests run the same query on the taxi sample as CSV and as Parquet and expect the same
bytes where the formats agree, and exactly the stated differences where types differ. Reads
are counted on a bare S3 (every GET's range and If-Match recorded). Hostile files each end in
a permanent failure that names what is wrong.

S3 Select's Parquet rules followed here (Amazon S3 user guide, "Data types", section
"Supported Parquet types", and "Filtering and retrieving data using Amazon S3 Select"):
https://docs.aws.amazon.com/AmazonS3/latest/userguide/s3-select-sql-reference-data-types.html
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import hashlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from batchspot.sample_data import month_csv, month_parquet
from batchspot_support.hostile import (
    PARQUET_CASES,
    PARQUET_ROWS,
    geometry_contradictions,
    parquet_file,
    size_statistics_misfit,
)
from tests.unit.bare_s3 import BytesS3
from worker.messages import InputFormat
from worker.query import (
    Deadline,
    QueryError,
    QueryLimitExceeded,
    QueryRequest,
    QueryUnsupported,
    run_query,
)
from worker.query.local import parquet

PARQUET = InputFormat(kind="PARQUET")
TAXI_ROWS = 400


class RecordingS3(BytesS3):
    """A bare S3 that records each GET's Range and If-Match."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        super().__init__(objects)
        self.requests: list[tuple[str, str | None]] = []

    def get_object(self, Bucket: str, Key: str, Range: str, IfMatch: str | None = None) -> Any:
        self.requests.append((Range, IfMatch))
        return super().get_object(Bucket, Key, Range, IfMatch)


def run(body: bytes, sql: str, rows_format: str = "json", fmt: InputFormat = PARQUET) -> str:
    return run_query(
        BytesS3({"k": body}), QueryRequest("b", "k", sql, fmt, rows_format=rows_format), "local"
    ).text


# --- golden: the taxi sample as CSV and as Parquet ------------------------------------------


@pytest.fixture(scope="module")
def taxi() -> tuple[bytes, bytes]:
    return month_csv(1, TAXI_ROWS).encode(), month_parquet(1, TAXI_ROWS)


SAME_BYTES = [
    "SELECT COUNT(*) FROM S3Object s WHERE CAST(s.passenger_count AS INT) > 3",
    "SELECT SUM(CAST(s.tip_amount AS FLOAT)), MAX(CAST(s.fare_amount AS FLOAT)) "
    "FROM S3Object s WHERE s.store_and_fwd_flag = 'N'",
    "SELECT CAST(s.fare_amount AS FLOAT) AS fare, s.store_and_fwd_flag, "
    "CAST(s.PULocationID AS INT) FROM S3Object s WHERE CAST(s.payment_type AS INT) = 2",
    "SELECT CAST(s._11 AS FLOAT) FROM S3Object s WHERE CAST(s.VendorID AS INT) = 1 LIMIT 7",
    "SELECT AVG(CAST(s.total_amount AS FLOAT)) FROM S3Object s",
    "SELECT s.store_and_fwd_flag FROM S3Object s WHERE s.store_and_fwd_flag <> 'N'",
]


@pytest.mark.parametrize("rows_format", ["json", "csv"])
@pytest.mark.parametrize("sql", SAME_BYTES)
def test_parquet_gives_the_csv_engines_bytes_where_the_formats_agree(taxi, sql, rows_format):
    csv_body, parquet_body = taxi
    expected = run(csv_body, sql, rows_format, InputFormat())
    assert expected.count("\n") >= 1
    assert run(parquet_body, sql, rows_format) == expected


def test_select_star_differs_from_csv_only_where_the_schema_types_the_text(taxi) -> None:
    """The stated differences: numbers print as numbers (``0.5`` for ``.50``, ``12.0`` for
    ``12``) and timestamps as ISO 8601 (``T``, microseconds); every other field is the same."""
    csv_body, parquet_body = taxi
    sql = "SELECT * FROM S3Object s"
    from_csv = list(csv.reader(io.StringIO(run(csv_body, sql, "csv", InputFormat()))))
    from_parquet = list(csv.reader(io.StringIO(run(parquet_body, sql, "csv"))))
    assert len(from_csv) == len(from_parquet) == TAXI_ROWS
    differing = set()
    for text_row, typed_row in zip(from_csv, from_parquet, strict=True):
        for position, (text, typed) in enumerate(zip(text_row, typed_row, strict=True)):
            if text == typed:
                continue
            differing.add(position)
            if "-" in text:  # a datetime
                assert typed == text.replace(" ", "T") + ".000000"
            else:
                assert float(typed) == float(text)
    assert differing <= {1, 2, 4, *range(10, 17)}  # the datetimes, distance and money
    json_row = json.loads(run(parquet_body, sql + " LIMIT 1"))
    assert isinstance(json_row["VendorID"], int) and isinstance(json_row["fare_amount"], float)


def test_the_schemas_types_print_as_s3_select_prints_them() -> None:
    """Integers, floats, decimals, booleans, text, NULL, dates, timestamps (UTC with Z),
    structs and lists as JSON; names case-insensitive unless quoted, and ``_N``."""
    body = parquet_file(
        {
            "id": pa.array([7, 8], pa.int32()),
            "Name": ["a", None],
            "ratio": [0.25, None],
            "ok": [True, False],
            "price": pa.array([decimal.Decimal("1.50"), None], pa.decimal128(5, 2)),
            "day": [dt.date(2018, 1, 2), None],
            "at": pa.array([dt.datetime(2018, 1, 2, 3, 4, 5), None], pa.timestamp("ms", "UTC")),
            "local": pa.array([dt.datetime(2018, 1, 2, 3, 4, 5), None], pa.timestamp("us")),
            "tags": [{"k": 1, "v": ["x", "y"]}, None],
        }
    )
    assert run(body, "SELECT * FROM S3Object s LIMIT 1") == (
        '{"id":7,"Name":"a","ratio":0.25,"ok":true,"price":1.5,"day":"2018-01-02",'
        '"at":"2018-01-02T03:04:05.000Z","local":"2018-01-02T03:04:05.000000",'
        '"tags":{"k":1,"v":["x","y"]}}\n'
    )
    assert run(body, 'SELECT s.name, s."Name", s._1, s.tags.v[1] FROM S3Object s', "csv") == (
        "a,a,7,y\n,,8,\n"
    )
    assert run(body, "SELECT * FROM S3Object s WHERE s.id = 8") == (
        '{"id":8,"Name":null,"ratio":null,"ok":false,"price":null,"day":null,"at":null,'
        '"local":null,"tags":null}\n'
    )
    assert run(body, "SELECT s.id, s.name, s.ok FROM S3Object s WHERE s.id = 8", "csv") == (
        "8,,false\n"
    )
    with pytest.raises(QueryUnsupported, match="'tags' can only be output as JSON"):
        run(body, "SELECT * FROM S3Object s", "csv")
    with pytest.raises(QueryUnsupported, match=r"'nope' is not in the Parquet schema \(id, Name"):
        run(body, "SELECT s.nope FROM S3Object s")
    with pytest.raises(QueryUnsupported, match="column 'name' is not in"):
        run(body, 'SELECT s."name" FROM S3Object s')


def test_types_s3_select_does_not_read_are_refused_when_read() -> None:
    """S3 Select's documented Parquet types leave out binary, and INT96 timestamps by name."""
    body = parquet_file({"id": [1], "blob": pa.array([b"\x00"], pa.binary())})
    assert run(body, "SELECT s.id FROM S3Object s") == '{"id":1}\n'
    with pytest.raises(QueryUnsupported, match="'blob' holds binary values"):
        run(body, "SELECT * FROM S3Object s")
    legacy = parquet_file(
        {"at": pa.array([dt.datetime(2018, 1, 1)], pa.timestamp("ns"))},
        use_deprecated_int96_timestamps=True,
    )
    with pytest.raises(QueryUnsupported, match="'at' holds INT96 timestamps"):
        run(legacy, "SELECT * FROM S3Object s")


# --- reads: only what the query needs ------------------------------------------------------

WIDE_ROWS = 20_000
GROUP_ROWS = 5000


@pytest.fixture(scope="module")
def wide() -> bytes:
    """20 int64 columns, ``c0`` sorted, four row groups of 5000 rows, no compression."""
    columns = {f"c{i}": list(range(i, i + WIDE_ROWS)) for i in range(20)}
    return parquet_file(columns, row_group_size=GROUP_ROWS, compression="none")


def reads(body: bytes, sql: str) -> tuple[str, RecordingS3, int]:
    s3 = RecordingS3({"k": body})
    result = run_query(s3, QueryRequest("b", "k", sql, PARQUET), "local")
    return result.text, s3, result.bytes_scanned


def test_the_footer_comes_in_one_suffix_get_and_every_later_get_is_pinned(wide) -> None:
    text, s3, _ = reads(wide, "SELECT COUNT(*) FROM S3Object s")
    assert text == f'{{"_1":{WIDE_ROWS}}}\n'
    assert s3.requests == [("bytes=-65536", None)]  # COUNT(*) reads the footer alone
    text, s3, _ = reads(wide, "SELECT SUM(s.c3) FROM S3Object s")
    assert text == f'{{"_1":{sum(range(3, 3 + WIDE_ROWS))}}}\n'
    assert len(s3.requests) == 1 + 4  # the footer, then one GET per row group
    assert all(if_match == '"bare"' for _, if_match in s3.requests[1:])


def test_two_of_twenty_columns_read_a_tenth_of_the_object(wide) -> None:
    text, s3, scanned = reads(wide, "SELECT s.c0, s.c1 FROM S3Object s WHERE s.c1 > 0")
    assert text.count("\n") == WIDE_ROWS
    assert len(s3.requests) == 1 + 4  # c0 and c1 lie side by side: one merged GET a group
    assert scanned <= 0.15 * len(wide)  # the footer's 64 KiB included


def test_a_where_on_a_sorted_column_reads_only_the_row_group_it_can_match(wide) -> None:
    text, s3, scanned = reads(wide, "SELECT * FROM S3Object s WHERE s.c0 >= 6000 AND s.c0 < 6040")
    assert [json.loads(line)["c0"] for line in text.splitlines()] == list(range(6000, 6040))
    assert len(s3.requests) == 2  # the footer and row group 1
    assert scanned <= 0.3 * len(wide)


def test_a_sorted_where_decodes_the_other_columns_only_up_to_its_last_match(monkeypatch) -> None:
    """One row group, so its statistics cannot skip it: the WHERE's column is decoded first,
    and the other 19 only up to the batch holding the last row it keeps."""
    columns = {f"c{i}": list(range(i, i + WIDE_ROWS)) for i in range(20)}
    body = parquet_file(columns, row_group_size=WIDE_ROWS, compression="none")
    scans: list[Deadline] = []

    class CountingDeadline(Deadline):  # the rows decoded, as the engine counts them
        def __init__(self, at: float | None) -> None:
            super().__init__(at)
            scans.append(self)

    monkeypatch.setattr(parquet, "Deadline", CountingDeadline)
    batch = parquet.BATCH_VALUES // 20  # rows a batch of 20 columns holds
    text = run(body, f"SELECT * FROM S3Object s WHERE s.c0 <= {batch}")  # the 2nd's first row
    assert [json.loads(line)["c0"] for line in text.splitlines()] == list(range(batch + 1))
    assert scans[-1].records == 2 * batch < WIDE_ROWS
    text = run(body, "SELECT * FROM S3Object s WHERE s.c1 >= 20000")
    assert json.loads(text) == {f"c{i}": WIDE_ROWS - 1 + i for i in range(20)}  # the last row
    assert scans[-1].records == WIDE_ROWS


def test_limit_stops_the_reads_at_the_first_row_group(wide) -> None:
    text, s3, _ = reads(wide, "SELECT * FROM S3Object s LIMIT 10")
    assert text.count("\n") == 10
    assert len(s3.requests) == 2
    text, s3, _ = reads(wide, "SELECT s.c0 FROM S3Object s WHERE s.c1 > 7 LIMIT 0")
    assert (text, len(s3.requests)) == ("", 1)  # the footer alone


# --- limits and hostile files --------------------------------------------------------------


def test_a_record_over_1_mib_is_refused_in_s3_selects_words() -> None:
    body = parquet_file({"t": ["short", "x" * (1 << 20) + "x"]})
    with pytest.raises(QueryLimitExceeded, match=r"OverMaxRecordSize.*input row 2"):
        run(body, "SELECT COUNT(*) FROM S3Object s WHERE s.t = 'short'")


def test_text_that_is_not_utf8_is_refused_not_passed_on() -> None:
    """pyarrow reads a string column's bytes unchecked; the engine checks them (fuzz found it)."""
    plain = {"compression": "none", "use_dictionary": False, "write_statistics": False}
    good = parquet_file({"t": ["caf\u00e9", "ok"]}, **plain)
    bad = good.replace("caf\u00e9".encode(), b"caf\xff\xfe")  # the one copy: the page's
    assert run(good, "SELECT * FROM S3Object s") == '{"t":"caf\u00e9"}\n{"t":"ok"}\n'
    for sql in ("SELECT * FROM S3Object s", "SELECT COUNT(*) FROM S3Object s WHERE s.t = 'ok'"):
        with pytest.raises(QueryUnsupported, match="rows 1-2 hold text that is not UTF-8"):
            run(bad, sql)


def test_a_row_group_past_the_memory_limit_is_refused_naming_it(wide, monkeypatch) -> None:
    monkeypatch.setattr(parquet, "MAX_READ_BYTES", 60_000)  # one column, not two
    assert run(wide, "SELECT SUM(s.c0) FROM S3Object s") == f'{{"_1":{sum(range(WIDE_ROWS))}}}\n'
    with pytest.raises(QueryLimitExceeded, match="in the columns read, over the local engine"):
        run(wide, "SELECT s.c0, s.c1 FROM S3Object s")
    monkeypatch.setattr(parquet, "MAX_ROW_GROUP_BYTES", 4000)
    with pytest.raises(QueryLimitExceeded, match="over S3 Select's limit"):
        run(wide, "SELECT SUM(s.c0) FROM S3Object s")


# Every hostile file runs in one child process, a line reported as each ends: one that kills
# the process (pyarrow aborts on some footers) fails its own test, naming the signal.
HOSTILE_CHILD = """
import json, time
from batchspot_support.hostile import PARQUET_CASES
from tests.unit.bare_s3 import BytesS3
from tests.unit.test_query_parquet import ANSWERED
from worker.messages import InputFormat
from worker.query import QueryError, QueryLimitExceeded, QueryRequest, QueryUnsupported, run_query

for name, (make, sql, fields, _) in {**PARQUET_CASES, **ANSWERED}.items():
    s3 = BytesS3({"k": make()})
    started = time.monotonic()
    try:
        outcome, permanent = run_query(s3, QueryRequest("b", "k", sql, InputFormat(**fields)),
                                       "local").text[:300], False
    except QueryError as error:
        outcome = f"{type(error).__name__}: {error}"
        permanent = isinstance(error, (QueryUnsupported, QueryLimitExceeded))
    print(json.dumps({"name": name, "outcome": outcome, "permanent": permanent,
                      "seconds": time.monotonic() - started}), flush=True)
"""


@pytest.fixture(scope="module")
def hostile_outcomes() -> tuple[dict[str, dict[str, Any]], str]:
    """Each hostile file's outcome by name, and how the child process ended."""
    done = subprocess.run(
        [sys.executable, "-c", HOSTILE_CHILD],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    outcomes = {line["name"]: line for line in lines if "outcome" in line}  # not the logs
    return outcomes, f"exit status {done.returncode}: {done.stderr[-2000:]}"


@pytest.mark.parametrize("name", list(PARQUET_CASES))
def test_hostile_parquet_is_refused_for_good_quickly(hostile_outcomes, name) -> None:
    outcomes, ending = hostile_outcomes
    assert name in outcomes, f"the process died on this file, {ending}"
    expected = PARQUET_CASES[name][3]
    assert outcomes[name]["permanent"], outcomes[name]["outcome"]
    assert re.search(expected, outcomes[name]["outcome"]), outcomes[name]["outcome"]
    assert outcomes[name]["seconds"] < 2


# Hostile files a query still answers, in the same child: what it reads is sound.
ANSWERED = {
    # COUNT(*) alone is the row groups' counts, as DuckDB answers it: the chunk whose metadata
    # pyarrow aborts on is never asked for (reading its column is refused, above).
    "COUNT(*) of a file pyarrow aborts on": (
        size_statistics_misfit,
        "SELECT COUNT(*) FROM S3Object s",
        {"kind": "PARQUET"},
        f'{{"_1":{PARQUET_ROWS}}}\n',
    ),
    # Geospatial statistics are never checked by pyarrow 26 (it keeps a NaN corner as it is):
    # the other columns read (the geometry column itself is refused, above).
    "the integers beside a geometry with impossible statistics": (
        geometry_contradictions,
        "SELECT SUM(s.i) FROM S3Object s",
        {"kind": "PARQUET"},
        f'{{"_1":{sum(range(PARQUET_ROWS))}}}\n',
    ),
}


@pytest.mark.parametrize("name", list(ANSWERED))
def test_hostile_parquet_a_query_can_answer_is_answered(hostile_outcomes, name) -> None:
    outcomes, ending = hostile_outcomes
    assert name in outcomes, f"the process died on this file, {ending}"
    assert outcomes[name]["outcome"] == ANSWERED[name][3]


# --- fuzz: any damage to a file ends in rows or one clear refusal --------------------------

DAMAGED_SQL = [
    "SELECT * FROM S3Object s",
    "SELECT SUM(s.i), MAX(s.s) FROM S3Object s WHERE s.i > 3",
    "SELECT s.s FROM S3Object s WHERE s.i < 100 LIMIT 5",
]


@pytest.fixture(scope="module")
def small_file() -> bytes:
    columns = {"i": list(range(300)), "s": [f"v{i % 7}" for i in range(300)]}
    return parquet_file(columns, row_group_size=100)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    damage=st.lists(
        st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=4
    ),
    from_end=st.booleans(),
    sql=st.sampled_from(DAMAGED_SQL),
    cut=st.integers(0, 64),
)
# A row group's column chunk whose own path no longer decodes (0x80) or names no column (0).
@example(damage=[(485, 128)], from_end=True, sql=DAMAGED_SQL[1], cut=0)
@example(damage=[(485, 0)], from_end=True, sql=DAMAGED_SQL[1], cut=0)
def test_a_damaged_file_gives_rows_or_one_clear_refusal(small_file, damage, from_end, sql, cut):
    """Bytes overwritten (mostly in the footer, where offsets and sizes live) or cut off."""
    body = bytearray(small_file[: len(small_file) - cut])
    for position, value in damage:
        at = len(body) - 1 - position % len(body) if from_end else position % len(body)
        body[at] = value
    try:
        run(bytes(body), sql)
    except QueryError as error:
        assert str(error) and "\n" not in str(error)


# --- a fold's text, read as its dictionary ---------------------------------------------------


def dictionary_columns(monkeypatch, body: bytes, sql: str) -> tuple[str, list[list[str]]]:
    """Run ``sql``; return its output and, per row group read whole, the columns read as
    dictionary arrays."""
    group_reader = parquet._group_reader
    read_as: list[list[str]] = []

    def spied(*args: Any) -> Any:
        source, group = group_reader(*args)
        schema = source.schema_arrow
        read_as.append([f.name for f in schema if pa.types.is_dictionary(f.type)])
        return source, group

    monkeypatch.setattr(parquet, "_group_reader", spied)
    return run(body, sql), read_as


ZONES = [f"zone {n % 7}" if n % 5 else None for n in range(3000)]


def test_a_folds_text_is_read_as_its_dictionary_where_every_page_uses_it(monkeypatch) -> None:
    """Only the entries the rows kept use count: "zone 9" is in the dictionary, its row is not."""
    zones = [*ZONES[:3], "zone 9", *ZONES[4:]]
    sql = "SELECT MIN(s.z), MAX(s.z), COUNT(s.z) FROM S3Object s WHERE s.n >= 10"
    # Snappy chunks are inflated first; the others are read as they are, the same way.
    for compression in ("snappy", "gzip", "none"):
        columns = {"z": zones, "n": list(range(3000))}
        body = parquet_file(columns, row_group_size=1000, compression=compression)
        text, read_as = dictionary_columns(monkeypatch, body, sql)
        assert read_as == [["z"]] * 3, compression
        assert text == '{"_1":"zone 0","_2":"zone 6","_3":2392}\n'


def test_text_whose_pages_are_not_all_dictionary_encoded_is_read_as_text(monkeypatch) -> None:
    """Plain pages (a dictionary given up on, or none) would be hashed into one, and a
    dictionary page past 1 MiB holds entries that few rows share: slower either way."""
    distinct = [f"value {n}" for n in range(3000)]
    # 2.5 MB of entries that do not compress, in one dictionary page: past what writers make.
    long = [hashlib.sha256(str(n % 20_000).encode()).hexdigest() * 2 for n in range(40_000)]
    sql = "SELECT MAX(s.z) FROM S3Object s"
    for body, answer in (
        (parquet_file({"z": distinct}, dictionary_pagesize_limit=1024), "value 999"),  # gave up
        (parquet_file({"z": ZONES}, use_dictionary=False), "zone 6"),
        (parquet_file({"z": long}, dictionary_pagesize_limit=64 << 20), max(long)),
    ):
        assert dictionary_columns(monkeypatch, body, sql) == (f'{{"_1":"{answer}"}}\n', [[]])


def test_a_term_column_is_read_as_text_though_its_pages_use_the_dictionary(monkeypatch) -> None:
    body = parquet_file({"z": ZONES})
    text, read_as = dictionary_columns(
        monkeypatch, body, "SELECT MAX(s.z) FROM S3Object s WHERE s.z < 'zone 3'"
    )
    assert (text, read_as) == ('{"_1":"zone 2"}\n', [[]])


def test_a_record_over_1_mib_read_through_the_dictionary_is_refused(monkeypatch) -> None:
    body = parquet_file({"t": ["short", "x" * (1 << 20) + "x", "short"]})
    with pytest.raises(QueryLimitExceeded, match=r"OverMaxRecordSize.*input row 2"):
        dictionary_columns(monkeypatch, body, "SELECT MAX(s.t) FROM S3Object s")


def test_a_dictionary_that_is_not_utf8_is_refused(monkeypatch) -> None:
    # Snappy keeps text this short as it is: the dictionary page's copy is the one replaced.
    good = parquet_file({"t": ["caf\u00e9", "ok", "ok"]}, write_statistics=False)
    bad = good.replace("caf\u00e9".encode(), b"caf\xff\xfe")
    assert bad.count(b"caf\xff\xfe") == 1
    assert dictionary_columns(monkeypatch, good, "SELECT MAX(s.t) FROM S3Object s")[1] == [["t"]]
    with pytest.raises(QueryUnsupported, match="rows 1-3 hold text that is not UTF-8"):
        run(bad, "SELECT MAX(s.t) FROM S3Object s")
