"""The message contract: every accepted shape, and a clear reason for every refusal."""

from __future__ import annotations

import json
import re

import pytest

from worker.messages import (
    Ignorable,
    InputFormat,
    MessageError,
    WorkBatch,
    WorkItem,
    parse_message,
)


def parse(document: object) -> WorkItem | WorkBatch | Ignorable:
    return parse_message(json.dumps(document))


def test_minimal_message_defaults_from_the_key() -> None:
    item = parse({"bucket": "in", "key": "trip data/2018-01.csv"})
    assert isinstance(item, WorkItem)
    assert (item.bucket, item.key, item.query, item.etag) == (
        "in",
        "trip data/2018-01.csv",
        None,
        None,
    )
    assert item.input == InputFormat(kind="CSV", csv_header="USE", compression="NONE")
    assert item.source == "s3://in/trip data/2018-01.csv"


@pytest.mark.parametrize(
    ("key", "kind", "compression"),
    [
        ("a.csv", "CSV", "NONE"),
        ("a.csv.gz", "CSV", "GZIP"),
        ("a.JSONL.BZ2", "JSON", "BZIP2"),
        ("logs/a.ndjson", "JSON", "NONE"),
        ("no-suffix", "CSV", "NONE"),
        ("trip data/yellow_tripdata_2024-01.parquet", "PARQUET", "NONE"),
        ("A.PARQUET", "PARQUET", "NONE"),
    ],
)
def test_input_format_follows_the_suffix(key: str, kind: str, compression: str) -> None:
    item = parse({"bucket": "in", "key": key})
    assert (item.input.kind, item.input.compression) == (kind, compression)


def test_every_optional_field_is_honoured() -> None:
    item = parse(
        {
            "version": 1,
            "bucket": "in",
            "key": "a.txt",
            "etag": '"abc"',
            "query": "SELECT s._1 FROM S3Object s",
            "input": {"format": "CSV", "csv_header": "NONE", "delimiter": "|", "quote": "'"},
            "output_key": "custom/out.json",
        }
    )
    assert item.input.to_s3select()["CSV"] == {
        "FileHeaderInfo": "NONE",
        "FieldDelimiter": "|",
        "QuoteCharacter": "'",
        "AllowQuotedRecordDelimiter": True,
    }
    assert (item.etag, item.output_key) == ('"abc"', "custom/out.json")


def test_original_task_maker_shape_is_accepted() -> None:
    item = parse(
        {
            "SourceBucketName": "nyc-tlc",
            "SourceKeyName": "trip data/yellow_tripdata_2018-01.csv",
            "DestBucketName": "results",
        }
    )
    assert (item.bucket, item.key, item.output_bucket, item.origin) == (
        "nyc-tlc",
        "trip data/yellow_tripdata_2018-01.csv",
        "results",
        "original",
    )


def test_s3_event_keys_are_url_decoded() -> None:
    event = {
        "Records": [
            {
                "eventName": "ObjectCreated:CompleteMultipartUpload",
                "s3": {
                    "bucket": {"name": "in"},
                    "object": {"key": "trip+data/caf%C3%A9+%2B1.csv", "eTag": "e1"},
                },
            }
        ]
    }
    item = parse(event)
    assert (item.key, item.etag, item.origin) == ("trip data/café +1.csv", "e1", "s3-event")


