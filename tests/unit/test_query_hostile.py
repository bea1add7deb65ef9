"""Hostile inputs (issue 11): each ends in a clean QueryError that names its cap, quickly.

One test per input of the issue: deep SQL and data, records over 1 MiB, decompression bombs, a
huge DOCUMENT, ``||`` and numeric blow-ups, CSV formats whose records cannot be told apart, the
deadline in both engines, and error messages free of record values. Peak memory on the large
inputs is measured in a subprocess by ``test_query_memory.py``.
"""

from __future__ import annotations

import bz2
import gzip
import time
from dataclasses import replace

import pytest

from batchspot_support.hostile import gzipped
from tests.unit.bare_s3 import BytesS3
from tests.unit.deadlines import Countdown
from tests.unit.in_memory_s3 import in_memory_bucket
from tests.unit.query_paths import query_path  # noqa: F401 - each test runs on both paths
from worker.messages import InputFormat
from worker.query import (
    MAX_RESULT_BYTES,
    QueryError,
    QueryRequest,
    QueryTimeout,
    QueryUnsupported,
    join_capped,
    run_query,
)
from worker.query.auto import AutoEngine
from worker.query.local import reader
from worker.query.local.caps import (
    MAX_JSON_DEPTH,
    MAX_RECORD_CHARS,
    MAX_SQL_DEPTH,
    MAX_SQL_PARENS,
)
from worker.query.local.evaluator import MISSING
from worker.query.local.serialise import CHUNK_CHARS, serialise
from worker.query.local.sql import compile_query

BUCKET = "hostile"
OVER = (
    "OverMaxRecordSize: The length of a record in the input or result is greater than "
    "maxCharsPerRecord of 1 MB"
)
CSV = InputFormat()
LINES = InputFormat(kind="JSON")
DOCUMENT = InputFormat(kind="JSON", json_type="DOCUMENT")


@pytest.fixture(scope="module")
def s3():
    with in_memory_bucket(BUCKET) as client:
        yield client


def query(s3, body: bytes, sql: str, fmt: InputFormat = CSV, **request: object) -> str:
    key = f"k-{time.monotonic_ns()}"
    s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    return run_query(s3, QueryRequest(BUCKET, key, sql, fmt, **request), "local").text


# --- 1. the deadline ---------------------------------------------------------------------


def test_a_passed_deadline_stops_the_local_engine_before_the_first_record(s3) -> None:
    body = b"a\n" + b"1\n" * 1000
    with pytest.raises(QueryTimeout, match="passed the item's deadline after 0 records"):
        query(s3, body, "SELECT * FROM S3Object s", deadline=time.monotonic() - 1)
    ahead = time.monotonic() + 3600
    assert query(s3, body, "SELECT COUNT(*) FROM S3Object s", deadline=ahead) == '{"_1":1000}\n'


@pytest.mark.parametrize(
    ("fmt", "body"),
    [
        (CSV, b"a\n" + b"#comment\n" * 500 + b"1\n" * 500),
        (LINES, b"\n" * 500 + b'{"a":1}\n' * 500),
        (DOCUMENT, b'{"a":1} ' * 1000),
    ],
)
def test_the_deadline_is_checked_between_lines_and_records(fmt, body) -> None:
    # Skipped lines (comments, blank lines) are checked too: a file of them is no escape.
    deadline = Countdown(700)
    source = reader.RangedObject(BytesS3({"k": body}), BUCKET, "k")
    with (
        pytest.raises(QueryTimeout, match=r"after \d+ records"),
        reader.open_records(source, fmt, deadline) as records,
    ):
        for _ in records.rows:
            pass
    assert deadline.checks == 701
    assert deadline.records <= 700


def test_the_deadline_reaches_like_inside_one_record(monkeypatch, s3) -> None:
    deadline = Countdown(5)
    monkeypatch.setattr("worker.query.local.Deadline", lambda at: deadline)
    body = b"t\n" + b"a" * 500_000 + b"\n"
    sql = "SELECT * FROM S3Object s WHERE s.t LIKE '%" + "a_" * 400 + "b%'"
    with pytest.raises(QueryTimeout, match="after 1 records"):
        query(s3, body, sql)


class EventStream:
    """A SelectObjectContent answer of ``count`` 1 MiB record events; counts those read."""

    def __init__(self, count: int) -> None:
        self.count, self.read = count, 0

    def select_object_content(self, **kwargs):
        def events():
            for _ in range(self.count):
                self.read += 1
                yield {"Records": {"Payload": b"x" * (1 << 20)}}
            yield {"End": {}}

        return {"Payload": events()}

    def head_object(self, **kwargs):
        return {"ETag": '"stream"'}

    def get_object(self, **kwargs):
        raise AssertionError("the local engine must not run")


