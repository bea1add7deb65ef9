"""The message contract: what a queue message may say, parsed strictly into a work item.

Three shapes are accepted, because three kinds of producer feed the queue:

* BatchSpot's own (``invoke seed``): ``{"bucket": ..., "key": ...}`` plus optional fields;
* S3 event notifications, so a bucket can feed the queue directly;
* the original .NET task maker's ``{"SourceBucketName", "SourceKeyName", "DestBucketName"}``;
* a batch (``invoke seed --batch-size``): ``{"items": [{"bucket", "key", ...}, ...]}``, many
  small sources in one message and one result (``worker.batches``), so that millions of small
  objects do not each pay a PUT and a share of the SQS calls.

Anything else is a :class:`MessageError` whose text says what is wrong, so the operator can
fix the producer from one log line. Such a message can never succeed, so the worker releases
it at once and it reaches the dead-letter queue after maxReceiveCount receives.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote_plus

CONTRACT_VERSION = 1

Compression = Literal["NONE", "GZIP", "BZIP2"]
CsvHeader = Literal["USE", "IGNORE", "NONE"]
JsonType = Literal["LINES", "DOCUMENT"]

_COMPRESSION_SUFFIXES: dict[str, Compression] = {".gz": "GZIP", ".gzip": "GZIP", ".bz2": "BZIP2"}
_JSON_SUFFIXES = (".json", ".jsonl", ".ndjson")
_PARQUET_SUFFIX = ".parquet"


class MessageError(ValueError):
    """A message that can never be processed: bad JSON, wrong shape, unknown field."""


@dataclass(frozen=True)
class InputFormat:
    """How the source object is encoded; mirrors S3 Select's InputSerialization."""

    kind: Literal["CSV", "JSON", "PARQUET"] = "CSV"
    csv_header: CsvHeader = "USE"
    delimiter: str = ","
    quote: str = '"'
    json_type: JsonType = "LINES"
    compression: Compression = "NONE"

    def to_s3select(self) -> dict[str, Any]:
        """Return the ``InputSerialization`` argument of ``select_object_content``."""
        if self.kind == "CSV":
            body: dict[str, Any] = {
                "CSV": {
                    "FileHeaderInfo": self.csv_header,
                    "FieldDelimiter": self.delimiter,
                    "QuoteCharacter": self.quote,
                    "AllowQuotedRecordDelimiter": True,
                }
            }
        elif self.kind == "JSON":
            body = {"JSON": {"Type": self.json_type}}
        else:
            body = {"Parquet": {}}
        body["CompressionType"] = self.compression
        return body


@dataclass(frozen=True)
class WorkItem:
    """One unit of work: query one source object, run the custom code, store the result."""

    bucket: str
    key: str
    input: InputFormat
    query: str | None = None
    etag: str | None = None
    output_key: str | None = None
    output_bucket: str | None = None
    origin: Literal["batchspot", "s3-event", "original"] = "batchspot"

    @property
    def source(self) -> str:
        """The source as an operator would type it (used in logs)."""
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class WorkBatch:
    """Several work items from one message, each run as a :class:`WorkItem` is.

    The batch stores one JSON-lines result for all of them (``worker.batches``).
    """

    items: tuple[WorkItem, ...]
    query: str | None = None

    @property
    def source(self) -> str:
        """The batch as an operator would find it in logs: its first source and its size."""
        return f"{self.items[0].source} and {len(self.items) - 1} more"


@dataclass(frozen=True)
class Ignorable:
    """A message to acknowledge and drop, such as S3's ``s3:TestEvent``."""

    reason: str


@dataclass(frozen=True)
class Malformed:
    """A body that breaks the contract, kept with the reason so the worker fails it for good."""

    reason: str


# A body as the worker reads it: parsed once, and a malformed one kept rather than raised.
Message = WorkItem | WorkBatch | Ignorable | Malformed


@dataclass(frozen=True)
class _Field:
    types: tuple[type, ...]
    required: bool = False
    choices: tuple[str, ...] = field(default=())


_INPUT_FIELDS = {
    "format": _Field((str,), choices=("CSV", "JSON", "PARQUET")),
    "csv_header": _Field((str,), choices=("USE", "IGNORE", "NONE")),
    "delimiter": _Field((str,)),
    "quote": _Field((str,)),
    "json_type": _Field((str,), choices=("LINES", "DOCUMENT")),
    "compression": _Field((str,), choices=("NONE", "GZIP", "BZIP2")),
}

