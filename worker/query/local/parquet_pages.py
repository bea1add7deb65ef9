"""Only the pages of a row group that a WHERE can match, through Parquet's page index.

A writer's page index gives, for each column chunk, every page's place and first row (the
OffsetIndex) and every page's min/max (the ColumnIndex). pyarrow writes and checks it but
exposes neither where it lies nor a way to read part of a chunk, so this module reads the
footer and the index itself (:mod:`.thrift_compact`). Where the WHERE's columns' min/max rule
out all but a span of rows, each read column's pages over that span, with the chunk's
dictionary page, are fetched (neighbours merged, the ETag pinned as for every read); each
column's pages become a small Parquet file of their own (the pages as they are, behind a
footer saying so) that pyarrow decodes; and the columns, cut to the span, make one batch.

The index is the file's word, as the footer's statistics are: an index whose places fall
outside the object, or that disagrees with itself or the footer, makes the file invalid (a
permanent failure naming the fault). A file without an index for the chunks a query reads, a
footer too large to hold decoded (:data:`.parquet_ranges.MAX_DECODED_FOOTER_BYTES`), nested
columns, or a span over half the row group take the whole-chunk path.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from worker.query.local.parquet_one_group import (
    CHUNK_META,
    DATA_PAGE,
    DATA_PAGE_V2,
    FILE_ROW_GROUPS,
    GROUP_COLUMNS,
    META_COMPRESSED,
    META_DATA_PAGE,
    META_DICTIONARY_PAGE,
    META_VALUES,
    PAGE_COMPRESSED_SIZE,
    PAGE_HEADER_V1,
    PAGE_HEADER_V2,
    PAGE_TYPE,
    chunk_start,
    kept,
    one_group_footer,
)
from worker.query.local.parquet_ranges import MAGIC, ParquetInvalid, ParquetRanges, merged
from worker.query.local.thrift_compact import (
    BINARY,
    I32,
    I64,
    LIST,
    STRUCT,
    TRUE,
    Struct,
    ThriftInvalid,
    read_struct,
)

# Decoded into Python values, a compact-protocol byte takes up to ~70 bytes of memory (a page's
# location, 7 bytes, becomes a dict of three ints): a chunk's index past this is left to the
# whole-chunk path (~18 MiB decoded at most; typical ones are a few KiB).
MAX_CHUNK_INDEX_BYTES = 256 << 10
# The page index of all the row groups a query may read is fetched at once if within this.
MAX_INDEX_BYTES = 4 << 20
# A span past this share of a row group's rows is read whole (streamed a batch at a time); a
# span within it is fetched and decoded at once (half of 128 MiB uncompressed at most).
MAX_SPAN_SHARE = 0.5
# parquet.thrift's field ids (more in :mod:`.parquet_one_group`).
_CHUNK_OFFSET_INDEX, _CHUNK_COLUMN_INDEX = 4, 6
_META_TYPE = 1
_INT32, _INT64, _FLOAT, _DOUBLE, _BYTE_ARRAY = 1, 2, 4, 5, 6
_PLAIN = {_INT32: "<i", _INT64: "<q", _FLOAT: "<f", _DOUBLE: "<d"}
_UNSIGNED = {_INT32: "<I", _INT64: "<Q"}

Bounds = Callable[[str, Any, Any], bool]  # (column, min, max): may a row in it match?


class PageIndex:
    """The page index of a file's row groups, decoded, and the reads it allows."""

    def __init__(
        self,
        file: ParquetRanges,
        footer: Struct,
        types: dict[int, pa.DataType],
        held: list[tuple[int, bytes]],
    ) -> None:
        """Read pages of ``file``; ``footer`` decoded, ``types`` the leaves', ``held`` the index."""
        self._file = file
        self._footer = footer
        self._types = types
        self._held = held

    @classmethod
    def load(
        cls,
        file: ParquetRanges,
        reader: pq.ParquetFile,
        groups: list[int],
        leaves: list[int],
        of_terms: list[int],
    ) -> PageIndex | None:
        """Fetch the index of ``leaves`` in ``groups`` in one merged read; None: no index.

        Every leaf read needs its offset index, the WHERE's (``of_terms``) their column index
        too. None also where a leaf is nested or the footer or the index is past its limit.
        """
        schema = reader.metadata.schema
        paths = {leaf: schema.column(leaf).path for leaf in leaves}
        flat = all(
            schema.column(leaf).max_repetition_level == 0 and "." not in path
            for leaf, path in paths.items()
        )
        footer = file.decoded_footer()
        if not groups or not flat or footer is None:
            return None
        spans = []
        for index in groups:
            for leaf in leaves:
                chunk = _chunk(footer, index, leaf)
                needed = (_CHUNK_OFFSET_INDEX, _CHUNK_COLUMN_INDEX)[: 2 if leaf in of_terms else 1]
                for field in needed:
                    if field not in chunk:
                        return None
                    start, end = _span(chunk, field, file.data_end, index, leaf)
                    if end - start > MAX_CHUNK_INDEX_BYTES:
                        return None
                    spans.append((start, end))
        if sum(end - start for start, end in merged(spans, gap=0)) > MAX_INDEX_BYTES:
            return None
        types = {leaf: reader.schema_arrow.field(path).type for leaf, path in paths.items()}
        return cls(file, footer, types, file.fetch(spans))

    def span(
        self, index: int, rows: int, leaves: dict[int, str], bounds: Bounds
    ) -> tuple[int, int] | None:
        """Return the rows of row group ``index`` the WHERE can match, ``[first, end)``.

        ``leaves`` are the WHERE's columns (leaf: name); ``bounds`` says whether a page's
        min/max may hold a match. None: the span is too wide to be worth reading by pages.
        """
        first, end = 0, rows
        for leaf, name in leaves.items():
            pages = self._pages(index, leaf, rows)
            kept = [
                page[:2]
                for page, (null, low, high) in zip(
                    pages, self._bounds(index, leaf, len(pages)), strict=True
                )
                if not null and (low is None or high is None or bounds(name, low, high))
            ]  # an all-NULL page matches no comparison
            if not kept:
                return (0, 0)
            first, end = max(first, kept[0][0]), min(end, kept[-1][1])
        if end <= first:
            return (0, 0)
        return (first, end) if end - first <= MAX_SPAN_SHARE * rows else None

    def read(
        self, index: int, rows: int, leaves: dict[int, str], first: int, end: int
    ) -> pa.RecordBatch:
        """Return rows ``[first, end)`` of row group ``index``'s ``leaves`` (leaf: name)."""
        plans = {}
        for leaf in leaves:
            pages = self._pages(index, leaf, rows)
            prefix = self._prefix(index, leaf, pages[0][2])
            plans[leaf] = (prefix, [p for p in pages if p[0] < end and p[1] > first])
        self._file.hold([span for plan in plans.values() for span in _spans(*plan)])
        try:
            columns = [
                self._column(index, leaf, leaves[leaf], prefix, pages, first, end)
                for leaf, (prefix, pages) in plans.items()
            ]
            return pa.RecordBatch.from_arrays(columns, names=list(leaves.values()))
        except (OSError, pa.ArrowException) as error:
            reason = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
            raise ParquetInvalid(
                f"the pages of row group {index} are not readable Parquet: {reason}"
            ) from None
        finally:
            self._file.release()

    def _column(
        self,
        index: int,
        leaf: int,
        name: str,
        prefix: tuple[int, int] | None,
        pages: list[tuple[int, int, int, int]],
        first: int,
        end: int,
    ) -> pa.Array:
        """Return rows ``[first, end)`` of one column, decoded from the pages holding them."""
        one_span = pa.BufferReader(pa.py_buffer(self._one_span(index, leaf, prefix, pages)))
        table = pq.ParquetFile(one_span).read(columns=[name], use_threads=False)
        return table.column(0).combine_chunks().slice(first - pages[0][0], end - first)

    # --- the index, checked ------------------------------------------------------------------

    def _index(self, chunk: Struct, field: int, what: str) -> Struct:
        start, end = chunk[field][1], chunk[field][1] + chunk[field + 1][1]
        for first, body in self._held:
            if first <= start and end <= first + len(body):
                return _decoded(memoryview(body)[start - first : end - first], what)
        raise AssertionError("load() fetched every index span")

    def _pages(self, index: int, leaf: int, rows: int) -> list[tuple[int, int, int, int]]:
        """Return each page's ``(first row, end row, offset, size)``, checked."""
        chunk = _chunk(self._footer, index, leaf)
        where = f"the offset index of column {leaf} in row group {index}"
        locations = _list(self._index(chunk, _CHUNK_OFFSET_INDEX, where), 1, STRUCT, where)
        start, stop = _extent(chunk, index, leaf, self._file.data_end)
        if not locations:
            raise ParquetInvalid(f"{where} lists no pages")
        pages: list[tuple[int, int, int, int]] = []
        for number, location in enumerate(locations):
            offset, size, row = (
                _field(location, i, kind, where) for i, kind in ((1, I64), (2, I32), (3, I64))
            )
            after = pages[-1][2] + pages[-1][3] if pages else start
            if not (after <= offset and size > 0 and offset + size <= stop):
                raise ParquetInvalid(
                    f"{where} places page {number} at bytes {offset}-{offset + size}, outside "
                    f"the chunk's {start}-{stop} or over the page before"
                )
            if not (pages[-1][0] < row < rows if pages else row == 0):
                raise ParquetInvalid(
                    f"{where} starts page {number} at row {row}, out of order or past the row "
                    f"group's {rows} rows"
                )
            pages.append((row, rows, offset, size))
        ends = [page[0] for page in pages[1:]] + [rows]
        return [
            (row, stop, offset, size)
            for (row, _, offset, size), stop in zip(pages, ends, strict=True)
        ]

    def _bounds(self, index: int, leaf: int, count: int) -> list[tuple[bool, Any, Any]]:
        """Return each page's ``(all NULL, min, max)``, min or max None where unknown."""
        chunk = _chunk(self._footer, index, leaf)
        where = f"the column index of column {leaf} in row group {index}"
        column_index = self._index(chunk, _CHUNK_COLUMN_INDEX, where)
        nulls = _list(column_index, 1, TRUE, where)
        lows, highs = (_list(column_index, i, BINARY, where) for i in (2, 3))
        if not len(nulls) == len(lows) == len(highs) == count:
            raise ParquetInvalid(f"{where} describes {len(lows)} pages, its offset index {count}")
        physical = _field(_field(chunk, CHUNK_META, STRUCT, where), _META_TYPE, I32, where)
        decode = _decoder(physical, self._types[leaf])
        return [
            (null, decode(low), decode(high))
            for null, low, high in zip(nulls, lows, highs, strict=True)
        ]

    def _prefix(self, index: int, leaf: int, first_page: int) -> tuple[int, int] | None:
        """Return what precedes the chunk's first data page (its dictionary page), if any."""
        start = _extent(_chunk(self._footer, index, leaf), index, leaf, self._file.data_end)[0]
        return (start, first_page - start) if start < first_page else None

    def _one_span(
        self,
        index: int,
        leaf: int,
        prefix: tuple[int, int] | None,
        pages: list[tuple[int, int, int, int]],
    ) -> bytearray:
        """Return a Parquet file of one row group: ``pages`` of ``leaf``, its dictionary first.

        The pages are copied as they are; the footer is the file's, with one row group whose
        rows, values and offsets are the pages'. The other columns keep their chunks'
        metadata (pyarrow reads only the column asked for).
        """
        body = bytearray(MAGIC)
        meta = kept(_chunk(self._footer, index, leaf)[CHUNK_META][1])
        if prefix is not None:
            meta[META_DICTIONARY_PAGE] = (I64, len(body))
            body += self._file.view(*prefix)
        meta[META_DATA_PAGE] = (I64, len(body))
        for first, end, offset, size in pages:
            page = self._file.view(offset, size)
            _check_page(page, end - first, f"the page at byte {offset} of column {leaf}")
            body += page
        rows = pages[-1][1] - pages[0][0]
        meta[META_VALUES] = (I64, rows)  # a flat column holds one value a row, NULL or not
        meta[META_COMPRESSED] = (I64, len(body) - len(MAGIC))
        body += one_group_footer(self._footer, index, {leaf: meta}, rows, len(body))
        return body


