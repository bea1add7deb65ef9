"""Parquet sources: S3 Select's semantics over only the bytes the query needs.

The footer is read and checked first (:mod:`.parquet_ranges`); ``COUNT(*)`` alone is then the
row groups' counts. Otherwise each column chunk's metadata that pyarrow would abort on is
refused (:mod:`.parquet_chunk_check`) before any is asked for; the query's columns are
resolved against the schema (names as S3 Select matches them, ``_N`` by position); row groups
whose min/max statistics rule out the WHERE clause are skipped; each remaining row group is
checked against the limits and fetched alone (only the columns read, neighbours merged), and
pyarrow decodes it a batch at a time. A WHERE made only of comparisons between a column and a
literal of its own kind is applied to each batch as an Arrow mask; the rows left become Python
values and run through the evaluator and serialiser that every other format uses, so the SQL
subset, NULL logic, errors and output are theirs. ``LIMIT`` stops the fetching, and the item's
deadline is checked between batches.

Values keep the schema's types: integers, floats, decimals, booleans, text and NULL as such;
dates, times and timestamps as ISO 8601 text (``2018-01-01``, ``2018-01-01T00:21:05.000``,
with ``Z`` when the schema says UTC); structs and lists as JSON objects and arrays, which only
JSON output may hold (S3 Select's rule). Types S3 Select does not list (binary, INT96
timestamps, maps, durations) are refused when a query reads them.

Importing this module loads pyarrow: import it only to read Parquet.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from worker.query import Deadline, QueryLimitExceeded, QueryRequest, QueryUnsupported
from worker.query.local import parquet_vector as vector
from worker.query.local import sql
from worker.query.local.caps import (
    DECOMPRESSION_RATIO,
    MAX_RECORD_CHARS,
    over_max_record_size,
)
from worker.query.local.evaluator import evaluate
from worker.query.local.fast import COMPARISON_KERNELS
from worker.query.local.fastplan import Declined, literal_value
from worker.query.local.parquet_chunk_check import check_chunks
from worker.query.local.parquet_inflate import inflated
from worker.query.local.parquet_one_group import (
    CHUNK_META,
    DATA_PAGE,
    DATA_PAGE_V2,
    DICTIONARY_ENCODINGS,
    FILE_ROW_GROUPS,
    GROUP_COLUMNS,
    META_DATA_PAGE,
    META_ENCODING_STATS,
    STATS_ENCODING,
    STATS_PAGE_TYPE,
    chunk_start,
)
from worker.query.local.parquet_pages import PageIndex
from worker.query.local.parquet_ranges import ParquetInvalid, ParquetRanges
from worker.query.local.reader import RangedObject, Records
from worker.query.local.serialise import serialise
from worker.query.local.thrift_compact import I32, Struct, ThriftList

# S3 Select refuses row groups over 256 MB uncompressed; so does the local engine.
MAX_ROW_GROUP_BYTES = 256 << 20
# What one row group's columns read may take uncompressed: within the fast path's 256 MiB
# process budget (pyarrow, the fetched chunks, one decoded page per column, one batch).
MAX_READ_BYTES = 128 << 20
# A column chunk inflating more than DECOMPRESSION_RATIO x is refused as a bomb once it claims
# more than this (small chunks compress oddly, and are harmless).
BOMB_FLOOR_BYTES = 1 << 20
# Values per batch: its Python rows (~80 bytes a value) stay near 10 MiB whatever the width.
BATCH_VALUES = 1 << 17
# Values per batch folded whole (no Python row made): ~8 MiB of numbers, and fewer batches
# (each costs ~0.1 ms of calls: a tenth of a 2-column scan's time at BATCH_VALUES).
FOLD_BATCH_VALUES = 1 << 18
# A fold's text is read as its dictionary only where the dictionary page, as stored, is within
# this: writers cap it at 1 MiB by default (Arrow, parquet-mr), and past it few rows share each
# entry, so each batch's MIN / MAX over the entries it uses costs more than over its strings
# (a 6.5 MB page of 200 000 entries of 100 bytes: 489 ms of CPU, against 245 as text).
MAX_DICTIONARY_PAGE_BYTES = 1 << 20
_FLIPPED = {"=": "=", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


@dataclasses.dataclass(frozen=True)
class _Term:
    """``column op literal``, the column of the literal's kind: a mask and a statistics test."""

    column: str
    op: str
    value: Any


