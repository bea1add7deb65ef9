"""Fuzzing the parsers that read what other people wrote: messages, environment, Thrift.

A producer's bug or an operator's typo must end as one clear sentence (``MessageError``,
``ConfigError``), never as an unhandled exception: in the worker an unexpected exception
leaves a message unsettled, and at start it prints a traceback instead of the fix.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from worker.config import Config, ConfigError, load_config
from worker.messages import Ignorable, MessageError, WorkItem, parse_message
from worker.query.local.thrift_compact import (
    STRUCT,
    Reader,
    ThriftInvalid,
    read_struct,
    write_struct,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any JSON value; the huge and the deeply nested ones are written as text in `bodies` below.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)

# Field names the parser knows, so that documents get past the first checks often.
BATCHSPOT_FIELDS = ("version", "bucket", "key", "etag", "query", "input", "output_key")
ORIGINAL_FIELDS = ("SourceBucketName", "SourceKeyName", "DestBucketName")
INPUT_FIELDS = ("format", "csv_header", "delimiter", "quote", "json_type", "compression")
CHOICES = ("CSV", "JSON", "PARQUET", "USE", "IGNORE", "NONE", "LINES", "DOCUMENT", "GZIP", "BZIP2")
CHOICES += (",", "t.parquet", "t.parquet.gz")
plausible_values = (
    st.sampled_from(CHOICES) | st.text(min_size=1, max_size=12) | st.just(1) | json_values
)


def known_fields(names: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    """Documents built from ``names`` with values of random types, sometimes the right one."""
    return st.dictionaries(st.sampled_from(names), plausible_values, max_size=len(names))


batchspot_documents = st.builds(
    lambda doc, spec: {**doc, "input": spec} if spec is not None else doc,
    known_fields(BATCHSPOT_FIELDS),
    st.none() | known_fields(INPUT_FIELDS) | json_values,
)
s3_event_documents = st.builds(
    lambda name, bucket, key, etag: {
        "Records": [
            {"eventName": name, "s3": {"bucket": {"name": bucket}, "object": {"key": key, **etag}}}
        ]
    },
    st.sampled_from(["ObjectCreated:Put", "ObjectRemoved:Delete"]) | json_values,
    plausible_values,
    plausible_values,
    st.just({}) | st.fixed_dictionaries({"eTag": plausible_values}),
)
documents = (
    batchspot_documents
    | known_fields(ORIGINAL_FIELDS)
    | s3_event_documents
    | st.dictionaries(st.sampled_from(("Records", "Event", "bucket", "key")), json_values)
)
bodies = (
    st.text(max_size=200)
    | documents.map(json.dumps)
    | json_values.map(json.dumps)
    | st.integers(min_value=1, max_value=10**5).map(lambda n: "[" * n)  # deep nesting
    | st.integers(min_value=4301, max_value=10**5).map(lambda n: "9" * n)  # huge integer
)


def assert_clear(error: Exception) -> None:
    """A reason an operator can read in one log line."""
    text = str(error)
    assert text.strip(), f"{type(error).__name__} without a message"
    assert "\n" not in text, f"multi-line reason: {text!r}"


@FUZZ
@given(bodies)
def test_any_message_body_is_parsed_or_refused_with_a_reason(body: str) -> None:
    try:
        parsed = parse_message(body)
    except MessageError as error:
        assert_clear(error)
        return
    assert isinstance(parsed, WorkItem | Ignorable)
    if isinstance(parsed, WorkItem):
        # What the worker goes on to use must have the types it expects.
        assert isinstance(parsed.bucket, str) and parsed.bucket
        assert isinstance(parsed.key, str) and parsed.key
        assert parsed.etag is None or isinstance(parsed.etag, str)
        assert parsed.query is None or isinstance(parsed.query, str)


ENV_NAMES = (
    "SQS_QUEUE_URL",
    "OUTPUT_BUCKET",
    "OUTPUT_PREFIX",
    "ALLOWED_OUTPUT_BUCKETS",
    "S3_QUERY_LIMIT",
    "QUERY_ENGINE",
    "ROWS_FORMAT",
    "HANDLER",
    "HANDLER_COMMAND",
    "HANDLER_TIMEOUT",
    "RETRY_DELAY_SECONDS",
    "WORKER_CONCURRENCY",
    "IDLE_EXIT_SECONDS",
    "STOP_GRACE_SECONDS",
    "WAIT_TIME_SECONDS",
    "MAX_OUTPUT_BYTES",
    "SPOT_NOTICE_INTERVAL",
    "AWS_BATCH_JOB_ID",
    "AWS_BATCH_JOB_ARRAY_INDEX",
    "AWS_BATCH_JOB_ATTEMPT",
)
env_values = (
    st.text(max_size=12)
    | st.sampled_from(["nan", "inf", "-inf", "1e400", "-1", "0", "20", "²", " LIMIT 5", "local"])
    | st.integers(-(10**30), 10**30).map(str)
    | st.floats().map(str)
)
BASE_ENV = {"SQS_QUEUE_URL": "https://queue", "OUTPUT_BUCKET": "out"}
# One odd variable in a good environment reaches every check; many at once test their order.
environments = st.builds(
    lambda name, value: {**BASE_ENV, name: value}, st.sampled_from(ENV_NAMES), env_values
) | st.fixed_dictionaries(
    {name: st.just(value) | env_values for name, value in BASE_ENV.items()},
    optional={name: env_values for name in ENV_NAMES if name not in BASE_ENV},
)


@settings(FUZZ, max_examples=1000)  # a microsecond each; odd values hide among 20 names
@given(environments)
def test_any_environment_is_a_config_or_one_clear_sentence(env: dict[str, str]) -> None:
    try:
        config = load_config(env)
    except ConfigError as error:
        assert_clear(error)
        return
    assert isinstance(config, Config)
    # Numbers the worker sleeps, counts or compares with must be finite and in range.
    for name in ("handler_timeout", "retry_delay_seconds", "idle_exit_seconds"):
        value = getattr(config, name)
        assert 0 <= value < float("inf"), f"{name}={value}"
    assert config.concurrency >= 1 and config.max_output_bytes >= 1


# Thrift compact-protocol bytes (Parquet's footer and page index): field headers, varints and
# list headers of every type, so that lists, structs and nesting are reached often.
thrift_tokens = st.sampled_from(
    [
        *(b"\x00", b"\x15", b"\x16", b"\x18", b"\x19", b"\x1c", b"\x11", b"\x12", b"\x13"),
        *(b"\x17", b"\x1c\x00", b"\xfc", b"\x0c", b"\x08", b"\x8a\x01", b"\xff\xff\xff\x0f"),
    ]
) | st.binary(max_size=4)
thrift_bodies = st.lists(thrift_tokens, max_size=40).map(b"".join)


@settings(FUZZ, max_examples=1000)
@given(thrift_bodies)
def test_any_thrift_bytes_decode_as_a_struct_that_encodes_again_or_one_clear_error(
    data: bytes,
) -> None:
    """Decoding never raises but ThriftInvalid, and what it decodes survives a round trip."""
    try:
        fields, end = read_struct(data)
    except ThriftInvalid as error:
        assert_clear(error)
        return
    assert 0 < end <= len(data)
    assert read_struct(write_struct(fields))[0] == fields


@settings(FUZZ, max_examples=1000)
@given(thrift_bodies)
@example(b"\x19\x11\x01\x00")  # a list of one boolean: a byte of its own
@example(b"\x1c" * 16 + b"\x00" * 17)  # structs nested one past MAX_DEPTH
def test_skipping_thrift_bytes_ends_where_decoding_them_does(data: bytes) -> None:
    """Skipping a struct (a large footer's walk) reads exactly what decoding it reads."""
    decoder, skipper = Reader(data), Reader(data)
    try:
        decoder.value(STRUCT, 0)
    except ThriftInvalid:
        decoder.position = -1
    try:
        skipper.skip(STRUCT, 0)
    except ThriftInvalid as error:
        assert_clear(error)
        skipper.position = -1
    assert skipper.position == decoder.position