def test_s3_select_checks_the_deadline_between_events_and_auto_does_not_fall_back() -> None:
    request = QueryRequest(BUCKET, "k", "SELECT * FROM S3Object s", CSV)
    overdue = replace(request, deadline=time.monotonic() - 1)
    # A fresh ``auto``: the process-wide one may have settled on the local engine already
    # in an earlier test, and would then never ask S3 Select.
    engines = (
        lambda s3: run_query(s3, overdue, "s3select").text,
        lambda s3: AutoEngine().run(s3, overdue).text,
    )
    for run in engines:
        stream = EventStream(10)
        with pytest.raises(QueryTimeout, match="after 0 records"):
            run(stream)
        assert stream.read == 1


def test_s3_select_stops_reading_past_the_result_cap() -> None:
    stream = EventStream(64)
    request = QueryRequest(BUCKET, "k", "SELECT * FROM S3Object s", CSV)
    with pytest.raises(QueryError, match="passed MAX_RESULT_BYTES"):
        run_query(stream, request, "s3select").text  # noqa: B018 - joining it is what is capped
    assert stream.read == (MAX_RESULT_BYTES >> 20) + 1


# --- 3. nesting, in SQL and in data -------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "refusal"),
    [
        (
            "SELECT * FROM S3Object s WHERE " + "(" * 100_000 + "s.a = '1'" + ")" * 100_000,
            f"parentheses more than {MAX_SQL_PARENS} deep",
        ),
        ("SELECT * FROM S3Object s WHERE " + "NOT " * 5000 + "s.a = '1'", "nests too deeply"),
        (
            "SELECT * FROM S3Object s WHERE " + "NOT " * 70 + "s.a = '1'",
            f"more than {MAX_SQL_DEPTH} levels",
        ),
        (
            "SELECT " + " || ".join(["s.a"] * 5000) + " FROM S3Object s",
            f"more than {MAX_SQL_DEPTH} levels",
        ),
        ("SELECT " + "- " * 5000 + "1 FROM S3Object s", "nests too deeply"),
    ],
)
def test_deeply_nested_sql_is_refused_before_anything_recurses_over_it(sql, refusal) -> None:
    with pytest.raises(QueryUnsupported, match=refusal):
        compile_query(sql)


def test_nesting_within_the_caps_and_long_and_or_chains_run(s3) -> None:
    nested = "(" * MAX_SQL_PARENS + "s.a <> 'z'" + ")" * MAX_SQL_PARENS
    quoted = "'" + "(" * 100 + "'"  # parentheses in a string literal do not nest
    chain = " OR ".join(f"s.a = '{i}'" for i in range(5000))  # one level, however long
    sql = f"SELECT COUNT(*) FROM S3Object s WHERE {nested} AND s.b <> {quoted} AND ({chain})"
    assert query(s3, b"a,b\n1,x\n2,y\n9999,z\n", sql) == '{"_1":2}\n'


def nested_json(depth: int) -> bytes:
    return b'{"a":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


@pytest.mark.parametrize("fmt", [LINES, DOCUMENT], ids=["LINES", "DOCUMENT"])
def test_json_nesting_is_capped_at_its_level(s3, fmt) -> None:
    sql = "SELECT COUNT(*) FROM S3Object s"
    assert query(s3, nested_json(MAX_JSON_DEPTH) + b"\n", sql, fmt) == '{"_1":1}\n'
    with pytest.raises(QueryError, match=f"1 nests JSON deeper than {MAX_JSON_DEPTH} levels"):
        query(s3, nested_json(MAX_JSON_DEPTH + 1) + b"\n", sql, fmt)
    # Brackets inside strings and many shallow containers are no nesting.
    shallow = b'{"s":"' + b"[" * 100 + b'","l":[' + b"[1]," * 100 + b"[2]]}\n"
    assert query(s3, shallow, sql, fmt) == '{"_1":1}\n'


@pytest.mark.timeout(20)
@pytest.mark.parametrize("fmt", [LINES, DOCUMENT], ids=["LINES", "DOCUMENT"])
def test_json_nested_100000_deep_is_refused_quickly(fmt) -> None:
    # ijson.items builds a dotted prefix per event: quadratic, ~15 s at this depth.
    s3 = BytesS3({"deep": b"[" * 100_000 + b"]" * 100_000 + b"\n"})
    request = QueryRequest(BUCKET, "deep", "SELECT * FROM S3Object s", fmt)
    with pytest.raises(QueryError, match="nests JSON deeper than"):
        run_query(s3, request, "local").text  # noqa: B018 - the rows are read as it is joined


