"""A row group's Snappy chunks inflated by cramjam, for pyarrow to read uncompressed.

pyarrow 26's wheel inflates Snappy at about half the speed of cramjam (Rust's ``snap``):
the 53 MB of one float column's pages in the bench's 1 GiB Parquet file take 72-100 ms through
``pyarrow.Codec``, 35 ms through cramjam, and pyarrow decodes the same two columns in 29 ms
uncompressed against 143 ms compressed (``invoke bench-query --inputs parquet``: WHERE + SUM).

Each page of the chunks read is inflated into one buffer behind its header, rewritten to say
so (its compressed size made the uncompressed one, the CRC of the compressed bytes dropped, a
V2 page marked uncompressed: its levels were never compressed); the buffer ends with a footer
of one row group whose chunks are UNCOMPRESSED (:mod:`.parquet_one_group`), and pyarrow reads
that. Each page is inflated to exactly the size its header declares, and a chunk's pages may
not declare more than the chunk's metadata (which :mod:`.parquet` has held to the limits and
the decompression ratio).

Anything else returns None, and pyarrow reads the chunks as they are and judges them: another
codec, a page other than data or dictionary, a header or a page that does not decode as it
says, a chunk whose pages disagree with its metadata, more than :data:`MAX_PAGES` pages or
:data:`MAX_INFLATED_BYTES` in the row group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import cramjam
import pyarrow as pa

from worker.query.local.parquet_one_group import (
    CHUNK_META,
    DATA_PAGE,
    DATA_PAGE_V2,
    DICTIONARY_PAGE,
    FILE_ROW_GROUPS,
    GROUP_COLUMNS,
    GROUP_ROWS,
    META_CODEC,
    META_COMPRESSED,
    META_DATA_PAGE,
    META_DICTIONARY_PAGE,
    META_UNCOMPRESSED,
    PAGE_COMPRESSED_SIZE,
    PAGE_CRC,
    PAGE_HEADER_V2,
    PAGE_SIZE,
    PAGE_TYPE,
    chunk_start,
    kept,
    one_group_footer,
)
from worker.query.local.parquet_ranges import MAGIC
from worker.query.local.thrift_compact import (
    I32,
    I64,
    STRUCT,
    TRUE,
    Struct,
    ThriftInvalid,
    read_struct,
    write_struct,
)

# The inflated row group is held whole beside the fetched chunks while pyarrow decodes it: a
# larger one is read by pyarrow a page at a time, within the fast path's 256 MiB.
MAX_INFLATED_BYTES = 48 << 20
# Each page header is decoded in Python (~10 us): a chunk of more pages, pyarrow reads.
MAX_PAGES = 1 << 14
# A page header is a few dozen bytes (the decoder copies what it is given: this first); one
# with statistics of long text may run to KiBs.
HEADER_BYTES, MAX_HEADER_BYTES = 256, 64 << 10
_UNCOMPRESSED, _SNAPPY = 0, 1
# DataPageHeaderV2's levels' lengths and its flag (PageHeader's ids: :mod:`.parquet_one_group`).
_V2_DEFINITIONS, _V2_REPETITIONS, _V2_IS_COMPRESSED = 5, 6, 7


class _Page(NamedTuple):
    """One page of the new file, its header rewritten.

    Of its bytes as read, the leading ``copied`` are copied as they are (all of them,
    uncompressed), and the rest inflated to the declared ``size``.
    """

    kind: int
    header: bytes
    data: Any
    copied: int
    size: int


class _Declined(Exception):
    """pyarrow reads this row group's chunks as they are."""


