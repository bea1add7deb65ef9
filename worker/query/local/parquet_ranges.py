"""A Parquet object as pyarrow reads it, served from as few ranged GETs as the query needs.

The footer comes first, in one suffix GET of :data:`FOOTER_GET` bytes (a second GET only for
a footer larger than that), and is checked before pyarrow parses it. Then, a row group at a
time, the byte ranges of the column chunks the query reads are fetched, neighbours closer than
:data:`MERGE_GAP` merged into one GET (as arrow-rs and DuckDB coalesce them), and only that row
group's ranges are held. pyarrow reads through :class:`ParquetRanges`, a seekable file that
hands out views of the fetched bytes (no copies); a read outside them (a writer's padding) is
fetched on its own. Every GET goes through :meth:`.reader.RangedObject.fetch_range`, so all
carry If-Match on the first one's ETag and are counted in ``gets`` and ``bytes_fetched``.
"""

from __future__ import annotations

import io
from typing import Any

from worker.query import QueryLimitExceeded, QueryUnsupported
from worker.query.local.reader import EmptyObject, RangedObject
from worker.query.local.thrift_compact import Struct, ThriftInvalid, read_struct

# Most footers are a few KiB (pyarrow's own first read of a footer is 64 KiB too): one GET.
FOOTER_GET = 64 << 10
# Ranges closer than this are fetched as one: a GET costs about what 1 MiB of transfer does.
MERGE_GAP = 1 << 20
# A footer past this is refused before it is parsed: 16 MiB describes ~100 000 column chunks.
MAX_FOOTER_BYTES = 16 << 20
# A footer up to this is decoded whole, once, for the chunk check and the page index to share
# (up to ~70 bytes of Python objects a byte: ~18 MiB at most); a larger one is only walked.
MAX_DECODED_FOOTER_BYTES = 256 << 10
MAGIC = b"PAR1"
_TRAILER = 8  # the footer's length (4 bytes, little-endian) and the magic


class ParquetInvalid(QueryUnsupported):
    """The object is not a valid Parquet file; the same version fails every retry."""


def undecodable_footer(error: ThriftInvalid) -> ParquetInvalid:
    """Return the refusal of a footer whose Thrift does not decode, decoded whole or walked."""
    return ParquetInvalid(f"its footer does not decode: {error}")


def merged(spans: list[tuple[int, int]], gap: int | None = None) -> list[tuple[int, int]]:
    """Return ``[start, end)`` spans sorted, those closer than ``gap`` (MERGE_GAP) joined."""
    gap = MERGE_GAP if gap is None else gap
    joined: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if joined and start - joined[-1][1] <= gap:
            joined[-1] = (joined[-1][0], max(joined[-1][1], end))
        else:
            joined.append((start, end))
    return joined


class ParquetRanges(io.RawIOBase):
    """A seekable, read-only file over the ranges of one Parquet object fetched so far."""

    def __init__(self, source: RangedObject) -> None:
        """Read ``source``; nothing is fetched until :meth:`open`."""
        super().__init__()
        self._source = source
        self._footer: tuple[int, bytes] = (0, b"")
        self._decoded: Struct | None = None
        self._held: list[tuple[int, bytes]] = []
        self._position = 0
        self.size = 0
        self.data_end = 0  # where the footer starts: every column chunk lies before it

    def open(self) -> None:
        """Fetch and check the footer (one GET, two if it is over FOOTER_GET)."""
        try:
            tail = self._source.fetch_range(f"bytes=-{FOOTER_GET}")
        except EmptyObject:
            raise ParquetInvalid("the object is empty, not a Parquet file") from None
        self.size = self._source.size or len(tail)
        if len(tail) < len(MAGIC) + _TRAILER or tail[-len(MAGIC) :] != MAGIC:
            raise ParquetInvalid(
                "the object does not end in Parquet's magic bytes PAR1: it is truncated or "
                "not Parquet"
            )
        footer_bytes = int.from_bytes(tail[-_TRAILER : -len(MAGIC)], "little")
        if footer_bytes + _TRAILER + len(MAGIC) > self.size:
            raise ParquetInvalid(
                f"its footer claims {footer_bytes} bytes, more than the object's {self.size}"
            )
        if footer_bytes > MAX_FOOTER_BYTES:
            raise QueryLimitExceeded(
                f"its footer is {footer_bytes} bytes, over the local engine's limit of "
                f"{MAX_FOOTER_BYTES >> 20} MiB"
            )
        start = self.size - len(tail)
        self.data_end = self.size - _TRAILER - footer_bytes
        if self.data_end < start:
            tail = self._source.fetch_range(f"bytes={self.data_end}-{start - 1}") + tail
            start = self.data_end
        self._footer = (start, tail)

    def footer(self) -> memoryview:
        """Return the footer's Thrift bytes (without its length and the magic)."""
        first, tail = self._footer
        return memoryview(tail)[self.data_end - first : self.size - _TRAILER - first]

    def decoded_footer(self) -> Struct | None:
        """Return the footer decoded (once), or None where it is over MAX_DECODED_FOOTER_BYTES."""
        footer = self.footer()
        if self._decoded is None and len(footer) <= MAX_DECODED_FOOTER_BYTES:
            try:
                self._decoded = read_struct(footer)[0]
            except ThriftInvalid as error:
                raise undecodable_footer(error) from None
        return self._decoded

    def fetch(self, spans: list[tuple[int, int]]) -> list[tuple[int, bytes]]:
        """Fetch ``spans``, merged; return each merged range's start and bytes."""
        fetched = []
        first, tail = self._footer
        for start, end in merged(spans):
            if first <= start and end <= first + len(tail):
                fetched.append((first, tail))  # a small object: the footer's GET fetched it
            else:
                fetched.append((start, self._source.fetch_range(f"bytes={start}-{end - 1}")))
        return fetched

    def hold(self, spans: list[tuple[int, int]]) -> None:
        """Fetch ``spans`` (merged) and hold them in place of the previous row group's."""
        self._held = []
        self._held = self.fetch(spans)

    def view(self, offset: int, size: int) -> Any:
        """Return ``size`` bytes at ``offset``: a view of fetched bytes where they are held."""
        self.seek(offset)
        return self.read(size)

    def release(self) -> None:
        """Drop the held ranges (the footer stays)."""
        self._held = []

    # --- the file interface pyarrow uses ------------------------------------------------------

    def readable(self) -> bool:
        """Say yes: pyarrow reads this."""
        return True

    def seekable(self) -> bool:
        """Say yes: pyarrow reads at offsets."""
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move to ``offset`` (from the start, the current position or the end)."""
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.size}[whence]
        self._position = base + offset
        return self._position

    def tell(self) -> int:
        """Return the current position."""
        return self._position

    def read(self, size: int = -1) -> Any:
        """Return up to ``size`` bytes at the position: a view of fetched bytes, not a copy."""
        start = self._position
        end = self.size if size < 0 else min(self.size, start + size)
        if end <= start:
            return b""
        self._position = end
        for first, body in (self._footer, *self._held):
            if first <= start and end <= first + len(body):
                return memoryview(body)[start - first : end - first]
        return self._source.fetch_range(f"bytes={start}-{end - 1}")
