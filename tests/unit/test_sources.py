"""Listing sources with many paginators at once: the same keys as one paginator, each once."""

import itertools
import threading

import pytest

from batchspot.sources import interleave, list_sources, list_sources_parallel
from tests.unit.in_memory_s3 import in_memory_bucket

LAYOUT = [
    "top.csv",
    "data/",  # a folder marker: never a source
    "data/root.csv",
    "data/2024/01/a.csv",
    "data/2024/01/b.json",
    "data/2024/02/deep/er/c.csv",
    "data/2025/d e+f.csv",
    "data/2025/",
    "dat-not-a-folder.csv",
    "logs/x.csv",
    *(f"many/{n:02d}/k{i}.csv" for n in range(12) for i in range(3)),
]


@pytest.fixture(scope="module")
def bucket():
    objects = {key: b"" if key.endswith("/") else b"x" for key in LAYOUT}
    with in_memory_bucket("src", objects) as s3:
        yield s3


@pytest.mark.parametrize("paginators", [1, 3, 16])
@pytest.mark.parametrize(
    ("prefix", "suffix"), [("", ""), ("data/", ".csv"), ("dat", ""), ("many/", ""), ("none/", "")]
)
def test_fanned_out_listing_yields_each_source_once_as_one_paginator_does(
    bucket, paginators, prefix, suffix
):
    sequential = sorted(list_sources(bucket, "src", prefix, suffix), key=lambda s: s.key)
    parallel = sorted(
        list_sources_parallel(bucket, "src", prefix, suffix, paginators), key=lambda s: s.key
    )
    assert parallel == sequential
    assert not any(s.key.endswith("/") for s in parallel)


class GatedS3:
    """An S3 client whose four subtrees answer only once all four are being listed at once."""

    def __init__(self) -> None:
        self.together = threading.Barrier(4, timeout=10)

    def get_paginator(self, name):
        return self

    def paginate(self, Bucket, Prefix, Delimiter=None):
        if Delimiter:
            return [{"CommonPrefixes": [{"Prefix": f"p{n}/"} for n in range(4)]}]
        self.together.wait()  # broken (the test fails) unless four paginators run at once
        return [{"Contents": [{"Key": f"{Prefix}k", "Size": 1, "ETag": '"e"'}]}]


def test_the_common_prefixes_are_listed_by_as_many_paginators_at_once():
    keys = sorted(s.key for s in list_sources_parallel(GatedS3(), "src", "", "", paginators=4))
    assert keys == ["p0/k", "p1/k", "p2/k", "p3/k"]


@pytest.mark.timeout(30)  # a producer left blocked would hang the close
def test_stopping_early_stops_every_producer():
    finished = [threading.Event() for _ in range(3)]

    def endless(done: threading.Event):
        def produce():
            try:
                yield from itertools.count()
            finally:
                done.set()

        return produce

    stream = interleave([endless(done) for done in finished], workers=3)
    assert len(list(itertools.islice(stream, 5000))) == 5000
    stream.close()  # as seed does once --max-count is reached
    assert all(done.is_set() for done in finished)


def test_a_producer_error_reaches_the_reader():
    def failing():
        yield 1
        raise PermissionError("AccessDenied on s3://inventory/part-2")

    with pytest.raises(PermissionError, match="part-2"):
        list(interleave([lambda: iter(range(10)), failing], workers=2))
