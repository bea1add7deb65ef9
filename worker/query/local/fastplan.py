"""Which queries the vectorised fast path (:mod:`.fast`) runs, decided without importing it.

The fast path costs ~80 MiB of pyarrow the first time it is imported, so the choice is made
here, from the plan and the input format alone: a process whose queries never qualify (rows
with ``LIMIT``, JSON rows, BZIP2 input) never loads pyarrow and keeps to the original 128 MiB.
``LIMIT`` stays with the evaluator because it stops reading at the rows needed, where Arrow's
reader fetches about 32 blocks ahead.

The fast path runs only what it can run exactly as the Python evaluator does. Here that is
decided statically: uncompressed or GZIP CSV; projections of ``*``, columns,
``CAST(column AS INT)``
and aggregates of columns or their INT / FLOAT casts; a WHERE of comparisons, BETWEEN and IN
between columns, their casts and literals of the same kind, joined by AND, OR and NOT; and on
JSON lines (:mod:`.fast_json`), aggregates and comparisons of top-level fields. What
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
    if fmt.compression not in ("NONE", "GZIP"):  # bzip2's own decoding costs the most
        return f"{fmt.compression} input"
    if fmt.kind != "CSV":
        return _json_lines_refusal(plan, fmt)
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


def _json_lines_refusal(plan: sql.Plan, fmt: InputFormat) -> str | None:
    """Why JSON input stays with the evaluator; None for what :mod:`.fast_json` runs.

    Aggregates only: Arrow reads a null and a missing field alike, and they print alike only
    inside an aggregate (both skipped). Fields by top-level name, compared with literals, and
    no CAST: a field's kind (INT or text) is known only from the data, checked there.
    """
    if fmt.json_type != "LINES":
        return "JSON DOCUMENT input"
    if not plan.aggregate:
        return "JSON rows (only aggregates of JSON lines run vectorised)"
    try:
        if plan.where is not None:
            _json_condition(plan.where)
        for projection in plan.projections or ():
            assert isinstance(projection.expr, sql.Aggregate)  # Plan.aggregate guarantees it
            if projection.expr.operand is not None:
                json_field(projection.expr.operand)
    except Declined as why:
        return str(why)
    return None


def _json_condition(expr: sql.Expr) -> None:
    """Accept comparisons of JSON fields and literals, joined by AND, OR and NOT.

    The literals of one comparison must be of one kind: otherwise the evaluator's error.
    """
    if isinstance(expr, sql.Logical):
        for operand in expr.operands:
            _json_condition(operand)
        return
    if isinstance(expr, sql.Not):
        _json_condition(expr.operand)
        return
    if isinstance(expr, sql.Compare):
        operands: tuple[sql.Expr, ...] = (expr.left, expr.right)
    elif isinstance(expr, sql.Between):
        operands = (expr.operand, expr.low, expr.high)
    elif isinstance(expr, sql.In):
        operands = (expr.operand, *expr.items)
    else:
        raise Declined(sql.describe(expr))
    kinds = set()
    for operand in operands:
        if isinstance(operand, sql.Column):
            json_field(operand)
        else:
            kinds.add(literal_kind(literal_value(operand)))
    if not (kinds <= {"text"} or kinds <= {"int", "float"}):
        raise Declined(f"{sql.describe(expr)} compares values of different kinds")


def json_field(expr: sql.Expr) -> str:
    """Return the top-level field a column names in JSON; Declined for anything else.

    The name must be printable ASCII without quote or backslash, so that it is written alike
    in every record's bytes (:mod:`.fast_json` checks them for other spellings of it).
    """
    if not isinstance(expr, sql.Column) or len(expr.path) != 1:
        raise Declined(f"the JSON path {sql.describe(expr)}")
    step = expr.path[0]
    if not isinstance(step, tuple):
        raise Declined(f"the JSON path {sql.describe(expr)}")
    name = step[0]
    if not name.isascii() or not name.isprintable() or '"' in name or "\\" in name:
        raise Declined(f"the JSON field name in {sql.describe(expr)}")
    return name


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