def chunks(
    source: RangedObject, plan: sql.Plan, request: QueryRequest, vectorised: bool = True
) -> Iterator[str]:
    """Yield "" once the footer is read and checked, then the serialised rows.

    ``vectorised`` False runs every query through the evaluator (:mod:`.parquet_vector` is
    the other way, for the queries it can run exactly).
    """
    deadline = Deadline(request.deadline)
    file = ParquetRanges(source)
    file.open()
    reader = _open(file)
    _check_row_counts(reader.metadata)
    if _counts_only(plan):  # the row groups' counts answer it: no chunk nor its metadata read
        yield ""
        rows = reader.metadata.num_rows
        names = [p.name for p in plan.projections or ()]
        yield from serialise([(names, [rows] * len(names))], request.rows_format)
        return
    yield ""
    schema = reader.schema_arrow
    plan, read = _resolved(plan, schema)
    if request.rows_format == "csv":
        _refuse_nested_csv(plan, schema, read)
    _check_types(read, schema, reader.metadata.schema)
    terms = _terms(plan.where, schema)
    # Before any chunk's metadata is asked for. The page index and the inflated chunks read the
    # footer decoded (up to MAX_DECODED_FOOTER_BYTES); a larger one is walked.
    footer = file.decoded_footer() or file.footer()
    check_chunks(footer, reader.metadata.schema, deadline)
    _check_column_counts(reader.metadata)
    groups = [
        i
        for i in range(reader.metadata.num_row_groups)
        if reader.metadata.row_group(i).num_rows and _may_match(reader, i, terms)
    ]  # an empty row group has no chunks to read (pyarrow writes one for an empty table)
    # Whole batches only where WHERE is absent or a mask: the rows kept are then the evaluator's.
    whole_batches = vectorised and (plan.where is None or terms is not None)
    # Whole batches need, once the mask has kept their rows, only the columns the output reads:
    # one only the WHERE reads is dropped before the filter would copy it.
    shown = _resolved(dataclasses.replace(plan, where=None), schema)[1]
    fold = vector.folds(plan, schema) if whole_batches else None
    if fold is not None:
        try:
            batches = _batches(
                reader,
                file,
                groups,
                read,
                terms or [],
                deadline,
                shown,
                batch_values=FOLD_BATCH_VALUES,
                fold=True,
            )
            yield from vector.aggregate(plan, fold, batches, request.rows_format)
            return
        except Declined:
            pass  # nothing was output: the evaluator runs it from the start
    plain = vector.row_columns(plan, schema, read) if whole_batches else None
    if plain is not None:
        batches = _batches(reader, file, groups, read, terms or [], deadline, shown)
        yield from vector.rows(plan, plain, batches, request.rows_format)
        return
    batches = _batches(reader, file, groups, read, terms or [], deadline)  # the WHERE's too
    records = Records("JSON", None, _rows(batches))
    yield from serialise(evaluate(plan, records, deadline), request.rows_format)


def _open(file: ParquetRanges) -> pq.ParquetFile:
    """Parse the footer with pyarrow (one read, served from the fetched tail)."""
    try:
        return pq.ParquetFile(file, pre_buffer=False, buffer_size=0)
    except (OSError, pa.ArrowException, UnicodeDecodeError) as error:  # a name not UTF-8
        raise _invalid(error) from None


def _invalid(error: Exception) -> ParquetInvalid:
    reason = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
    return ParquetInvalid(f"the object is not a readable Parquet file: {reason}")


def _check_row_counts(metadata: pq.FileMetaData) -> None:
    """Refuse a file whose row count is not its row groups' (no chunk metadata is touched)."""
    claimed = sum(metadata.row_group(i).num_rows for i in range(metadata.num_row_groups))
    if claimed != metadata.num_rows:
        raise ParquetInvalid(
            f"the footer claims {metadata.num_rows} rows but its row groups hold {claimed}"
        )


