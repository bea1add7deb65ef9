"""The vectorised line writer (:mod:`worker.query.local.lines`) gives the serialiser's bytes.

Both vectorised paths (CSV input, Parquet) write their output lines with it, and the result
must be what the Python evaluator's serialiser writes for the same values, byte for byte:
the edge values of each type here, then random floats, whose layout Arrow and ``repr`` agree
on only for some magnitudes.
"""

from __future__ import annotations

import io
import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.bare_s3 import BytesS3
from worker.messages import InputFormat
from worker.query import QueryError, QueryLimitExceeded, QueryRequest, local, run_query
from worker.query.local.caps import MAX_RECORD_CHARS
from worker.query.local.lines import LineWriter, LongLine
from worker.query.local.serialise import serialise

EDGE_FLOATS = [
    0.0,
    -0.0,
    1.0,
    -2.5,
    0.1,
    123456789.125,
    1e-4,
    math.nextafter(1e-4, 0),  # 9.999999999999999e-05: repr's first exponent below
    1e-5,  # Arrow: 0.00001
    1e-7,  # Arrow: 1e-7
    5e-324,
    math.nextafter(1e10, 0),
    1e10,  # Arrow: 1e+10
    1e15,
    9007199254740993.0,  # 2**53 + 1 rounds to 2**53
    9999999999999998.0,
    1e16,
    1.2345e16,
    1e22,
    1.7976931348623157e308,
    -1e-300,
]
EDGE_INTS = [0, -1, 2**53 - 1, 2**53, 2**53 + 1, -(2**53) - 1, 2**63 - 1, -(2**63)]
EDGE_TEXTS = [
    "plain",
    "",
    'a "quote"',
    "a,comma",
    "new\nline",
    "carriage\rreturn",
    "tab\tand \x01 \x1f",
    "back\\slash",
    "é ü 日本 🚀",
    "\u2028 \x7f",
]


def serialised(names: list[str], columns: list[list], rows_format: str) -> str:
    """What the evaluator's serialiser writes for these records."""
    records = ((names, list(record)) for record in zip(*columns, strict=True))
    return "".join(serialise(records, rows_format))


def assert_written_as_serialised(columns: dict[str, pa.Array], rows_format: str) -> None:
    names = list(columns)
    written = LineWriter(names, rows_format).text(list(columns.values()), 1)
    assert written == serialised(names, [c.to_pylist() for c in columns.values()], rows_format)


def one_each(values: list, data_type: pa.DataType) -> list[pa.Array]:
    """A batch of each value alone (a batch written by Python serves only that batch), and one
    of all of them with NULLs between."""
    alone = [pa.array([value], data_type) for value in values]
    return [*alone, pa.array([v for value in values for v in (value, None)], data_type)]


@pytest.mark.parametrize("rows_format", ["json", "csv"])
@pytest.mark.parametrize(
    ("values", "data_type"),
    [
        (EDGE_FLOATS, pa.float64()),
        ([0.1, 1e-5, 3e38, -0.0, 16777216.0], pa.float32()),
        (EDGE_INTS, pa.int64()),
        ([0, 2**63, 2**64 - 1], pa.uint64()),
        ([True, False], pa.bool_()),
        (EDGE_TEXTS, pa.string()),
        (EDGE_TEXTS, pa.large_string()),  # pyarrow reads what polars writes as large_string
    ],
    ids=["float64", "float32", "int64", "uint64", "bool", "string", "large_string"],
)
def test_edge_values_are_written_as_the_serialiser_writes_them(values, data_type, rows_format):
    for column in one_each(values, data_type):
        assert_written_as_serialised({"v": column, "n": pa.array(range(len(column)))}, rows_format)


@pytest.mark.parametrize("rows_format", ["json", "csv"])
def test_a_batch_of_every_type_with_nulls_is_written_as_the_serialiser_writes_it(rows_format):
    count = len(EDGE_FLOATS)
    columns = {
        "f": pa.array(EDGE_FLOATS, pa.float64()),
        "i": pa.array([EDGE_INTS[i % len(EDGE_INTS)] if i % 3 else None for i in range(count)]),
        "t": pa.array([None if i % 4 == 1 else f"zone {i}" for i in range(count)]),
        "b": pa.array([[True, False, None][i % 3] for i in range(count)]),
        '名 "q"': pa.array([float(i) if i % 2 else None for i in range(count)]),
    }
    assert_written_as_serialised(columns, rows_format)


