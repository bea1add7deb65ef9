"""The column-chunk metadata that makes pyarrow abort the process, refused before pyarrow sees it.

pyarrow (26) checks a chunk's metadata when Python first asks for it
(``metadata.row_group(i).column(j)``), and a failed check there is a C++ exception that Cython
cannot turn into a Python one: the process is killed by SIGABRT. One hostile object must
never kill a worker, so every chunk of the footer is read first (:mod:`.thrift_compact`: the
footer decoded whole where it is small, which the page index reads too, else one chunk decoded
at a time) and refused, as an invalid file, where pyarrow would abort on it:

- size statistics (parquet.thrift ``ColumnMetaData.size_statistics``) whose repetition or
  definition level histogram, where present, does not hold the column's maximum level plus
  one entries, or that count unencoded byte-array bytes for a column not of BYTE_ARRAY
  (Arrow's ``SizeStatistics::Validate``);
- encrypted column metadata (``ColumnChunk.crypto_metadata``), which needs keys the engine
  never has ("Cannot decrypt ColumnMetadata").

A row group whose chunks are not one per schema column is refused too (pyarrow raises an
IndexError for a missing one, and reads chunks by position).

The check runs over the footer pyarrow has parsed, so the schema's levels and types are
pyarrow's. It takes ~0.45 s per MiB of footer (0.37 s for 200 columns x 50 row groups, a
0.9 MiB footer) and a few KiB of memory whatever the size; ``MAX_FOOTER_BYTES`` of
:mod:`.parquet_ranges` (16 MiB, ~7 s) bounds it, and the item's deadline is checked between
chunks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow.parquet as pq

from worker.query import Deadline
from worker.query.local.parquet_one_group import CHUNK_META, FILE_ROW_GROUPS, GROUP_COLUMNS
from worker.query.local.parquet_ranges import ParquetInvalid, undecodable_footer
from worker.query.local.thrift_compact import (
    LIST,
    STRUCT,
    Reader,
    Struct,
    ThriftInvalid,
    ThriftList,
)

# parquet.thrift's field ids (the common ones in :mod:`.parquet_one_group`): ColumnChunk's
# crypto_metadata, ColumnMetaData.size_statistics and SizeStatistics' three fields.
_CHUNK_CRYPTO = 8
_META_SIZES = 16
_SIZES_UNENCODED, _SIZES_REPETITION, _SIZES_DEFINITION = 1, 2, 3


def check_chunks(
    footer: Struct | bytes | memoryview,
    schema: pq.ParquetSchema,
    deadline: Deadline | None = None,
) -> None:
    """Refuse a footer holding a column chunk's metadata that pyarrow would abort on.

    ``footer`` is decoded already (:meth:`.ParquetRanges.decoded_footer`) or its bytes, walked
    a chunk at a time. ``deadline`` is checked between chunks.
    """
    deadline = deadline or Deadline(None)
    leaves = [schema.column(i) for i in range(len(schema))]
    groups = _held_groups(footer) if isinstance(footer, dict) else _walked_groups(Reader(footer))
    try:
        for index, chunks in enumerate(groups):
            count = next(chunks)
            if count != len(leaves):  # pyarrow reads chunks by the schema's leaf positions
                raise ParquetInvalid(
                    f"row group {index} holds {count} column chunks, but the schema has "
                    f"{len(leaves)} columns"
                )
            for leaf, chunk in zip(leaves, chunks, strict=True):
                deadline.check()
                if isinstance(chunk, dict):
                    _check_chunk(chunk, index, leaf)
    except ThriftInvalid as error:
        raise undecodable_footer(error) from None


# Each row group as an iterator: its count of column chunks, then each chunk (a Struct, or
# another value where the footer is damaged).
Chunks = Iterator[Any]


def _held_groups(footer: Struct) -> Iterator[Chunks]:
    kind, groups = footer.get(FILE_ROW_GROUPS, (None, None))
    for group in groups.items if kind == LIST else ():
        if isinstance(group, dict):  # not a row group: pyarrow refused the footer already
            kind, columns = group.get(GROUP_COLUMNS, (None, None))
            chunks = columns.items if kind == LIST else []
            yield iter([len(chunks), *chunks])


def _walked_groups(reader: Reader) -> Iterator[Chunks]:
    for field, kind in reader.fields():
        if field != FILE_ROW_GROUPS or kind != LIST:
            reader.skip(kind, 0)
            continue
        element, groups = reader.list_header()
        for _ in range(groups):
            if element != STRUCT:
                reader.skip(element, 1)
                continue
            for field, kind in reader.fields():
                if field == GROUP_COLUMNS and kind == LIST:
                    yield _walked_chunks(reader)
                else:
                    reader.skip(kind, 2)


def _walked_chunks(reader: Reader) -> Chunks:
    chunk_type, chunks = reader.list_header()
    yield chunks
    for _ in range(chunks):
        yield reader.value(chunk_type, 3)  # one chunk decoded at a time


def _check_chunk(chunk: Struct, index: int, leaf: pq.ColumnSchema) -> None:
    where = f"column {leaf.path} of row group {index}"
    if _CHUNK_CRYPTO in chunk:
        raise ParquetInvalid(
            f"{where} has encrypted metadata, which the local engine cannot decrypt"
        )
    meta = chunk.get(CHUNK_META, (None, None))[1]
    sizes = meta.get(_META_SIZES, (None, None))[1] if isinstance(meta, dict) else None
    if not isinstance(sizes, dict):
        return
    for field, name, level in (
        (_SIZES_REPETITION, "repetition", leaf.max_repetition_level),
        (_SIZES_DEFINITION, "definition", leaf.max_definition_level),
    ):
        histogram = sizes.get(field, (None, None))[1]
        entries = len(histogram.items) if isinstance(histogram, ThriftList) else 0
        if entries and entries != level + 1:  # empty: absent, as a writer may leave it
            raise ParquetInvalid(
                f"{where} has size statistics whose {name} level histogram holds "
                f"{entries} entries, not the {level + 1} its levels need"
            )
    if _SIZES_UNENCODED in sizes and leaf.physical_type != "BYTE_ARRAY":
        raise ParquetInvalid(
            f"{where} has size statistics counting byte-array bytes, but its values are "
            f"{leaf.physical_type}"
        )