def _check_column_counts(metadata: pq.FileMetaData) -> None:
    """Refuse a flat column whose value count is not its row group's row count."""
    flat = [
        i
        for i in range(metadata.num_columns)
        if metadata.schema.column(i).max_repetition_level == 0
    ]
    for index in range(metadata.num_row_groups):
        group = metadata.row_group(index)
        for column in flat:
            values = group.column(column).num_values
            if values != group.num_rows:
                raise ParquetInvalid(
                    f"row group {index} claims {group.num_rows} rows but its column "
                    f"{metadata.schema.column(column).path} holds {values} values"
                )


# --- the query against the schema ----------------------------------------------------------


def _resolved(plan: sql.Plan, schema: pa.Schema) -> tuple[sql.Plan, list[str]]:
    """Return the plan with its columns naming schema fields exactly, and the fields read.

    The fields are in schema order; ``SELECT *`` reads them all.
    """
    names = schema.names
    read: set[str] = set(names) if plan.projections is None else set()

    def resolve(node: Any) -> Any:
        if isinstance(node, sql.Column) and node.path and isinstance(node.path[0], tuple):
            name = _field_name(names, *node.path[0])
            read.add(name)
            return sql.Column(((name, True), *node.path[1:]))
        if isinstance(node, tuple):
            return tuple(resolve(item) for item in node)
        if dataclasses.is_dataclass(node) and not isinstance(node, type):
            changes = {f.name: resolve(getattr(node, f.name)) for f in dataclasses.fields(node)}
            return dataclasses.replace(node, **changes)
        return node

    resolved = resolve(plan)
    return resolved, [name for name in names if name in read]


def _field_name(names: list[str], name: str, quoted: bool) -> str:
    """Return the schema field a column name refers to, as S3 Select matches names.

    None: QueryUnsupported naming the schema's fields (the schema is fixed: no retry helps).
    """
    matches = [n for n in names if (n == name if quoted else n.lower() == name.lower())]
    if len(matches) > 1:
        raise QueryUnsupported(f"column {name!r} is ambiguous: the schema has it in two cases")
    if matches:
        return matches[0]
    if name.startswith("_") and name[1:].isdigit() and 1 <= int(name[1:]) <= len(names):
        return names[int(name[1:]) - 1]
    shown = ", ".join(names)
    shown = shown if len(shown) <= 200 else f"{shown[:197]}..."
    raise QueryUnsupported(f"column {name!r} is not in the Parquet schema ({shown})")


def _is_nested(data_type: pa.DataType) -> bool:
    return pa.types.is_nested(data_type)


def _refuse_nested_csv(plan: sql.Plan, schema: pa.Schema, read: list[str]) -> None:
    """CSV output of a nested column, whole, is refused (S3 Select: nested data only as JSON)."""
    if plan.projections is None:
        whole = [name for name in read if _is_nested(schema.field(name).type)]
    else:
        whole = [
            p.expr.path[0][0]
            for p in plan.projections
            if isinstance(p.expr, sql.Column)
            and len(p.expr.path) == 1
            and _is_nested(schema.field(p.expr.path[0][0]).type)
        ]
    if whole:
        raise QueryUnsupported(
            f"the nested column {whole[0]!r} can only be output as JSON (S3 Select's rule); "
            f"use ROWS_FORMAT json or select its simple fields"
        )


def _check_types(read: list[str], schema: pa.Schema, parquet_schema: pq.ParquetSchema) -> None:
    """Refuse the types S3 Select does not read: binary, INT96, maps, durations, intervals."""
    physical = {
        parquet_schema.column(i).path.split(".")[0]: parquet_schema.column(i).physical_type
        for i in range(len(parquet_schema))
    }
    for name in read:
        problem = _unsupported(schema.field(name).type)
        if physical.get(name) == "INT96":
            problem = "INT96 timestamps"
        if problem:
            raise QueryUnsupported(
                f"column {name!r} holds {problem}, which S3 Select does not read from Parquet"
            )