def test_a_one_field_csv_record_empty_or_null_is_quoted_as_the_serialiser_quotes_it():
    for column in (pa.array(["a", ""]), pa.array(["a", None]), pa.array([1.5, None])):
        assert_written_as_serialised({"v": column}, "csv")


def test_nan_and_infinities_are_text_in_csv_and_refused_in_json_as_the_serialiser_does():
    values = pa.array([1.5, math.nan, math.inf, -math.inf])
    assert_written_as_serialised({"v": values, "w": values}, "csv")
    with pytest.raises(QueryError, match="output record 7 holds a number JSON cannot repr"):
        LineWriter(["v"], "json").text([values], 6)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(allow_nan=False, allow_infinity=False) | st.none(), min_size=1),
    st.sampled_from(["json", "csv"]),
)
def test_random_floats_are_written_as_repr_writes_them(values, rows_format) -> None:
    assert_written_as_serialised({"f": pa.array(values, pa.float64())}, rows_format)


def test_a_line_that_may_pass_1_mib_is_left_to_the_caller():
    """The CSV fast path then declines the query, Parquet hands the batch to the serialiser."""
    long_text = pa.array(["x" * (MAX_RECORD_CHARS - 10)])
    with pytest.raises(LongLine):
        LineWriter(["long"], "json").text([long_text], 1)


def test_the_csv_fast_path_declines_an_output_line_that_may_pass_1_mib(monkeypatch, capsys):
    """The input record is under 1 MiB, its JSON line (names and quotes added) is not: the
    evaluator reruns the query and refuses the record in S3 Select's words.

    Arrow reads the record only if it ends within its second block of 512 KiB: the 46 bytes
    before it and its 2 x 524 263 + 2 end 2 bytes short of 1 MiB; its line is 53 longer.
    """
    monkeypatch.setattr(local, "FAST_PATH", True)
    half = "x" * (MAX_RECORD_CHARS // 2 - 25)
    body = f"{'n' * 20},{'m' * 20}\n1,2\n{half},{half}\n".encode()
    request = QueryRequest("b", "k", "SELECT * FROM S3Object s", InputFormat())
    with pytest.raises(QueryLimitExceeded, match=r"OverMaxRecordSize.*output record 2"):
        run_query(BytesS3({"k": body}), request, "local").text  # noqa: B018 - read as joined
    paths = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    reasons = [entry["reason"] for entry in paths if entry.get("event") == "query-path"]
    assert reasons == ["vectorised", "declined on the data: an output record may pass 1 MiB"]


def test_parquet_hands_an_output_line_that_may_pass_1_mib_to_the_serialiser():
    """The row's text is under 1 MiB (the input check), its JSON line is not."""
    half = "x" * (MAX_RECORD_CHARS // 2 - 2)
    body = io.BytesIO()
    pq.write_table(pa.table({"a": ["1", half], "b": ["2", half]}), body)
    request = QueryRequest("b", "k", "SELECT * FROM S3Object s", InputFormat(kind="PARQUET"))
    result = run_query(BytesS3({"k": body.getvalue()}), request, "local")
    with pytest.raises(QueryLimitExceeded, match=r"OverMaxRecordSize.*output record 2"):
        result.text  # noqa: B018 - read as joined


def test_parquet_text_read_as_large_string_is_selected_in_both_formats():
    """pyarrow reads a column as large_string where the file's Arrow schema says so (polars
    writes text that way): Arrow's string join has no kernel mixing it with string."""
    body = io.BytesIO()
    pq.write_table(pa.table({"t": pa.array(["x", None, "y"], pa.large_string())}), body)
    outputs = {"json": '{"t":"x"}\n{"t":null}\n{"t":"y"}\n', "csv": 'x\n""\ny\n'}
    for rows_format, expected in outputs.items():
        request = QueryRequest(
            "b", "k", "SELECT * FROM S3Object s", InputFormat(kind="PARQUET"), rows_format
        )
        assert run_query(BytesS3({"k": body.getvalue()}), request, "local").text == expected
