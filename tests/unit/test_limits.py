"""AWS's size limits, which the emulators do not enforce.

S3 user-defined metadata: at most 2 KB, the UTF-8 bytes of every key and value summed
(https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingMetadata.html#UserMetadata).
"""

from urllib.parse import quote

import pytest

from worker.limits import (
    MAX_METADATA_BYTES,
    fit_metadata,
    metadata_bytes,
    shorten,
    truncate_utf8,
)


def worker_metadata(source_key: str) -> dict[str, str]:
    """Metadata shaped like what worker/process.py stores with each result."""
    return {
        "source": quote(f"s3://in/{source_key}", safe=":/"),
        "source-etag": "9b2cf535f27731c974343645a3985328",
        "job-id": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
        "array-index": "17",
        "attempt": "2",
        "job-attempt": "1",
        "handler": "sample_code:handle",
        "duration-ms": "1234",
    }


def test_metadata_bytes_counts_utf8_bytes_of_keys_and_values():
    assert metadata_bytes({"a": "é", "bb": "🙂"}) == 1 + 2 + 2 + 4


def test_metadata_within_the_limit_is_unchanged_up_to_exactly_2048_bytes():
    exact = {"source": "x" * (MAX_METADATA_BYTES - len("source") - len("attempt") - 1)}
    exact["attempt"] = "1"
    assert metadata_bytes(exact) == MAX_METADATA_BYTES
    assert fit_metadata(exact) == exact
    small = worker_metadata("a.csv")
    assert fit_metadata(small) == small


def test_one_byte_over_shortens_the_long_value_and_keeps_the_small_ones():
    over = {"source": "x" * (MAX_METADATA_BYTES - len("source") - len("attempt")), "attempt": "1"}
    assert metadata_bytes(over) == MAX_METADATA_BYTES + 1
    fitted = fit_metadata(over)
    assert metadata_bytes(fitted) <= MAX_METADATA_BYTES
    assert fitted["attempt"] == "1"
    assert fitted["source"].startswith("x" * 1000)


def test_a_1024_byte_multibyte_source_key_fits_with_every_small_field_whole():
    key = "é" * 512  # 1,024 bytes, S3's longest key; URL-quoted it is 3,072 bytes
    metadata = worker_metadata(key)
    assert metadata_bytes(metadata) > MAX_METADATA_BYTES
    fitted = fit_metadata(metadata)
    assert metadata_bytes(fitted) <= MAX_METADATA_BYTES
    assert fitted.keys() == metadata.keys()
    assert {k: v for k, v in fitted.items() if k != "source"} == {
        k: v for k, v in metadata.items() if k != "source"
    }
    assert fitted["source"].startswith("s3://in/%C3%A9")
    assert fitted["source"].isascii()
    assert fit_metadata(metadata) == fitted, "deterministic"


def test_long_sources_that_differ_only_at_the_end_stay_distinct():
    first = fit_metadata(worker_metadata("a" * 1023 + "1"))
    second = fit_metadata(worker_metadata("a" * 1023 + "2"))
    assert first["source"] != second["source"]


def test_metadata_whose_names_alone_are_too_large_is_refused():
    many_small_fields = {f"field-{i:04}": "v" for i in range(300)}
    with pytest.raises(ValueError, match="cannot be shortened"):
        fit_metadata(many_small_fields)


@pytest.mark.parametrize(
    ("text", "max_bytes", "expected"),
    [
        ("aé", 2, "a"),  # é is 2 bytes: not split
        ("aé", 3, "aé"),
        ("a🙂", 4, "a"),  # the emoji is 4 bytes: not split at 1, 2 or 3 of them
        ("a🙂", 5, "a🙂"),
    ],
)
def test_truncation_never_splits_a_character(text, max_bytes, expected):
    assert truncate_utf8(text, max_bytes) == expected


def test_shorten_keeps_a_start_and_a_digest_within_the_limit():
    text = "🙂" * 100
    short = shorten(text, 50)
    assert len(short.encode()) <= 50
    assert text.startswith(short.rsplit("-", 1)[0])
    assert shorten(text, 400) == text
    with pytest.raises(ValueError, match="at least"):
        shorten(text, 16)