def inflated(
    footer: Struct, index: int, leaves: list[int], view: Callable[[int, int], Any]
) -> pa.Buffer | None:
    """Return row group ``index``'s ``leaves`` as a Parquet file of their own, inflated.

    ``footer`` is the object's, decoded; ``view(offset, size)`` returns the object's bytes
    there (the chunks fetched). None: pyarrow reads the chunks as they are.
    """
    group = footer[FILE_ROW_GROUPS][1].items[index]
    metas = {leaf: group[GROUP_COLUMNS][1].items[leaf][CHUNK_META][1] for leaf in leaves}
    codecs = {meta[META_CODEC][1] for meta in metas.values()}
    if _SNAPPY not in codecs or not codecs <= {_SNAPPY, _UNCOMPRESSED}:
        return None
    if sum(meta[META_UNCOMPRESSED][1] for meta in metas.values()) > MAX_INFLATED_BYTES:
        return None
    try:
        laid_out = {leaf: _pages(meta, view) for leaf, meta in metas.items()}
    except _Declined:
        return None
    chunks = {}
    at = len(MAGIC)
    for leaf, pages in laid_out.items():
        chunks[leaf] = meta = kept(metas[leaf])
        meta[META_CODEC] = (I32, _UNCOMPRESSED)
        start = at
        for kind, header, _, _, size in pages:
            first_page = META_DICTIONARY_PAGE if kind == DICTIONARY_PAGE else META_DATA_PAGE
            meta.setdefault(first_page, (I64, at))
            at += len(header) + size
        meta[META_COMPRESSED] = meta[META_UNCOMPRESSED] = (I64, at - start)
    ending = one_group_footer(footer, index, chunks, group[GROUP_ROWS][1], at)
    body = pa.allocate_buffer(at + len(ending))  # from Arrow's pool, which keeps its pages
    written = memoryview(body).cast("B")
    written[: len(MAGIC)] = MAGIC
    at = len(MAGIC)
    for pages in laid_out.values():
        for _, header, data, copied, size in pages:
            written[at : at + len(header)] = header
            at += len(header)
            written[at : at + copied] = data[:copied]
            if size > copied and not _inflate(data[copied:], written[at + copied : at + size]):
                return None
            at += size
    written[at:] = ending
    return body


def _pages(meta: Struct, view: Callable[[int, int], Any]) -> list[_Page]:
    """Return each page of a chunk: its new header, its bytes, how many to copy, its size."""
    chunk = view(chunk_start(meta), meta[META_COMPRESSED][1])
    snappy = meta[META_CODEC][1] == _SNAPPY
    pages: list[_Page] = []
    declared = 0
    at = 0
    while at < len(chunk):
        page, at = _page(chunk, at, snappy)
        if len(pages) >= MAX_PAGES:
            raise _Declined
        pages.append(page)
        declared += page.size
    if declared > meta[META_UNCOMPRESSED][1] or not pages:
        raise _Declined
    return pages


def _page(chunk: Any, at: int, snappy: bool) -> tuple[_Page, int]:
    """Return the page at ``at`` as :data:`_Page`, and where the next one starts."""
    header, after = _header(chunk, at)
    kind, size, stored = (
        header.get(field, (I32, -1))[1] for field in (PAGE_TYPE, PAGE_SIZE, PAGE_COMPRESSED_SIZE)
    )
    data = chunk[at + after : at + after + stored]
    if not (size >= 0 and 0 <= stored == len(data)):
        raise _Declined
    compressed = snappy
    copied = 0  # the bytes before the compressed ones: a V2 page's levels
    if kind == DATA_PAGE_V2:
        v2 = dict(header[PAGE_HEADER_V2][1]) if PAGE_HEADER_V2 in header else {}
        copied = sum(v2.get(field, (I32, 0))[1] for field in (_V2_DEFINITIONS, _V2_REPETITIONS))
        compressed = snappy and v2.get(_V2_IS_COMPRESSED, (TRUE, True))[1]
        v2[_V2_IS_COMPRESSED] = (TRUE, False)
        header[PAGE_HEADER_V2] = (STRUCT, v2)
    elif kind not in (DATA_PAGE, DICTIONARY_PAGE):
        raise _Declined
    if not compressed:
        copied = size  # all of it, as it is
    if not 0 <= copied <= min(size, stored) or (not compressed and stored != size):
        raise _Declined
    header.pop(PAGE_CRC, None)
    header[PAGE_COMPRESSED_SIZE] = (I32, size)
    return _Page(kind, write_struct(header), data, copied, size), at + after + stored


def _header(chunk: Any, at: int) -> tuple[Struct, int]:
    """Decode the page header at ``at``, copying only its likely bytes, then up to the most."""
    for size in (HEADER_BYTES, MAX_HEADER_BYTES):
        try:
            return read_struct(chunk[at : at + size])
        except ThriftInvalid:
            if at + size >= len(chunk):
                break
    raise _Declined


def _inflate(compressed: Any, into: memoryview) -> bool:
    """Inflate raw Snappy into exactly ``into``; False where it is not that many bytes."""
    try:
        return cramjam.snappy.decompress_raw_into(compressed, into) == len(into)
    except cramjam.DecompressionError:
        return False