# --- 4. records over 1 MiB ------------------------------------------------------------------


def test_a_record_over_1_mib_is_refused_at_the_first_char_too_many(s3) -> None:
    sql = "SELECT COUNT(*) FROM S3Object s"
    for ending in (b"\n", b"\r\n", b""):
        assert query(s3, b"a\n" + b"x" * MAX_RECORD_CHARS + ending, sql) == '{"_1":1}\n'
        with pytest.raises(QueryError, match=f"{OVER}.*input line 2"):
            query(s3, b"a\n" + b"x" * (MAX_RECORD_CHARS + 1) + ending, sql)
    line = b'{"a":"' + b"x" * (MAX_RECORD_CHARS - 8) + b'"}'
    assert query(s3, line + b"\n", sql, LINES) == '{"_1":1}\n'
    with pytest.raises(QueryError, match=f"{OVER}.*input line 1"):
        query(s3, line + b" \n", sql, LINES)


def test_a_csv_record_over_1_mib_across_lines_is_refused(s3) -> None:
    # No line and no field is over 1 MiB, the record is.
    field = b'"' + b"x" * 400_000 + b"\n" + b"y" * 300_000 + b'"'
    body = b"a,b\n" + field + b"," + field + b"\n"
    with pytest.raises(QueryError, match=f"{OVER}.*input line 3"):
        query(s3, body, "SELECT COUNT(*) FROM S3Object s")


def test_a_giant_line_is_refused_without_reading_it_whole() -> None:
    s3 = BytesS3({"giant": b"a\n" + b"x" * (16 << 20) + b"\n"})
    source = reader.RangedObject(s3, BUCKET, "giant")
    with (
        pytest.raises(QueryError, match=OVER),
        reader.open_records(source, CSV, Countdown(10**9)) as records,
    ):
        next(records.rows)
    assert source.bytes_fetched <= 3 << 20  # the first two ranges, of 17 MiB


def test_an_output_record_over_1_mib_is_refused(s3) -> None:
    # JSON output escapes U+0001 as \u0001: 200 000 characters in, 1.2 million out.
    body = b"a\n" + b"\x01" * 200_000 + b"\n"
    assert len(query(s3, body, "SELECT * FROM S3Object s", rows_format="csv")) == 200_001
    with pytest.raises(QueryError, match=f"{OVER} \\(output record 1\\)"):
        query(s3, body, "SELECT * FROM S3Object s")


# --- 5. decompression bombs -----------------------------------------------------------------

LINE_KIB = b"a" * 1023 + b"\n"  # short records: the decompression cap is what must stop them


@pytest.mark.timeout(60)
@pytest.mark.parametrize("compression", ["GZIP", "BZIP2"])
def test_a_decompression_bomb_is_refused(compression) -> None:
    block = LINE_KIB * (16 << 10)  # 16 MiB
    member = gzip.compress(block, 9) if compression == "GZIP" else bz2.compress(block, 9)
    bomb = member * 64  # 1 GiB once decompressed (several members or streams are valid)
    assert len(bomb) < 4 << 20
    s3 = BytesS3({"bomb": bomb})
    fmt = InputFormat(compression=compression, csv_header="NONE")
    request = QueryRequest(BUCKET, "bomb", "SELECT COUNT(*) FROM S3Object s", fmt)
    with pytest.raises(QueryError, match=f"the {compression} data decompresses to more than 100x"):
        run_query(s3, request, "local").text  # noqa: B018 - the rows are read as it is joined


def test_a_small_object_decompresses_past_the_ratio_up_to_the_floor(s3) -> None:
    body = gzipped((b"a\n", 1), (LINE_KIB, 32 << 10))  # 32 MiB, ~1000x
    fmt = InputFormat(compression="GZIP")
    assert query(s3, body, "SELECT COUNT(*) FROM S3Object s", fmt) == '{"_1":32768}\n'


# --- 6. JSON DOCUMENT -----------------------------------------------------------------------


def test_a_document_root_value_over_1_mib_is_refused_as_s3_select_does(s3) -> None:
    # S3Object[*] makes each root value a record; a 6 MB root array is one record.
    body = gzipped((b"[", 1), (b"1," * 1000, 3000), (b"1]", 1))
    fmt = InputFormat(kind="JSON", json_type="DOCUMENT", compression="GZIP")
    with pytest.raises(QueryError, match=f"{OVER} \\(DOCUMENT record 1\\)"):
        query(s3, body, "SELECT COUNT(*) FROM S3Object s", fmt)


