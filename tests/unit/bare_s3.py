"""A bare S3 for measuring the query engine: ranged GETs over bytes in memory, nothing else.

moto's in-process mock (:mod:`tests.unit.in_memory_s3`) costs ~65 MiB of RSS by itself, which
would hide what the engine uses; this answers only what ``RangedObject`` asks, and counts the
bytes it served.
"""

from __future__ import annotations

import io
import re
from typing import Any


def byte_range(header: str, size: int) -> tuple[int, int]:
    """The first and last byte a ``Range`` header asks for: ``bytes=a-b`` or the suffix
    ``bytes=-n`` (the last n bytes, all of a shorter object), as S3 reads them."""
    suffix = re.fullmatch(r"bytes=-(\d+)", header)
    if suffix:
        return max(0, size - int(suffix.group(1))), size - 1
    first, last = map(int, re.fullmatch(r"bytes=(\d+)-(\d+)", header).groups())
    return first, last


class BytesS3:
    """``get_object`` with ``Range`` over ``objects``; ``bytes_served`` counts what it sent."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.bytes_served = 0

    def get_object(self, Bucket: str, Key: str, Range: str, IfMatch: str | None = None) -> Any:
        body = self.objects[Key]
        first, last = byte_range(Range, len(body))
        part = body[first : last + 1]
        self.bytes_served += len(part)
        return {
            "Body": io.BytesIO(part),
            "ContentRange": f"bytes {first}-{first + len(part) - 1}/{len(body)}",
            "ETag": '"bare"',
        }
