"""Where a work item's result is stored: one deterministic key per source version and recipe.

The key depends on the source (bucket, key, ETag) and on its :class:`Recipe`: everything else
that decides the result (the effective query, the input serialization, the rows format and the
code's identity), never on the job, the attempt or the clock. So a redelivered or re-seeded
item maps to the key that already holds its result, and ``If-None-Match: *`` makes the first
writer win: a retried item is never stored twice. A rerun with changed code or query gets new
keys, so it never reports ``already-done`` for another recipe's result. ``invoke seed
--skip-done`` computes the same key with :func:`derive_output_key`, and lists the results under
:func:`output_key_prefix`.

S3 refuses keys over 1,024 bytes of UTF-8 (``KeyTooLongError``; see ``worker.limits``), and a
source key may itself be 1,024 bytes long; the prefix, the bucket and the fingerprint must fit
too. A source key too long to fit is shortened: its start, then a hash of the whole key.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from worker.limits import MAX_KEY_BYTES, SHORTENED_MIN_BYTES, shorten, truncate_utf8, utf8_len
from worker.messages import InputFormat, WorkItem, parse_input_format

# The code's identity when neither CODE_VERSION nor custom code is set: the built-in handler.
BUILT_IN_CODE = "rows-to-json"
# Where, under OUTPUT_PREFIX, the workers record their runs' failures (``worker.manifest``):
# within the prefix the worker may write, and never a derived key's, since bucket names (the
# first part of a derived key) cannot start with a dot.
RUN_RECORDS = ".runs/"
# Where, under OUTPUT_PREFIX, a batch's one result is stored (``worker.batches``): a dot, like
# RUN_RECORDS, so no derived key's bucket can lie there.
BATCH_RESULTS = ".batches/"

_FINGERPRINT_CHARS = 16
# A batch's key holds no source name to tell two batches apart: 128 bits.
_BATCH_FINGERPRINT_CHARS = 32
_SUFFIX_BYTES = len(f".{'0' * _FINGERPRINT_CHARS}.json")  # what follows the source key
_DERIVED_SUFFIX = re.compile(rf"\.[0-9a-f]{{{_FINGERPRINT_CHARS}}}\.json$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def default_query(limit: int | None = None) -> str:
    """Return the query run when a message names none: the original job's ``select *``."""
    return f"SELECT * FROM S3Object s{f' LIMIT {limit}' if limit is not None else ''}"


@dataclass(frozen=True)
class Recipe:
    """What, besides the source version, decides a result.

    ``code`` is the code's identity (the image's CODE_VERSION and the handler's text);
    ``input`` None means the serialization the worker infers from the source key.
    """

    query: str = default_query()
    rows_format: str = "json"
    code: str = BUILT_IN_CODE
    input: InputFormat | None = None

    def for_message(self, query: str | None, input_format: InputFormat | None) -> Recipe:
        """Return one message's recipe: its own query replaces the run's default query."""
        return replace(self, query=query or self.query, input=input_format)


# A worker with no settings: the built-in handler over ``SELECT *``, rows as JSON.
DEFAULT_RECIPE = Recipe()


def fingerprint(etag: str, key: str, recipe: Recipe = DEFAULT_RECIPE) -> str:
    """Short stable digest of the source version and of the recipe applied to it."""
    input_format = recipe.input or parse_input_format(None, key)
    material = [
        etag.strip('"'),
        recipe.query,
        input_format.to_s3select(),
        recipe.rows_format,
        recipe.code,
    ]
    digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode("utf-8"))
    return digest.hexdigest()[:_FINGERPRINT_CHARS]


def derive_batch_key(
    prefix: str, items: Iterable[WorkItem], recipe: Recipe = DEFAULT_RECIPE
) -> str:
    """Return ``<prefix>.batches/<fingerprint>.jsonl``, the one result key of a batch.

    Each item's ``etag`` must be the version read (or, in the seeder, listed). The fingerprint
    covers every source version with its input serialization, and the recipe; the sources are
    sorted first, so the same sources queued in another order map to the same result.
    """
    versions = sorted(
        (item.bucket, item.key, (item.etag or "").strip('"'), item.input.to_s3select())
        for item in items
    )
    material = [versions, recipe.query, recipe.rows_format, recipe.code]
    digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode("utf-8"))
    return f"{prefix}{BATCH_RESULTS}{digest.hexdigest()[:_BATCH_FINGERPRINT_CHARS]}.jsonl"


def _room(head: str) -> int:
    """Bytes left for the source key between ``head`` and the fingerprint suffix."""
    return MAX_KEY_BYTES - utf8_len(head) - _SUFFIX_BYTES


def derive_output_key(
    prefix: str, bucket: str, key: str, etag: str, recipe: Recipe = DEFAULT_RECIPE
) -> str:
    """Return ``<prefix><bucket>/<key>.<fingerprint>.json``, readable and collision-free.

    If that would exceed S3's 1,024 bytes, ``<key>`` becomes its start (cut between characters)
    and a hash of the whole key, so the result still sorts and reads next to its source and two
    long keys that differ only at the end still get two results.
    """
    head = f"{prefix}{bucket}/"
    room = _room(head)
    if utf8_len(key) > room and room < SHORTENED_MIN_BYTES:
        raise ValueError(
            f"output prefix {prefix!r} and bucket {bucket!r} take {utf8_len(head)} bytes, "
            f"leaving no room for the source key within S3's {MAX_KEY_BYTES}-byte key limit; "
            "use a shorter output prefix"
        )
    return f"{head}{shorten(key, room)}.{fingerprint(etag, key, recipe)}.json"


def output_key_prefix(prefix: str, bucket: str, source_prefix: str) -> str:
    """Return a prefix shared by the output keys of all sources under ``source_prefix``.

    A shortened output key keeps only the start of its source key, so a long ``source_prefix``
    is cut to what every shortened key still holds; listing under the result finds them all.
    """
    head = f"{prefix}{bucket}/"
    return head + truncate_utf8(source_prefix, max(_room(head) - SHORTENED_MIN_BYTES, 0))


def check_output_key(key: str, prefix: str) -> None:
    """Refuse a message's own ``output_key`` unless it is a safe key under ``prefix``.

    A message must not choose where outside the results prefix it writes, nor take the key
    another item's result is derived to (a name ending ``.<fingerprint>.json``), nor write
    among the runs' failure records (:data:`RUN_RECORDS`) or the batches' results
    (:data:`BATCH_RESULTS`), nor hand S3 a
    key it refuses or that tools resolve elsewhere (``..``, a leading ``/``, control
    characters). Raise ValueError saying which rule the key breaks.
    """
    if not key.startswith(prefix):
        raise ValueError(f"output_key must lie under OUTPUT_PREFIX {prefix!r}")
    if utf8_len(key) > MAX_KEY_BYTES:
        raise ValueError(
            f"output_key is {utf8_len(key)} bytes of UTF-8; S3 accepts at most {MAX_KEY_BYTES}"
        )
    if key.startswith("/"):
        raise ValueError("output_key must not start with '/'")
    if ".." in key.split("/"):
        raise ValueError("output_key must not have a '..' segment")
    if _CONTROL.search(key):
        raise ValueError("output_key must not contain control characters")
    if _DERIVED_SUFFIX.search(key):
        raise ValueError(
            "output_key must not end like a derived result key (.<16 hex digits>.json)"
        )
    for reserved, what in ((RUN_RECORDS, "the runs' records"), (BATCH_RESULTS, "batch results")):
        if key.startswith(prefix + reserved):
            raise ValueError(f"output_key must not lie under {prefix + reserved!r}, {what}")
