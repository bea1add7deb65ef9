"""Where a work item's result is stored: one deterministic key per source version.

The key depends only on the source (bucket, key, ETag) and on a query the message itself
carries, never on the job, the attempt or the clock. So a redelivered or re-seeded item maps to
the key that already holds its result, and ``If-None-Match: *`` makes the first writer win:
a retried item is never stored twice. ``invoke seed --skip-done`` computes the same key.
"""

from __future__ import annotations

import hashlib


def fingerprint(etag: str, query: str | None = None) -> str:
    """Short stable digest of the source version (and of a per-message query, if any)."""
    material = etag.strip('"') + "\n" + (query or "")
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:16]


def derive_output_key(
    prefix: str, bucket: str, key: str, etag: str, query: str | None = None
) -> str:
    """Return ``<prefix><bucket>/<key>.<fingerprint>.json``, readable and collision-free."""
    return f"{prefix}{bucket}/{key}.{fingerprint(etag, query)}.json"
