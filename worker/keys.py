"""Where a work item's result is stored: one deterministic key per source version.

The key depends only on the source (bucket, key, ETag) and on a query the message itself
carries, never on the job, the attempt or the clock. So a redelivered or re-seeded item maps to
the key that already holds its result, and ``If-None-Match: *`` makes the first writer win:
a retried item is never stored twice. ``invoke seed --skip-done`` computes the same key, and
lists the results under :func:`output_key_prefix`.

S3 refuses keys over 1,024 bytes of UTF-8 (``KeyTooLongError``; see ``worker.limits``), and a
source key may itself be 1,024 bytes long; the prefix, the bucket and the fingerprint must fit
too. A source key too long to fit is shortened: its start, then a hash of the whole key.
"""

from __future__ import annotations

import hashlib
import re

from worker.limits import MAX_KEY_BYTES, SHORTENED_MIN_BYTES, shorten, truncate_utf8, utf8_len

_FINGERPRINT_CHARS = 16
_SUFFIX_BYTES = len(f".{'0' * _FINGERPRINT_CHARS}.json")  # what follows the source key
_DERIVED_SUFFIX = re.compile(rf"\.[0-9a-f]{{{_FINGERPRINT_CHARS}}}\.json$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def fingerprint(etag: str, query: str | None = None) -> str:
    """Short stable digest of the source version (and of a per-message query, if any)."""
    material = etag.strip('"') + "\n" + (query or "")
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:_FINGERPRINT_CHARS]


def _room(head: str) -> int:
    """Bytes left for the source key between ``head`` and the fingerprint suffix."""
    return MAX_KEY_BYTES - utf8_len(head) - _SUFFIX_BYTES


def derive_output_key(
    prefix: str, bucket: str, key: str, etag: str, query: str | None = None
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
    return f"{head}{shorten(key, room)}.{fingerprint(etag, query)}.json"


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
    another item's result is derived to (a name ending ``.<fingerprint>.json``), nor hand S3 a
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
