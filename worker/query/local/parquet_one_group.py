"""A Parquet file of one row group whose chunks were rewritten, for pyarrow to read.

pyarrow reads only whole files: to decode pages chosen by the page index
(:mod:`.parquet_pages`) or chunks inflated outside it (:mod:`.parquet_inflate`), the engine
lays the rewritten chunks out after the magic bytes and ends them with this footer: the
object's own (schema, key-value metadata with the Arrow schema, ``created_by``, which pyarrow
reads for writers' known faults), with one row group that holds the rewritten chunks' metadata.
The columns not read stand as chunks of no values and no bytes (pyarrow never reads them), the
same in every row group, so the footer is small and mostly encoded once.
"""

from __future__ import annotations

import functools
from typing import Any

from worker.query.local.parquet_ranges import MAGIC
from worker.query.local.thrift_compact import I64, LIST, STRUCT, Struct, ThriftList, write_struct

# parquet.thrift's field ids.
FILE_NUM_ROWS, FILE_ROW_GROUPS = 3, 4
GROUP_COLUMNS, GROUP_BYTES, GROUP_ROWS = 1, 2, 3
CHUNK_FILE_OFFSET, CHUNK_META = 2, 3
META_CODEC, META_VALUES, META_UNCOMPRESSED, META_COMPRESSED = 4, 5, 6, 7
META_DATA_PAGE, META_DICTIONARY_PAGE, META_ENCODING_STATS = 9, 11, 13
# PageEncodingStats: a page type, an encoding, and how many pages; the dictionary encodings.
STATS_PAGE_TYPE, STATS_ENCODING = 1, 2
DICTIONARY_ENCODINGS = (2, 8)  # PLAIN_DICTIONARY, RLE_DICTIONARY
# PageHeader: its type, sizes and CRC, and the data pages' own headers (V1, V2); the types.
PAGE_TYPE, PAGE_SIZE, PAGE_COMPRESSED_SIZE, PAGE_CRC = 1, 2, 3, 4
PAGE_HEADER_V1, PAGE_HEADER_V2 = 5, 8
DATA_PAGE, DICTIONARY_PAGE, DATA_PAGE_V2 = 0, 2, 3
# What a rewritten chunk's ColumnMetaData keeps: type, encodings, path, codec, sizes, key-value
# metadata, encoding stats (statistics, page index and bloom filter describe the old chunk).
_META_KEPT = (1, 2, 3, 4, 5, 6, 7, 8, META_ENCODING_STATS)
_FILE_KEPT = (1, 2, 5, 6, 7)  # version, schema, key-value metadata, created_by, column orders
# A column not read keeps only what says what it is: type, encodings, path, codec.
_META_SHAPE = (1, 2, 3, 4)
# ColumnMetaData's other required fields, for a chunk never read: no values, no bytes, its
# first page just past the magic.
_NEVER_READ = {5: (I64, 0), 6: (I64, 0), 7: (I64, 0), 9: (I64, len(MAGIC))}


def chunk_start(meta: Struct) -> int:
    """Return where a chunk's ColumnMetaData says it starts: its dictionary page, if first."""
    start = meta[META_DATA_PAGE][1]
    dictionary = meta.get(META_DICTIONARY_PAGE, (I64, 0))[1]
    return dictionary if 0 < dictionary < start else start


def kept(meta: Struct) -> Struct:
    """Return the fields of a chunk's ColumnMetaData that still hold once it is rewritten."""
    return {field: meta[field] for field in _META_KEPT if field in meta}


def _unread(meta: Struct) -> bytes:
    """Return a ColumnChunk that stands for a chunk pyarrow is not asked to read, encoded.

    It is the same in every row group, so it is encoded once per kind of column: with each
    chunk's own metadata, a footer of 20 columns took 0.4 ms to encode, most of a one-group
    file's cost.
    """
    shape = tuple(
        (field, kind, (value.element_type, tuple(value.items)) if kind == LIST else value)
        for field, (kind, value) in sorted(meta.items())
        if field in _META_SHAPE
    )
    try:
        return _encoded_unread(shape)
    except TypeError:  # a value that cannot be a key (a hostile footer's): encoded each time
        return _encoded_unread.__wrapped__(shape)


@functools.lru_cache(maxsize=4096)
def _encoded_unread(shape: tuple[tuple[int, int, Any], ...]) -> bytes:
    meta: Struct = dict(_NEVER_READ)
    for field, kind, value in shape:
        meta[field] = (kind, ThriftList(value[0], list(value[1])) if kind == LIST else value)
    return write_struct({CHUNK_FILE_OFFSET: (I64, len(MAGIC)), CHUNK_META: (STRUCT, meta)})


def one_group_footer(
    footer: Struct, index: int, chunks: dict[int, Struct], rows: int, body_bytes: int
) -> bytes:
    """Return the footer, its length and the magic that end a file of one row group.

    ``footer`` is the object's, decoded; ``index`` the row group; ``chunks`` each rewritten
    leaf's ColumnMetaData (offsets within the new file); ``rows`` the new row group's rows;
    ``body_bytes`` what precedes the footer. The decoded footer's shape was checked by
    :func:`.parquet_chunk_check.check_chunks` and pyarrow before any chunk is read.
    """
    group = footer[FILE_ROW_GROUPS][1].items[index]
    columns: list[Struct | bytes] = [
        _unread(chunk.get(CHUNK_META, (STRUCT, {}))[1]) for chunk in group[GROUP_COLUMNS][1].items
    ]
    for leaf, meta in chunks.items():
        columns[leaf] = {CHUNK_FILE_OFFSET: (I64, chunk_start(meta)), CHUNK_META: (STRUCT, meta)}
    one_group = {
        GROUP_COLUMNS: (LIST, ThriftList(STRUCT, columns)),
        GROUP_BYTES: (I64, body_bytes),
        GROUP_ROWS: (I64, rows),
    }
    kept_footer = {field: footer[field] for field in _FILE_KEPT if field in footer}
    kept_footer[FILE_NUM_ROWS] = (I64, rows)
    kept_footer[FILE_ROW_GROUPS] = (LIST, ThriftList(STRUCT, [one_group]))
    encoded = write_struct(kept_footer)
    return encoded + len(encoded).to_bytes(4, "little") + MAGIC