_BATCHSPOT_FIELDS = {
    "version": _Field((int,)),
    "bucket": _Field((str,), required=True),
    "key": _Field((str,), required=True),
    "etag": _Field((str,)),
    "query": _Field((str,)),
    "input": _Field((dict,)),
    "output_key": _Field((str,)),
}

# A batch's own fields: ``query`` and ``input`` apply to every item (an item's ``input``
# replaces the batch's); ``etag`` is per item, as the seeder listed it.
_BATCH_FIELDS = {
    "version": _Field((int,)),
    "items": _Field((list,), required=True),
    "query": _Field((str,)),
    "input": _Field((dict,)),
}
_BATCH_ITEM_FIELDS = {
    "bucket": _Field((str,), required=True),
    "key": _Field((str,), required=True),
    "etag": _Field((str,)),
    "input": _Field((dict,)),
}
# Items one batch may name. Its deadline grows with its items (worker.loop), and SQS keeps a
# message invisible for 12 hours at most; 1,000 small keys also fit SQS's 1 MiB.
MAX_BATCH_ITEMS = 1000

_ORIGINAL_FIELDS = {
    "SourceBucketName": _Field((str,), required=True),
    "SourceKeyName": _Field((str,), required=True),
    "DestBucketName": _Field((str,)),
}