def _unsupported(data_type: pa.DataType) -> str | None:
    if pa.types.is_map(data_type):
        return "a map"
    if pa.types.is_binary(data_type) or pa.types.is_large_binary(data_type):
        return "binary values"
    if pa.types.is_fixed_size_binary(data_type) and not pa.types.is_decimal(data_type):
        return "fixed-size binary values"
    if pa.types.is_duration(data_type) or pa.types.is_interval(data_type):
        return "durations"
    if pa.types.is_nested(data_type):
        children = (
            [data_type.field(i).type for i in range(data_type.num_fields)]
            if pa.types.is_struct(data_type)
            else [data_type.value_type]
        )
        for child in children:
            if pa.types.is_temporal(child) or _unsupported(child):
                return "dates, times or binary values inside a nested column"
    return None


def _counts_only(plan: sql.Plan) -> bool:
    """``COUNT(*)`` alone, no WHERE: the row groups' row counts answer it."""
    return (
        plan.where is None
        and plan.limit != 0
        and bool(plan.projections)
        and all(
            isinstance(p.expr, sql.Aggregate) and p.expr.operand is None
            for p in plan.projections or ()
        )
    )


# --- WHERE on whole batches and row groups ------------------------------------------------


def _terms(where: sql.Expr | None, schema: pa.Schema) -> list[_Term] | None:
    """Return WHERE as comparisons of a column with a literal of its kind, if it is only that.

    Such a condition never raises on any row, so applying it as a mask, or skipping a row
    group where it cannot hold, leaves exactly the rows the evaluator keeps.
    """
    if where is None:
        return None
    operands = where.operands if isinstance(where, sql.Logical) and where.op == "AND" else (where,)
    # BETWEEN is its two comparisons joined by AND, NULL logic and all (the evaluator's).
    compares = [
        compare
        for operand in operands
        for compare in (
            (
                sql.Compare(">=", operand.operand, operand.low),
                sql.Compare("<=", operand.operand, operand.high),
            )
            if isinstance(operand, sql.Between)
            else (operand,)
        )
    ]
    terms = []
    for operand in compares:
        term = _term(operand, schema)
        if term is None:
            return None
        terms.append(term)
    return terms


def _term(node: sql.Expr, schema: pa.Schema) -> _Term | None:
    if not isinstance(node, sql.Compare):
        return None
    column, other, op = node.left, node.right, node.op
    if not isinstance(column, sql.Column):
        column, other, op = node.right, node.left, _FLIPPED[node.op]
    if not isinstance(column, sql.Column) or len(column.path) != 1:
        return None
    name = column.path[0][0]
    try:
        value = literal_value(other)
    except Declined:
        return None
    data_type = schema.field(name).type
    same_kind = (
        (isinstance(value, str) and pa.types.is_string(data_type))
        or (type(value) is int and pa.types.is_integer(data_type))
        or (not isinstance(value, str) and pa.types.is_floating(data_type))
    )
    return _Term(name, op, value) if same_kind else None


def _may_match(reader: pq.ParquetFile, index: int, terms: list[_Term] | None) -> bool:
    """Return False where a row group's min/max statistics rule out one of the terms."""
    if not terms:
        return True
    group = reader.metadata.row_group(index)
    # The schema's leaves, not each chunk's own path_in_schema: a damaged footer's may not
    # decode, or name another column (pyarrow reads the chunks by position).
    schema = reader.metadata.schema
    positions = {schema.column(i).path: i for i in range(group.num_columns)}
    for term in terms:
        stats = group.column(positions[term.column]).statistics
        if stats is None or not stats.has_min_max:
            continue
        if not _within(term, stats.min, stats.max):
            return False
    return True


def _within(term: _Term, low: Any, high: Any) -> bool:
    """Return whether values between ``low`` and ``high`` may satisfy ``term``.

    The bounds are a row group's or a page's; True where they cannot tell (``!=``, NaN).
    """
    if term.op == "!=" or any(isinstance(v, float) and math.isnan(v) for v in (low, high)):
        return True
    value = term.value
    return {
        "=": low <= value <= high,
        "<": low < value,
        "<=": low <= value,
        ">": high > value,
        ">=": high >= value,
    }[term.op]


def _kept(batch: pa.RecordBatch, terms: list[_Term]) -> pa.Array:
    """Return where every term holds (NULL where a value is NULL)."""
    keep = None
    for term in terms:
        test = COMPARISON_KERNELS[term.op](batch.column(term.column), pa.scalar(term.value))
        keep = test if keep is None else pc.and_kleene(keep, test)
    return keep