def _check_page(page: Any, rows: int, where: str) -> None:
    """Refuse a page whose header disagrees with the offset index.

    It must be a data page of ``rows`` rows (a flat column's value count) filling its place.
    Pages decoded out of their chunk would otherwise take the index's word for which rows
    they hold, and a column's rows could shift against the others'.
    """
    try:
        header, length = read_struct(page)
    except ThriftInvalid as error:
        raise ParquetInvalid(f"{where} has no valid page header: {error}") from None
    version = {DATA_PAGE: PAGE_HEADER_V1, DATA_PAGE_V2: PAGE_HEADER_V2}.get(
        header.get(PAGE_TYPE, (I32, -1))[1]
    )
    kind, data = header.get(version or 0, (None, None))
    values = data.get(1, (I32, None))[1] if kind == STRUCT else None
    compressed = header.get(PAGE_COMPRESSED_SIZE, (I32, None))[1]
    if version is None or values != rows or compressed != len(page) - length:
        raise ParquetInvalid(
            f"{where} is not a data page of {rows} rows filling its {len(page)} bytes, as the "
            f"offset index says"
        )


def _decoded(data: bytes | memoryview, what: str) -> Struct:
    try:
        return read_struct(data)[0]
    except ThriftInvalid as error:
        raise ParquetInvalid(f"{what} is not valid Thrift: {error}") from None


