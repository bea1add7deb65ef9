"""Which queries the vectorised fast path (:mod:`.fast`) runs, decided without importing it.

The fast path costs ~80 MiB of pyarrow the first time it is imported, so the choice is made
here, from the plan and the input format alone: a process whose queries never qualify (rows
with ``LIMIT``, JSON, BZIP2 input) never loads pyarrow and keeps to the original 128 MiB.
``LIMIT`` stays with the evaluator because it stops reading at the rows needed, where Arrow's
reader fetches about 32 blocks ahead.

The fast path runs only what it can run exactly as the Python evaluator does. Here that is
decided statically: uncompressed or GZIP CSV; projections of ``*``, columns,
``CAST(column AS INT)``
and aggregates of columns or their INT / FLOAT casts; a WHERE of comparisons, BETWEEN and IN
between columns, their casts and literals of the same kind, joined by AND, OR and NOT. What
only the data can decide (a value that does not CAST, a ragged row, a comment line, bytes that
are not UTF-8) is checked batch by batch, and the query is handed back to the Python
evaluator (:class:`Declined`) rather than guessed at.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal as TypingLiteral

from worker.messages import InputFormat
from worker.query.local import sql

Kind = TypingLiteral["text", "int", "float", "bool"]
# Integers stay exactly representable as floats, so comparing INT with FLOAT is exact.
MAX_EXACT_INT = 1 << 53
_CAST_KINDS: dict[str, Kind] = {"INT": "int", "FLOAT": "float", "STRING": "text"}
_AGGREGATED_KINDS: dict[str, tuple[Kind, ...]] = {
    "COUNT": ("text", "int", "float"),
    "SUM": ("int", "float"),
    "AVG": ("int", "float"),
    "MIN": ("text", "int", "float"),
    "MAX": ("text", "int", "float"),
}


class Declined(Exception):
    """The fast path cannot run this query exactly; the Python evaluator runs it instead."""


def refusal(plan: sql.Plan, fmt: InputFormat) -> str | None:
    """Return why the fast path cannot run ``plan`` on ``fmt`` input, or None if it can."""
    if fmt.kind != "CSV":
        return "JSON input"
    if fmt.compression not in ("NONE", "GZIP"):  # bzip2's own decoding costs the most
        return f"{fmt.compression} input"
    if plan.limit is not None and not plan.aggregate:
        # Arrow's reader fetches ~32 blocks ahead; the evaluator stops at the rows needed.
        return "LIMIT reads only the rows needed"
    try:
        if plan.where is not None and kind_of(plan.where) != "bool":
            return "WHERE is not a condition"
        for projection in plan.projections or ():
            _check_projection(projection.expr)
        names = [p.name for p in plan.projections or ()]
        if len(set(names)) != len(names):
            return "two output fields share a name"
    except Declined as why:
        return str(why)
    return None


def _check_projection(expr: sql.Expr) -> None:
    if isinstance(expr, sql.Aggregate):
        operand = expr.operand
        if operand is not None and (
            not isinstance(operand, (sql.Column, sql.Cast))
            or kind_of(operand) not in _AGGREGATED_KINDS[expr.function]
        ):
            raise Declined(f"{expr.function} of {sql.describe(operand)}")
        return
    if isinstance(expr, sql.Column) or (isinstance(expr, sql.Cast) and expr.type == "INT"):
        kind_of(expr)
        return
    raise Declined(f"the projection {sql.describe(expr)}")


def kind_of(expr: sql.Expr) -> Kind:
    """Return the kind of value ``expr`` gives on CSV input; Declined if it is beyond us.

    Comparisons must join two values of one kind (INT with FLOAT being one kind of number),
    as the Python evaluator would otherwise raise: those queries go to it for its error.
    """
    if isinstance(expr, sql.Column):
        if len(expr.path) != 1 or not isinstance(expr.path[0], tuple):
            raise Declined(f"the column path {sql.describe(expr)}")
        return "text"
    if isinstance(expr, sql.Cast):
        if not isinstance(expr.operand, sql.Column) or expr.type not in _CAST_KINDS:
            raise Declined(sql.describe(expr))
        kind_of(expr.operand)
        return _CAST_KINDS[expr.type]
    if isinstance(expr, (sql.Literal, sql.Negate)):
        return literal_kind(literal_value(expr))
    if isinstance(expr, sql.Compare):
        _same_kind(expr, (expr.left, expr.right))
        return "bool"
    if isinstance(expr, sql.Between):
        _same_kind(expr, (expr.operand, expr.low, expr.high))
        return "bool"
    if isinstance(expr, sql.In):
        _same_kind(expr, (expr.operand, *expr.items))
        return "bool"
    if isinstance(expr, sql.Logical) and all(kind_of(item) == "bool" for item in expr.operands):
        return "bool"
    if isinstance(expr, sql.Not) and kind_of(expr.operand) == "bool":
        return "bool"
    raise Declined(sql.describe(expr))


def _same_kind(node: sql.Expr, operands: tuple[sql.Expr, ...]) -> None:
    kinds = {kind_of(operand) for operand in operands}
    if not (kinds == {"text"} or kinds <= {"int", "float"}):
        raise Declined(f"{sql.describe(node)} compares values of different kinds")


def literal_value(expr: sql.Expr) -> str | int | float:
    """Return a literal (or a negated number) as the value the fast path compares with.

    Numbers must convert to float exactly, so that comparing them in float64 is exact.
    """
    if isinstance(expr, sql.Negate):
        value = literal_value(expr.operand)
        if isinstance(value, str):
            raise Declined(sql.describe(expr))
        return -value
    if not isinstance(expr, sql.Literal):
        raise Declined(sql.describe(expr))
    value = expr.value
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < MAX_EXACT_INT:
        return value
    if isinstance(value, Decimal) and value.is_finite() and Decimal(float(value)) == value:
        return float(value)
    raise Declined(f"the literal {sql.describe(expr)}")


def literal_kind(value: str | int | float) -> Kind:
    """Return the kind of a value :func:`literal_value` returned."""
    if isinstance(value, str):
        return "text"
    return "int" if isinstance(value, int) else "float"