def test_a_document_of_many_root_values_is_streamed_record_by_record(s3) -> None:
    records = b"".join(b'{"i":%d,"x":[1.5,{"k":null}]}\n' % i for i in range(50_000))
    text = query(s3, records + b'"last"', "SELECT COUNT(*) FROM S3Object s", DOCUMENT)
    assert text == '{"_1":50001}\n'
    sql = "SELECT s.i, s.x[1] AS y FROM S3Object s WHERE s.i >= 49998"
    assert query(s3, records, sql, DOCUMENT) == (
        '{"i":49998,"y":{"k":null}}\n{"i":49999,"y":{"k":null}}\n'
    )


# --- 7. output and numbers ------------------------------------------------------------------


def test_concatenation_is_capped_at_a_record(s3) -> None:
    body = b"a\n" + b"x" * 600_000 + b"\n"
    assert query(s3, body, "SELECT COUNT(*) FROM S3Object s WHERE s.a || 'y' <> ''") == (
        '{"_1":1}\n'
    )
    with pytest.raises(QueryError, match=f"record 1: a \\|\\| a: {OVER}"):
        query(s3, body, "SELECT COUNT(*) FROM S3Object s WHERE s.a || s.a <> ''")


def test_a_result_past_max_result_bytes_is_refused(s3) -> None:
    body = gzipped((b"a\n", 1), (LINE_KIB, (MAX_RESULT_BYTES >> 10) + 1024))
    fmt = InputFormat(compression="GZIP")
    with pytest.raises(QueryError, match="passed MAX_RESULT_BYTES"):
        query(s3, body, "SELECT * FROM S3Object s", fmt)


@pytest.mark.parametrize(("char", "utf8_bytes"), [("a", 1), ("é", 2), ("🗼", 4)])
def test_the_result_is_measured_in_utf8_bytes_and_read_no_further(char, utf8_bytes) -> None:
    value = char * 1000
    taken = 0

    def rows():
        nonlocal taken
        while True:
            taken += 1
            yield ["a"], [value]

    with pytest.raises(QueryError, match="passed MAX_RESULT_BYTES"):
        join_capped(serialise(rows(), "csv"))
    # Serialisation runs at most one chunk ahead of the join that is capped.
    needed = MAX_RESULT_BYTES // (1000 * utf8_bytes + 1) + 1
    assert needed <= taken <= needed + CHUNK_CHARS // 1001 + 1


def test_serialised_output_is_unchanged_by_the_caps() -> None:
    rows = [(["a", "b"], ["x,y", MISSING]), (["a", "b"], [None, 1.5])]
    assert "".join(serialise(rows, "json")) == '{"a":"x,y"}\n{"a":null,"b":1.5}\n'
    assert "".join(serialise(rows, "csv")) == '"x,y",\n,1.5\n'
    assert list(serialise([], "json")) == list(serialise([], "csv")) == []


@pytest.mark.parametrize(
    ("sql", "refusal"),
    [
        ("SELECT " + "9" * 10_000 + " FROM S3Object s", "numeric literal of 10000 characters"),
        ("SELECT " + "9" * 39 + " FROM S3Object s", "out of range"),
        ("SELECT * FROM S3Object s LIMIT " + "9" * 10_000, "numeric literal of 10000"),
    ],
)
def test_huge_numeric_literals_are_refused(sql, refusal) -> None:
    with pytest.raises(QueryUnsupported, match=refusal):
        compile_query(sql)


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("body", "sql", "fmt", "failure"),
    [
        (
            b"a\n1e999999999\n",
            "SELECT CAST(s.a AS INT) FROM S3Object s",
            CSV,
            "record 1: CAST(a AS INT): this text is out of the range of INT",
        ),
        (
            b"a\n" + b"9" * 1_000_000 + b"x\n",
            "SELECT CAST(s.a AS FLOAT) FROM S3Object s",
            CSV,
            "record 1: CAST(a AS FLOAT): this text is not a valid FLOAT",
        ),
        (
            b"a\n" + b"9" * 30 + b"\n",
            "SELECT CAST(s.a AS INT) * CAST(s.a AS INT) FROM S3Object s",
            CSV,
            "record 1: CAST(a AS INT) * CAST(a AS INT): the result is out of range",
        ),
        (
            b"a\n1\n",
            "SELECT 1e999999 * 10 FROM S3Object s",
            CSV,
            "record 1: 1E+999999 * 10: the result is out of range",
        ),
        (
            b"a\n1\n",
            "SELECT 1e999999 FROM S3Object s",
            CSV,
            "output record 1 holds a number JSON cannot represent",
        ),
        (
            b'{"a":' + b"9" * 10_000 + b"}\n",
            "SELECT * FROM S3Object s",
            LINES,
            "line 1 holds an integer longer than 4300 digits",
        ),
        (
            b'{"a":1e999999}\n',
            "SELECT * FROM S3Object s",
            LINES,
            "output record 1 holds a number JSON cannot represent",
        ),
        (
            b'{"a":1e999999}',
            "SELECT * FROM S3Object s",
            DOCUMENT,
            "the object is not a valid JSON document: parse error: numeric (floating point) "
            "overflow",
        ),
        (
            b'{"a":' + b"9" * 10_000 + b"}",
            "SELECT * FROM S3Object s",
            DOCUMENT,
            "the object is not a valid JSON document: parse error: integer overflow",
        ),
        (
            b'{"a":' + b"9" * 38 + b"}\n",
            "SELECT SUM(s.a * 10) FROM S3Object s",
            LINES,
            "record 1: a * 10: the result is out of range",
        ),
    ],
)
def test_huge_numbers_in_data_and_arithmetic_fail_cleanly(s3, body, sql, fmt, failure) -> None:
    with pytest.raises(QueryError) as raised:
        query(s3, body, sql, fmt)
    assert str(raised.value).startswith(failure)


