"""Parquet queries run whole-batch, where that gives the evaluator's output byte for byte.

Two shapes, both decided from the plan and the schema before any data is read:

* aggregates (COUNT, SUM, AVG, MIN, MAX) of columns of integers, floats (and text for COUNT,
  MIN, MAX), with no WHERE or one :mod:`.parquet` applies as a mask: folded with the CSV fast
  path's :class:`.fast.Fold`, NULLs dropped first, as the evaluator skips them;
* ``SELECT *`` or plain columns of integers, floats, booleans and text: written by
  :mod:`.lines` with Arrow's string kernels, or by the evaluator's serialiser where Arrow
  cannot write a batch as it does (text needing JSON escaping or CSV quoting, a line that may
  pass 1 MiB: the serialiser refuses it in S3 Select's words).

An aggregate the fold declines (an integer sum past 64 bits, MIN of -0.0 and 0.0) is rerun on
the evaluator; nothing has been output by then.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from worker.query.local import sql
from worker.query.local.fast import Fold
from worker.query.local.lines import LineWriter, LongLine
from worker.query.local.serialise import serialise

_FOLDED_KINDS = {
    "COUNT": ("int", "float", "text"),
    "SUM": ("int", "float"),
    "AVG": ("int", "float"),
    "MIN": ("int", "float", "text"),
    "MAX": ("int", "float", "text"),
}


def kind(data_type: pa.DataType) -> str | None:
    """Return the fold's kind of a column type: int, float, text; None for any other."""
    if pa.types.is_integer(data_type):
        return "int"
    if pa.types.is_floating(data_type):
        return "float"
    if pa.types.is_string(data_type) or pa.types.is_large_string(data_type):
        return "text"
    return None


# --- aggregates ----------------------------------------------------------------------------


def folds(plan: sql.Plan, schema: pa.Schema) -> list[Fold] | None:
    """Return a fold per projection if the aggregates can all be folded, else None."""
    if not plan.aggregate or plan.limit == 0:
        return None
    made = []
    for projection in plan.projections or ():
        node = projection.expr
        assert isinstance(node, sql.Aggregate)  # Plan.aggregate guarantees it
        if node.operand is None:
            made.append(Fold(node, None))
            continue
        column = _plain_column(node.operand)
        column_kind = kind(schema.field(column).type) if column else None
        if column_kind not in _FOLDED_KINDS[node.function]:
            return None
        made.append(Fold(node, _non_null(column)))
    return made


def _plain_column(node: sql.Expr) -> str | None:
    """Return the top-level field a column names (resolved by :mod:`.parquet`), or None."""
    if isinstance(node, sql.Column) and len(node.path) == 1 and isinstance(node.path[0], tuple):
        return node.path[0][0]
    return None


def _non_null(column: str | None) -> Any:
    def values(batch: pa.RecordBatch) -> pa.Array:
        array = pc.drop_null(batch.column(column))
        return array.cast(pa.float64()) if pa.types.is_floating(array.type) else array

    return values


def aggregate(
    plan: sql.Plan, made: list[Fold], batches: Iterator[pa.RecordBatch], rows_format: str
) -> Iterator[str]:
    """Fold every batch, then yield the one output record; Declined as the folds decline."""
    for batch in batches:
        for fold in made:
            fold.add(batch)
    names = [p.name for p in plan.projections or ()]
    yield from serialise([(names, [fold.result() for fold in made])], rows_format)


# --- rows ----------------------------------------------------------------------------------


def row_columns(plan: sql.Plan, schema: pa.Schema, read: list[str]) -> list[str] | None:
    """Return the fields a plain projection outputs, in order, if Arrow can write them all.

    Dates, times and timestamps count as text: :mod:`.parquet` prints them before this.
    """
    if plan.aggregate:
        return None
    columns = (
        read if plan.projections is None else [_plain_column(p.expr) for p in plan.projections]
    )
    if any(column is None for column in columns):
        return None
    names = _names(plan, columns)
    if len(set(names)) != len(names):
        return None
    types = [schema.field(column).type for column in columns]
    writable = (kind(t) or pa.types.is_boolean(t) or pa.types.is_temporal(t) for t in types)
    return columns if all(writable) else None


def _names(plan: sql.Plan, columns: list[Any]) -> list[str]:
    return columns if plan.projections is None else [p.name for p in plan.projections]


def rows(
    plan: sql.Plan,
    columns: list[str],
    batches: Iterator[pa.RecordBatch],
    rows_format: str,
) -> Iterator[str]:
    """Yield the output text a batch at a time, stopping at the plan's LIMIT."""
    writer = LineWriter(_names(plan, columns), rows_format)
    emitted = 0
    if plan.limit == 0:
        return  # before the first batch: nothing is fetched
    for batch in batches:
        if plan.limit is not None:
            batch = batch.slice(0, plan.limit - emitted)
        if batch.num_rows:
            fields = [batch.column(c) for c in columns]
            try:
                yield writer.text(fields, emitted + 1)
            except LongLine:  # the serialiser refuses a record over 1 MiB in S3 Select's words
                yield writer.serialised(fields, emitted + 1)
            emitted += batch.num_rows
        if plan.limit is not None and emitted >= plan.limit:
            return  # the next batch, and row group, is never fetched
