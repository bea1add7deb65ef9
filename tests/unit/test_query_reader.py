"""Streaming reads: LIMIT stops the fetching, ranges grow, an overwrite mid-read is caught."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.bare_s3 import BytesS3
from tests.unit.in_memory_s3 import in_memory_bucket
from worker.messages import InputFormat
from worker.query import Deadline, QueryError, QueryRequest, run_query
from worker.query.local.reader import FIRST_RANGE, MAX_RANGE, RangedObject, open_records

BUCKET = "reader"
ROW = "{:08d},some text that pads the row to about sixty bytes,{:06d}\n"


@pytest.fixture(scope="module")
def s3():
    body = "id,text,n\n" + "".join(ROW.format(i, i % 997) for i in range(400_000))
    with in_memory_bucket(BUCKET, {"big.csv": body.encode()}) as client:
        yield client


@pytest.mark.parametrize("limit", [1, 10_000, 100_000, 250_000])
def test_limit_stops_the_reading_within_twice_the_bytes_needed_plus_one_range(s3, limit):
    request = QueryRequest(
        BUCKET, "big.csv", f"SELECT * FROM S3Object s LIMIT {limit}", InputFormat()
    )
    result = run_query(s3, request, "local")

    assert result.text.count("\n") == limit
    needed = len("id,text,n\n") + limit * len(ROW.format(0, 0))
    assert result.bytes_scanned <= 2 * needed + FIRST_RANGE
    size = s3.head_object(Bucket=BUCKET, Key="big.csv")["ContentLength"]
    assert result.bytes_scanned < size


def test_without_limit_the_whole_object_is_read_once(s3):
    request = QueryRequest(BUCKET, "big.csv", "SELECT COUNT(*) FROM S3Object s", InputFormat())
    result = run_query(s3, request, "local")
    assert result.text == '{"_1":400000}\n'
    assert result.bytes_scanned == s3.head_object(Bucket=BUCKET, Key="big.csv")["ContentLength"]


def test_ranges_double_up_to_the_cap(s3):
    ranges = []

    class Recording:
        def get_object(self, **kwargs):
            ranges.append(kwargs["Range"])
            return s3.get_object(**kwargs)

    source = RangedObject(Recording(), BUCKET, "big.csv")
    while source.read(1 << 20):
        pass
    sizes = [int(r.split("-")[1]) - int(r.split("=")[1].split("-")[0]) + 1 for r in ranges]
    assert sizes[:4] == [FIRST_RANGE, 2 * FIRST_RANGE, 4 * FIRST_RANGE, MAX_RANGE]
    assert set(sizes[3:]) == {MAX_RANGE}


def test_an_object_overwritten_mid_read_fails_instead_of_mixing_versions(s3):
    s3.put_object(Bucket=BUCKET, Key="moving.csv", Body=b"a\n" + b"1\n" * (FIRST_RANGE // 2 + 10))
    source = RangedObject(s3, BUCKET, "moving.csv")
    source.read(FIRST_RANGE)
    s3.put_object(Bucket=BUCKET, Key="moving.csv", Body=b"a\n" + b"2\n" * (FIRST_RANGE // 2 + 10))
    with pytest.raises(QueryError, match="overwritten while it was being read"):
        source.read(FIRST_RANGE)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(1 - 2**63, 2**63 - 1)  # yajl refuses wider integers, and -2**63
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(roots=st.lists(JSON_VALUES, max_size=5), separator=st.sampled_from(["", " ", "\n"]))
def test_a_document_is_built_record_by_record_as_json_reads_it(roots, separator) -> None:
    # Root scalars need a separator from each other; containers and strings do not.
    texts = [json.dumps(root) for root in roots]
    body = (separator or " ").join(texts)
    source = RangedObject(BytesS3({"doc": body.encode()}), BUCKET, "doc")
    fmt = InputFormat(kind="JSON", json_type="DOCUMENT")
    with open_records(source, fmt, Deadline(None)) as records:
        got = list(records.rows)
    assert got == [root if isinstance(root, dict) else {"_1": root} for root in roots]