def _field(fields: Struct, field: int, kind: int, where: str) -> Any:
    """Return a field that must be there, of its type."""
    if not isinstance(fields, dict) or fields.get(field, (None,))[0] != kind:
        raise ParquetInvalid(f"{where} lacks field {field} or has it of another type")
    return fields[field][1]


def _list(fields: Struct, field: int, element: int, where: str) -> list[Any]:
    values = _field(fields, field, LIST, where)
    if values.items and values.element_type != element:
        raise ParquetInvalid(f"{where} holds field {field} of another type")
    return values.items


def _chunk(footer: Struct, index: int, leaf: int) -> Struct:
    where = f"the footer's row group {index}"
    groups = _field(footer, FILE_ROW_GROUPS, LIST, "the footer").items
    columns = _field(groups[index], GROUP_COLUMNS, LIST, where).items
    if leaf >= len(columns) or not isinstance(columns[leaf], dict):
        raise ParquetInvalid(f"{where} lacks column {leaf}")
    return columns[leaf]


def _span(chunk: Struct, field: int, data_end: int, index: int, leaf: int) -> tuple[int, int]:
    """Return the bytes of a chunk's offset or column index, checked to lie in the data."""
    where = f"column {leaf} of row group {index}"
    start = _field(chunk, field, I64, where)
    size = _field(chunk, field + 1, I32, where)
    if not (len(MAGIC) <= start and size > 0 and start + size <= data_end):
        raise ParquetInvalid(
            f"{where} places its page index at bytes {start}-{start + size}, outside the "
            f"object's data (0-{data_end})"
        )
    return (start, start + size)


