"""Streaming reads: LIMIT stops the fetching, ranges grow, an overwrite mid-read is caught."""

from __future__ import annotations

import pytest

from tests.unit.in_memory_s3 import in_memory_bucket
from worker.messages import InputFormat
from worker.query import QueryError, QueryRequest, run_query
from worker.query.local.reader import FIRST_RANGE, MAX_RANGE, RangedObject

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