@pytest.mark.parametrize(
    "document",
    [
        {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "in"},
        {
            "Records": [
                {
                    "eventName": "ObjectRemoved:Delete",
                    "s3": {"bucket": {"name": "b"}, "object": {"key": "k"}},
                }
            ]
        },
    ],
)
def test_events_that_are_not_work_are_ignored(document: dict) -> None:
    assert isinstance(parse(document), Ignorable)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("{oops", "body is not JSON"),
        ("[1, 2]", "must be a JSON object, got list"),
        (json.dumps({"key": "k"}), "missing required field 'bucket'"),
        (json.dumps({"bucket": "", "key": "k"}), "'bucket' in message must not be empty"),
        (json.dumps({"bucket": "b", "key": 3}), "field 'key' in message must be str"),
        (json.dumps({"bucket": "b", "key": "k", "Bucket": "x"}), "unknown field(s) 'Bucket'"),
        (json.dumps({"version": 2, "bucket": "b", "key": "k"}), "unsupported message version 2"),
        (
            json.dumps({"version": True, "bucket": "b", "key": "k"}),
            "'version' in message must be int",
        ),
        (json.dumps({"bucket": "b", "key": "k", "query": "  "}), "'query' must not be blank"),
        (
            json.dumps({"bucket": "b", "key": "k", "input": {"format": "XML"}}),
            "must be one of CSV, JSON",
        ),
        (json.dumps({"bucket": "b", "key": "k", "input": {"delimiter": "||"}}), "one character"),
        (
            json.dumps({"bucket": "b", "key": "k", "input": {"gzip": True}}),
            "unknown field(s) 'gzip' in 'input'",
        ),
        (json.dumps({"Records": []}), "exactly one record"),
        (
            json.dumps({"Records": [{"eventName": "ObjectCreated:Put"}]}),
            "S3 event record lacks s3.bucket.name",
        ),
        (json.dumps({"SourceBucketName": "b"}), "missing required field 'SourceKeyName'"),
        (
            json.dumps({"SourceBucketName": "b", "SourceKeyName": "k", "Extra": 1}),
            "unknown field(s) 'Extra'",
        ),
    ],
)
def test_bad_messages_are_refused_with_a_clear_reason(body: str, reason: str) -> None:
    with pytest.raises(MessageError) as refused:
        parse_message(body)
    assert reason in str(refused.value)


def test_parquet_is_named_or_guessed_and_never_whole_object_compressed() -> None:
    """S3 Select reads Parquet as ``InputSerialization={"Parquet": {}}`` and documents that
    whole-object compression is not supported for Parquet (only its columns compress):
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/selecting-content-from-objects.html
    """
    item = parse({"bucket": "in", "key": "trips.data", "input": {"format": "PARQUET"}})
    assert item.input.kind == "PARQUET"
    assert item.input.to_s3select() == {"Parquet": {}, "CompressionType": "NONE"}
    for message in (
        {"bucket": "in", "key": "trips.parquet.gz"},
        {"bucket": "in", "key": "t.parquet", "input": {"compression": "GZIP"}},
    ):
        with pytest.raises(MessageError, match="cannot have whole-object compression"):
            parse(message)


def test_batch_message_names_many_sources_with_shared_query_and_input() -> None:
    body = json.dumps(
        {
            "items": [
                {"bucket": "in", "key": "a.log", "etag": "e1"},
                {"bucket": "in", "key": "b.json", "input": {"format": "JSON"}},
            ],
            "query": "SELECT s._1 FROM S3Object s",
            "input": {"format": "CSV", "csv_header": "NONE"},
        }
    )
    batch = parse_message(body)
    assert isinstance(batch, WorkBatch)
    first, second = batch.items
    assert (first.key, first.etag, first.input.csv_header) == ("a.log", "e1", "NONE")
    assert second.input.kind == "JSON" and second.etag is None, "an item's input replaces"
    assert first.query == second.query == batch.query == "SELECT s._1 FROM S3Object s"


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ({"items": []}, "1 to 1000 sources, got 0"),
        ({"items": [{"bucket": "in", "key": f"{n}"} for n in range(1001)]}, "got 1001"),
        ({"items": ["in/a.csv"]}, "items[0] must be an object"),
        ({"items": [{"bucket": "in"}]}, "missing required field 'key' in items[0]"),
        ({"items": [{"bucket": "in", "key": "a", "output_key": "x"}]}, "'output_key'"),
        ({"items": [{"bucket": "in", "key": "a"}, {"bucket": "in", "key": "a"}]}, "more than once"),
        ({"items": [{"bucket": "in", "key": "a"}], "query": " "}, "must not be blank"),
    ],
)
def test_bad_batch_is_refused_with_its_reason(document: dict, reason: str) -> None:
    with pytest.raises(MessageError, match=re.escape(reason)):
        parse_message(json.dumps(document))