def parse_message(body: str) -> WorkItem | WorkBatch | Ignorable:
    """Parse one SQS message body; raise :class:`MessageError` with a clear reason."""
    try:
        document = json.loads(body)
    except (ValueError, TypeError, RecursionError) as error:  # huge ints, deep nesting
        raise MessageError(f"body is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise MessageError(f"body must be a JSON object, got {type(document).__name__}")
    if document.get("Event") == "s3:TestEvent":
        return Ignorable("s3:TestEvent sent when the bucket notification was configured")
    if "Records" in document:
        return _parse_s3_event(document)
    if "SourceBucketName" in document or "SourceKeyName" in document:
        return _parse_original(document)
    if "items" in document:
        return _parse_batch(document)
    return _parse_batchspot(document)


def read_message(body: str) -> Message:
    """Parse one SQS message body as :func:`parse_message` does, but never raise.

    The worker reads each body once, before sizing its deadline, and hands the result on; a
    malformed body becomes :class:`Malformed` with the reason it is dead-lettered with.
    """
    try:
        return parse_message(body)
    except MessageError as error:
        return Malformed(str(error))


def _check_fields(document: dict[str, Any], spec: dict[str, _Field], where: str) -> None:
    unknown = sorted(set(document) - set(spec))
    if unknown:
        raise MessageError(
            f"unknown field(s) {', '.join(map(repr, unknown))} in {where}; "
            f"allowed: {', '.join(spec)}"
        )
    for name, rule in spec.items():
        if name not in document:
            if rule.required:
                raise MessageError(f"missing required field {name!r} in {where}")
            continue
        value = document[name]
        if isinstance(value, bool) or not isinstance(value, rule.types):
            kind = "/".join(t.__name__ for t in rule.types)
            raise MessageError(f"field {name!r} in {where} must be {kind}, got {value!r}")
        if rule.choices and value not in rule.choices:
            raise MessageError(
                f"field {name!r} in {where} must be one of {', '.join(rule.choices)}, got {value!r}"
            )
        if rule.required and isinstance(value, str) and not value:
            raise MessageError(f"field {name!r} in {where} must not be empty")


def _check_version_and_query(document: dict[str, Any]) -> str | None:
    version = document.get("version", CONTRACT_VERSION)
    if version != CONTRACT_VERSION:
        raise MessageError(
            f"unsupported message version {version}; this worker understands {CONTRACT_VERSION}"
        )
    query = document.get("query")
    if query is not None and not query.strip():
        raise MessageError("field 'query' must not be blank")
    return query


def _parse_batchspot(document: dict[str, Any]) -> WorkItem:
    _check_fields(document, _BATCHSPOT_FIELDS, "message")
    query = _check_version_and_query(document)
    return WorkItem(
        bucket=document["bucket"],
        key=document["key"],
        input=parse_input_format(document.get("input"), document["key"]),
        query=query,
        etag=document.get("etag"),
        output_key=document.get("output_key") or None,
    )


def _parse_batch(document: dict[str, Any]) -> WorkBatch:
    _check_fields(document, _BATCH_FIELDS, "batch message")
    query = _check_version_and_query(document)
    entries = document["items"]
    if not 1 <= len(entries) <= MAX_BATCH_ITEMS:
        raise MessageError(
            f"field 'items' must name 1 to {MAX_BATCH_ITEMS} sources, got {len(entries)}"
        )
    items = []
    for number, entry in enumerate(entries):
        where = f"items[{number}]"
        if not isinstance(entry, dict):
            raise MessageError(f"{where} must be an object, got {type(entry).__name__}")
        _check_fields(entry, _BATCH_ITEM_FIELDS, where)
        items.append(
            WorkItem(
                bucket=entry["bucket"],
                key=entry["key"],
                input=parse_input_format(entry.get("input", document.get("input")), entry["key"]),
                query=query,
                etag=entry.get("etag"),
            )
        )
    if len({(item.bucket, item.key) for item in items}) != len(items):
        # One source twice would make two lines of one result and count one item twice.
        raise MessageError("field 'items' names a source more than once")
    return WorkBatch(items=tuple(items), query=query)


def _parse_original(document: dict[str, Any]) -> WorkItem:
    _check_fields(document, _ORIGINAL_FIELDS, "original task-maker message")
    key = document["SourceKeyName"]
    return WorkItem(
        bucket=document["SourceBucketName"],
        key=key,
        input=parse_input_format(None, key),
        output_bucket=document.get("DestBucketName") or None,
        origin="original",
    )


def _parse_s3_event(document: dict[str, Any]) -> WorkItem | Ignorable:
    records = document["Records"]
    if not isinstance(records, list) or len(records) != 1:
        raise MessageError("S3 event notification must hold exactly one record in 'Records'")
    record = records[0]
    event_name = _event_field(record, "eventName")
    if not event_name.startswith("ObjectCreated:"):
        return Ignorable(f"S3 event {event_name} is not an object creation")
    bucket = _event_field(record, "s3", "bucket", "name")
    # S3 URL-encodes keys in notifications, with '+' for spaces.
    key = unquote_plus(_event_field(record, "s3", "object", "key"))
    etag = record["s3"]["object"].get("eTag")
    if etag is not None and not isinstance(etag, str):
        raise MessageError(f"S3 event record's s3.object.eTag must be a string, got {etag!r}")
    return WorkItem(
        bucket=bucket,
        key=key,
        input=parse_input_format(None, key),
        etag=etag or None,
        origin="s3-event",
    )


def _event_field(record: Any, *path: str) -> str:
    """Return the non-empty string at ``path`` in an S3 event record, or refuse the message."""
    value = record
    for step in path:
        if not isinstance(value, dict) or step not in value:
            raise MessageError(
                f"S3 event record lacks {'.'.join(path)}: not an S3 event notification"
            )
        value = value[step]
    if not isinstance(value, str) or not value:
        raise MessageError(f"S3 event record's {'.'.join(path)} must be a non-empty string")
    return value


def parse_input_format(spec: dict[str, Any] | None, key: str) -> InputFormat:
    """Build the input format from a message's ``input`` field, defaulting from the key.

    The defaults follow the suffix (``.json``/``.jsonl`` is JSON lines, ``.parquet`` is
    Parquet, ``.gz``/``.bz2`` is compressed, anything else CSV with a header) because that is
    right for the common case and a seeder should not have to say it.
    """
    spec = spec or {}
    _check_fields(spec, _INPUT_FIELDS, "'input'")
    lowered = key.lower()
    compression: Compression = "NONE"
    for suffix, kind in _COMPRESSION_SUFFIXES.items():
        if lowered.endswith(suffix):
            compression = kind
            lowered = lowered[: -len(suffix)]
    guessed_kind = "JSON" if lowered.endswith(_JSON_SUFFIXES) else "CSV"
    if lowered.endswith(_PARQUET_SUFFIX):
        guessed_kind = "PARQUET"
    for name in ("delimiter", "quote"):
        if name in spec and len(spec[name]) != 1:
            raise MessageError(f"field {name!r} in 'input' must be one character")
    kind = spec.get("format", guessed_kind)
    compression = spec.get("compression", compression)
    if kind == "PARQUET" and compression != "NONE":
        # S3 Select's documented rule: Parquet compresses by column, never as a whole object.
        raise MessageError(
            f"a Parquet source cannot have whole-object compression ({compression}); "
            f"Parquet compresses its columns itself: use compression NONE"
        )
    return InputFormat(
        kind=kind,
        csv_header=spec.get("csv_header", "USE"),
        delimiter=spec.get("delimiter", ","),
        quote=spec.get("quote", '"'),
        json_type=spec.get("json_type", "LINES"),
        compression=compression,
    )