# --- CSV formats whose records cannot be told apart -----------------------------------------


@pytest.mark.parametrize(
    ("delimiter", "quote", "refusal"),
    [
        ("\n", '"', r"CSV delimiter of '\\n' is the record delimiter"),
        ("\r", '"', r"CSV delimiter of '\\r' is the record delimiter"),
        (",", "\n", r"CSV quote of '\\n' is the record delimiter"),
        (",", ",", "quote and delimiter are the same character"),
        ('"', '"', "quote and delimiter are the same character"),
    ],
)
def test_csv_formats_that_cannot_be_read_are_refused_before_any_read(
    delimiter, quote, refusal
) -> None:
    s3 = BytesS3({"k": b"a,b\n1,2\n"})
    fmt = InputFormat(delimiter=delimiter, quote=quote)
    request = QueryRequest(BUCKET, "k", "SELECT * FROM S3Object", fmt)
    with pytest.raises(QueryUnsupported, match=refusal):
        run_query(s3, request, "local")
    assert s3.bytes_served == 0


# --- 8. errors carry no record values ---------------------------------------------------


@pytest.mark.parametrize(
    ("body", "sql", "fmt"),
    [
        (b'{"a": 1, "secret": "s3cr3t" tru}', "SELECT * FROM S3Object s", DOCUMENT),
        (b'{"a": "s3cr3t",}\n', "SELECT * FROM S3Object s", LINES),
        (b"s3cr3t not gzip", "SELECT * FROM S3Object s", InputFormat(compression="GZIP")),
        (b"a,b\n1,s3cr3t!\n", "SELECT * FROM S3Object s WHERE s.a LIKE s.b ESCAPE '!'", CSV),
        (b"a\ns3cr3t\n", "SELECT * FROM S3Object s WHERE NOT s.a", CSV),
        (b"a\ns3cr3t\n", "SELECT -s.a FROM S3Object s", CSV),
        (b"a\ns3cr3t\n", "SELECT s.a || 1 FROM S3Object s", CSV),
        (b"a\ns3cr3t\n", "SELECT MAX(s.a) FROM S3Object s WHERE s.a BETWEEN 1 AND 2", CSV),
        (b"a\ns3cr3t\n", "SELECT * FROM S3Object s WHERE s.a LIKE 'x' OR s.a > 1", CSV),
    ],
)
def test_errors_name_no_record_values(s3, body, sql, fmt) -> None:
    with pytest.raises(QueryError) as raised:
        query(s3, body, sql, fmt)
    assert "s3cr3t" not in str(raised.value)
    assert "b'" not in str(raised.value)


def test_error_messages_stay_short(s3) -> None:
    header = ",".join(f"column_{i}" for i in range(1000)).encode()
    with pytest.raises(QueryError, match=r"is not in the CSV header \(column_0, ") as raised:
        query(s3, header + b"\n", "SELECT s.nope FROM S3Object s")
    assert len(str(raised.value)) < 300
    long_literal = "'" + "z" * 5000 + "'"
    sql = f"SELECT * FROM S3Object s WHERE s.a BETWEEN 1 AND {long_literal}"
    with pytest.raises(
        QueryError, match=r"record 1: a BETWEEN 1 AND 'zzz.*\.\.\.: cannot compare"
    ) as raised:
        query(s3, b"a\n1\n", sql)
    assert len(str(raised.value)) < 200