def _extent(chunk: Struct, index: int, leaf: int, data_end: int) -> tuple[int, int]:
    """Return the chunk's bytes ``[start, end)`` as its metadata gives them, checked."""
    where = f"column {leaf} of row group {index}"
    meta = _field(chunk, CHUNK_META, STRUCT, where)
    _field(meta, META_DATA_PAGE, I64, where)
    start = chunk_start(meta)
    end = start + _field(meta, META_COMPRESSED, I64, where)
    if not len(MAGIC) <= start < end <= data_end:
        raise ParquetInvalid(
            f"{where} claims bytes {start}-{end}, outside the object's data (0-{data_end})"
        )
    return start, end


def _spans(
    dictionary: tuple[int, int] | None, pages: list[tuple[int, int, int, int]]
) -> Iterator[tuple[int, int]]:
    if dictionary is not None:
        yield (dictionary[0], dictionary[0] + dictionary[1])
    for _, _, offset, size in pages:
        yield (offset, offset + size)


def _decoder(physical: int, data_type: pa.DataType) -> Callable[[bytes], Any]:
    """Return how a page's min or max, plain-encoded, becomes a Python value (None: unknown)."""
    if physical == _BYTE_ARRAY and pa.types.is_string(data_type):

        def text(value: bytes) -> Any:
            try:
                return value.decode()
            except UnicodeDecodeError:
                return None  # a truncated bound: the page is read

        return text
    unsigned = pa.types.is_unsigned_integer(data_type)
    layout = (_UNSIGNED if unsigned else _PLAIN).get(physical)
    if layout is None:
        return lambda value: None

    def number(value: bytes) -> Any:
        if len(value) != struct.calcsize(layout):
            return None
        decoded = struct.unpack(layout, value)[0]
        return None if isinstance(decoded, float) and math.isnan(decoded) else decoded

    return number