def _rows_to_read(
    reader: pq.ParquetFile, index: int, leaves: list[int], terms: list[_Term]
) -> int | None:
    """Return how many of a row group's rows to read for the rows the terms keep; None: all.

    Where the WHERE's columns are at most a quarter of the columns read, they are decoded on
    their own first (decoding them twice costs less than it may save): the rows past the last
    one kept (a range of a sorted column, say) are then never decoded in the other columns,
    and a row group with no row kept reads nothing more.
    """
    names = {term.column for term in terms}
    of_terms = [leaf for leaf in leaves if _top_name(reader.metadata, leaf) in names]
    if 4 * len(of_terms) > len(leaves):
        return None
    seen = rows = 0
    for batch in reader.iter_batches(
        batch_size=BATCH_VALUES, row_groups=[index], columns=sorted(names), use_threads=False
    ):
        kept = pc.indices_nonzero(pc.fill_null(_kept(batch, terms), False))
        if len(kept):
            rows = seen + kept[-1].as_py() + 1
        seen += batch.num_rows
    return rows


def _top_name(metadata: pq.FileMetaData, leaf: int) -> str:
    return metadata.schema.column(leaf).path.split(".")[0]


# --- reading -------------------------------------------------------------------------------


def _batches(
    reader: pq.ParquetFile,
    file: ParquetRanges,
    groups: list[int],
    read: list[str],
    terms: list[_Term],
    deadline: Deadline,
    shown: list[str] | None = None,
    batch_values: int = BATCH_VALUES,
    fold: bool = False,
) -> Iterator[pa.RecordBatch]:
    """Yield ``shown`` (default: all ``read``) of ``groups``' rows the terms keep, by batches.

    A row group is fetched at a time, only its ``read`` columns. For a ``fold``, which reads
    every row and spends most of its time decoding, its Snappy chunks are inflated whole first,
    and its text columns that no term reads come as dictionary arrays where every page uses
    the dictionary (:func:`_group_reader`; WHERE + SUM in the bench: 153 ms, not 179). Rows
    output spends its time writing lines (``SELECT *``: no faster inflated, 48 MiB more held),
    and a ``LIMIT`` stops part way into a row group (inflating it whole took 91 ms, not 64).

    Where the file has a page index and the terms rule out all but a few of a row group's
    pages, only those pages are read (:mod:`.parquet_pages`); otherwise whole chunks.
    """
    metadata = reader.metadata
    leaves = [i for i in range(metadata.num_columns) if _top_name(metadata, i) in read]
    batch_size = max(1, batch_values // max(1, len(leaves)))
    named = {leaf: _top_name(metadata, leaf) for leaf in leaves}
    of_terms = {leaf: name for leaf, name in named.items() if name in {t.column for t in terms}}
    texts = {
        leaf: name
        for leaf, name in named.items()
        if fold
        and leaf not in of_terms
        and vector.kind(reader.schema_arrow.field(name).type) == "text"
    }
    pages = PageIndex.load(file, reader, groups, leaves, list(of_terms)) if terms else None

    def within(column: str, low: Any, high: Any) -> bool:
        return all(_within(term, low, high) for term in terms if term.column == column)

    for index in groups:
        spans = _spans(metadata, index, leaves, file.data_end)  # the limits, read by pages too
        rows = metadata.row_group(index).num_rows
        span = pages.span(index, rows, of_terms, within) if pages else None
        if span is not None:
            batch = pages.read(index, rows, named, *span) if span[1] > span[0] else None
            for start in range(0, batch.num_rows if batch else 0, batch_size):
                yield _checked(batch.slice(start, batch_size), terms, deadline, shown)
            continue
        file.hold(spans)
        try:
            source, group = (
                _group_reader(reader, file, index, leaves, texts) if fold else (reader, index)
            )
            wanted = _rows_to_read(source, group, leaves, terms) if terms else None
            batches = (
                source.iter_batches(
                    batch_size=batch_size, row_groups=[group], columns=read, use_threads=False
                )
                if wanted != 0
                else iter(())
            )
            for batch in batches:
                yield _checked(batch, terms, deadline, shown)
                wanted = None if wanted is None else wanted - batch.num_rows
                if wanted is not None and wanted <= 0:
                    break  # the rest of the row group holds no row the WHERE keeps
        except (OSError, pa.ArrowException) as error:
            raise _invalid(error) from None
        finally:
            file.release()


def _group_reader(
    reader: pq.ParquetFile,
    file: ParquetRanges,
    index: int,
    leaves: list[int],
    texts: dict[int, str],
) -> tuple[pq.ParquetFile, int]:
    """Return a fold's reader of row group ``index``'s fetched chunks, and the group's index.

    It reads as dictionary arrays those of ``texts`` (leaf: name) whose pages all use their
    dictionary. Where :mod:`.parquet_inflate` inflates the chunks, it reads that copy (alone:
    the fetched chunks are dropped) as row group 0; otherwise the chunks as they are, through
    the file's metadata (parsed once). Without the decoded footer, the file's reader.
    """
    footer = file.decoded_footer()
    if footer is None:
        return reader, index
    chunks = footer[FILE_ROW_GROUPS][1].items[index][GROUP_COLUMNS][1].items
    dictionaries = [
        name for leaf, name in texts.items() if _dictionary_encoded(chunks[leaf][CHUNK_META][1])
    ]
    body = inflated(footer, index, leaves, file.view)
    if body is None:
        if not dictionaries:
            return reader, index
        dictionary_reader = pq.ParquetFile(
            file,
            metadata=reader.metadata,
            read_dictionary=dictionaries,
            pre_buffer=False,
            buffer_size=0,
        )
        return dictionary_reader, index
    file.release()
    copy = pa.BufferReader(body)
    return pq.ParquetFile(
        copy, pre_buffer=False, buffer_size=0, read_dictionary=dictionaries or None
    ), 0


def _dictionary_encoded(meta: Struct) -> bool:
    """Return whether all a chunk's data pages use a dictionary worth reading as such.

    That is, its encoding stats say so, and its dictionary page takes at most
    :data:`MAX_DICTIONARY_PAGE_BYTES`. Such a text column read as a dictionary array costs its
    dictionary's strings once, not every row's: ``MAX`` of the bench's 6.1 million
    11-character values took 38 ms of CPU against 180. A chunk that fell back to plain pages
    is not: pyarrow would hash every value into a dictionary (2 million distinct values:
    530-1070 ms against 71-93). Stats or offsets that lie cost time, never a wrong answer:
    pyarrow decodes the pages as their headers say.
    """
    stats = meta.get(META_ENCODING_STATS, (None, None))[1]
    stored = meta[META_DATA_PAGE][1] - chunk_start(meta)  # 0 without a dictionary page first
    if not isinstance(stats, ThriftList) or not 0 < stored <= MAX_DICTIONARY_PAGE_BYTES:
        return False
    data_pages = [
        page
        for page in stats.items
        if isinstance(page, dict)
        and page.get(STATS_PAGE_TYPE, (I32, -1))[1] in (DATA_PAGE, DATA_PAGE_V2)
    ]
    return bool(data_pages) and all(
        page.get(STATS_ENCODING, (I32, -1))[1] in DICTIONARY_ENCODINGS for page in data_pages
    )


def _checked(
    batch: pa.RecordBatch, terms: list[_Term], deadline: Deadline, shown: list[str] | None
) -> pa.RecordBatch:
    """Return a batch read, checked, its ``shown`` columns' rows the terms keep, printable."""
    deadline.check()
    deadline.records += batch.num_rows
    _check_text(batch, deadline.records - batch.num_rows)
    if terms:
        kept = _kept(batch, terms)
        batch = batch if shown is None else batch.select(shown)
        batch = batch.filter(kept, null_selection_behavior="drop")
    return _printed(batch)


def _spans(
    metadata: pq.FileMetaData, index: int, leaves: list[int], data_end: int
) -> list[tuple[int, int]]:
    """Return the byte spans of one row group's read columns, once they pass the limits."""
    group = metadata.row_group(index)
    if group.total_byte_size > MAX_ROW_GROUP_BYTES:
        raise QueryLimitExceeded(
            f"row group {index} is {group.total_byte_size} bytes uncompressed, over S3 "
            f"Select's limit of {MAX_ROW_GROUP_BYTES >> 20} MB"
        )
    spans = []
    wanted = 0
    for leaf in leaves:
        chunk = group.column(leaf)
        name = metadata.schema.column(leaf).path  # the chunk's own may be damaged
        start = chunk.data_page_offset
        if chunk.has_dictionary_page and 0 < chunk.dictionary_page_offset < start:
            start = chunk.dictionary_page_offset
        end = start + chunk.total_compressed_size
        if start < len(b"PAR1") or end > data_end or chunk.total_compressed_size <= 0:
            raise ParquetInvalid(
                f"column {name} of row group {index} claims bytes "
                f"{start}-{end}, outside the object's data (0-{data_end})"
            )
        inflated = chunk.total_uncompressed_size
        if inflated > BOMB_FLOOR_BYTES and inflated > DECOMPRESSION_RATIO * (end - start):
            raise QueryLimitExceeded(
                f"column {name} of row group {index} inflates from "
                f"{end - start} to {inflated} bytes, over {DECOMPRESSION_RATIO}x: refused as a "
                f"decompression bomb"
            )
        wanted += inflated
        spans.append((start, end))
    if wanted > MAX_READ_BYTES:
        raise QueryLimitExceeded(
            f"row group {index} holds {wanted} bytes uncompressed in the columns read, over the "
            f"local engine's limit of {MAX_READ_BYTES >> 20} MiB per row group; read fewer "
            f"columns or write smaller row groups"
        )
    return spans


def _check_text(batch: pa.RecordBatch, before: int) -> None:
    """Refuse values pyarrow did not check on reading, and records over 1 MiB.

    Text that is not UTF-8 (nested too) fails the whole batch's validation; a row whose text
    columns pass 1 MiB is refused as S3 Select refuses such a record.
    """
    try:
        batch.validate(full=True)
    except pa.ArrowInvalid:
        raise ParquetInvalid(
            f"rows {before + 1}-{before + batch.num_rows} hold text that is not UTF-8 or values "
            f"that are not valid"
        ) from None
    texts = [column for column in batch.columns if _is_text(column.type)]
    if sum(column.nbytes for column in texts) <= MAX_RECORD_CHARS:
        return  # all the batch's text together (and more) is within one record's limit
    total = None
    for column in texts:
        lengths = pc.fill_null(_text_lengths(column), 0)
        total = lengths if total is None else pc.add(total, lengths)
    if total is not None and len(total) and pc.max(total).as_py() > MAX_RECORD_CHARS:
        row = before + pc.index(pc.greater(total, MAX_RECORD_CHARS), True).as_py() + 1
        raise over_max_record_size(f"input row {row}")


def _is_text(data_type: pa.DataType) -> bool:
    """Text, or text read as a dictionary array (a fold's, :func:`_dictionary_encoded`)."""
    if pa.types.is_dictionary(data_type):
        data_type = data_type.value_type
    return vector.kind(data_type) == "text"


def _text_lengths(column: pa.Array) -> pa.Array:
    """Each row's text length in bytes; a dictionary array's rows, their entries' lengths."""
    if pa.types.is_dictionary(column.type):
        return pc.take(pc.binary_length(column.dictionary), column.indices)
    return pc.binary_length(column)


def _rows(batches: Iterator[pa.RecordBatch]) -> Iterator[dict[str, Any]]:
    """Each row as a dict of Python values."""
    for batch in batches:
        yield from batch.to_pylist()


def _printed(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Return the batch with dates and timestamps as S3 Select prints them."""
    columns = [_printable(column) for column in batch.columns]
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def _printable(column: pa.Array) -> pa.Array:
    data_type = column.type
    if pa.types.is_timestamp(data_type):
        zone = "Z" if data_type.tz else ""
        return pc.strftime(column, format=f"%Y-%m-%dT%H:%M:%S{zone}")
    if pa.types.is_date(data_type) or pa.types.is_time(data_type):
        return column.cast(pa.string())
    if pa.types.is_float16(data_type):
        return column.cast(pa.float64())
    return column
