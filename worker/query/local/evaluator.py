"""Evaluate a plan over a stream of records, one record at a time, as S3 Select would.

The plan is compiled into Python closures once the record layout is known (the CSV header is
read first), so each record costs a few function calls and nothing is kept between records
except the aggregates' running totals. Semantics follow S3 Select's SQL reference: CSV values
are text until CAST; NULL and MISSING propagate through operators; WHERE keeps a record only
when its condition is TRUE; comparing text with a number is an error rather than a guess.

Every step costs time bounded by the record's size (LIKE without backtracking, ``||`` capped
at a record's length, numbers kept in range), and an error names the record number, the
expression (as the query wrote it) and the kinds of the values, never the values themselves.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from worker.query import Deadline, QueryError, QueryLimitExceeded
from worker.query.local import sql
from worker.query.local.caps import (
    INT_LIMIT,
    MAX_INT_DIGITS,
    MAX_NUMBER_CHARS,
    MAX_RECORD_CHARS,
    OVER_MAX_RECORD_SIZE,
)
from worker.query.local.like import like_pattern
from worker.query.local.reader import Records


class _Missing:
    """S3 Select's MISSING: a field the record does not have (omitted from JSON output)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
Getter = Callable[[Any], Any]
Output = tuple[Sequence[str], Sequence[Any]]


class EvaluationError(Exception):
    """A value-level failure (bad CAST, type mismatch); the caller adds the record number."""


class RecordTooLarge(EvaluationError):
    """An output value past S3 Select's 1 MiB per record: a limit, not a data error."""


def _failure(
    node: sql.Expr, problem: str, kind: type[EvaluationError] = EvaluationError
) -> EvaluationError:
    return kind(f"{sql.describe(node)}: {problem}")


def _in_record(number: int, error: EvaluationError) -> QueryError:
    """Return the query's error for ``error`` in record ``number``; limits stay limits."""
    kind = QueryLimitExceeded if isinstance(error, RecordTooLarge) else QueryError
    return kind(f"record {number}: {error}")


def evaluate(plan: sql.Plan, records: Records, deadline: Deadline) -> Iterator[Output]:
    """Yield ``(names, values)`` for each output record, stopping at the plan's LIMIT.

    ``deadline`` is checked within the long steps of one record (LIKE on a long value).
    """
    layout = CsvLayout(records.header) if records.kind == "CSV" else JsonLayout()
    where = _condition(plan.where, layout, deadline)
    if plan.limit == 0:
        return
    if plan.aggregate:
        yield _aggregate(plan, layout, where, records, deadline)
        return
    project = (
        layout.star if plan.projections is None else _projector(plan.projections, layout, deadline)
    )
    emitted = 0
    for number, row in enumerate(records.rows, start=1):
        try:
            if where is not None and not where(row):
                continue
            output = project(row)
        except EvaluationError as error:
            raise _in_record(number, error) from None
        yield output
        emitted += 1
        if emitted == plan.limit:
            return


def _condition(node: sql.Expr | None, layout: Layout, deadline: Deadline) -> Getter | None:
    """Compile WHERE into a test that is True only where the condition is TRUE."""
    if node is None:
        return None
    condition = compile_expr(node, layout, deadline)

    def passes(row: Any) -> bool:
        result = condition(row)
        if result is True:
            return True
        if result is False or result is None or result is MISSING:
            return False
        raise _failure(node, f"WHERE needs a condition, but this gave {_kind(result)}")

    return passes


def _projector(
    projections: tuple[sql.Projection, ...], layout: Layout, deadline: Deadline
) -> Callable[[Any], Output]:
    names = [p.name for p in projections]
    getters = [compile_expr(p.expr, layout, deadline) for p in projections]
    return lambda row: (names, [get(row) for get in getters])


# --- record layouts: how a column reference reads a field ----------------------------------


class CsvLayout:
    """CSV rows are lists of strings; columns by header name (FileHeaderInfo USE) or ``_N``."""

    def __init__(self, header: list[str] | None) -> None:
        self._header = header
        self._names: list[str] = list(header or [])

    def column(self, path: tuple[sql.Step, ...]) -> Getter:
        """Return a getter for the column ``path`` names (MISSING past a short row's end)."""
        if len(path) != 1 or not isinstance(path[0], tuple):
            raise QueryError(f"CSV columns have no nested fields or indexes: {_path_text(path)}")
        if self._header == []:
            return lambda row: MISSING  # an empty object: there are no records to read
        index = self.index(*path[0])

        def get(row: list[str]) -> Any:
            return row[index] if index < len(row) else MISSING

        return get

    def index(self, name: str, quoted: bool) -> int:
        """Return the zero-based field position a column name refers to; QueryError if none."""
        if self._header:
            wanted = name if quoted else name.lower()
            matches = [
                i for i, h in enumerate(self._header) if (h if quoted else h.lower()) == wanted
            ]
            if len(matches) > 1:
                raise QueryError(f"column {name!r} is ambiguous: the header has it twice")
            if matches:
                return matches[0]
        position = re.fullmatch(r"_([1-9]\d*)", name)
        if position:
            return int(position.group(1)) - 1
        if self._header is None:
            raise QueryError(
                f"column {name!r}: without FileHeaderInfo USE, columns are named _1, _2, ..."
            )
        names = ", ".join(self._header)
        shown = names if len(names) <= 200 else f"{names[:197]}..."
        raise QueryError(f"column {name!r} is not in the CSV header ({shown})")

    def star(self, row: list[str]) -> Output:
        """``SELECT *``: header names, then ``_N`` for fields past the header."""
        while len(self._names) < len(row):
            self._names.append(f"_{len(self._names) + 1}")
        return self._names, row


class JsonLayout:
    """JSON records are dicts; paths walk nested objects and lists."""

    def column(self, path: tuple[sql.Step, ...]) -> Getter:
        """Return a getter following ``path`` (MISSING where the record lacks the field)."""

        def get(record: Any) -> Any:
            value = record
            for step in path:
                if isinstance(step, int):
                    in_list = isinstance(value, list) and step < len(value)
                    value = value[step] if in_list else MISSING
                elif isinstance(value, dict):
                    value = _field(value, *step)
                else:
                    value = MISSING
                if value is MISSING:
                    return MISSING
            return value

        return get

    def star(self, record: dict[str, Any]) -> Output:
        """``SELECT *``: the record as it is."""
        return list(record), list(record.values())


Layout = CsvLayout | JsonLayout


def _field(record: dict[str, Any], name: str, quoted: bool) -> Any:
    """Quoted names match exactly; unquoted ones ignore case, as in S3 Select."""
    value = record.get(name, MISSING)
    if value is not MISSING or quoted:
        return value
    lowered = name.lower()
    matches = [v for k, v in record.items() if k.lower() == lowered]
    if len(matches) > 1:
        raise EvaluationError(f"field {name!r} is ambiguous: the record has it in several cases")
    return matches[0] if matches else MISSING


def _path_text(path: tuple[sql.Step, ...]) -> str:
    return "".join(f"[{s}]" if isinstance(s, int) else f".{s[0]}" for s in path).lstrip(".")


# --- expressions -----------------------------------------------------------------------------


def compile_expr(node: sql.Expr, layout: Layout, deadline: Deadline) -> Getter:
    """Compile a plan expression into a function of one record; one branch per node type.

    Each operation that can fail is given its node, so that its error names the expression.
    """
    if isinstance(node, sql.Literal):
        constant = node.value
        return lambda row: constant
    if isinstance(node, sql.Column):
        return layout.column(node.path)
    if isinstance(node, sql.Aggregate):
        raise QueryError(f"{node.function} is only allowed alone in the SELECT list")
    sub = lambda child: compile_expr(child, layout, deadline)  # noqa: E731
    if isinstance(node, sql.Cast):
        operand, convert = sub(node.operand), CASTS[node.type]
        return lambda row: _cast(operand(row), convert, node)
    if isinstance(node, sql.Compare):
        left, right, op = sub(node.left), sub(node.right), node.op
        return lambda row: compare(op, left(row), right(row), node)
    if isinstance(node, sql.Arithmetic):
        left, right, op = sub(node.left), sub(node.right), node.op
        return lambda row: arithmetic(op, left(row), right(row), node)
    if isinstance(node, sql.Negate):
        operand = sub(node.operand)
        return lambda row: arithmetic("-", 0, operand(row), node)
    if isinstance(node, sql.Logical):
        operands = [sub(item) for item in node.operands]
        return _chain(operands, decisive=node.op == "OR")
    if isinstance(node, sql.Not):
        operand = sub(node.operand)
        return lambda row: _not(operand(row), node)
    if isinstance(node, sql.Like):
        return _like(sub(node.operand), node, layout, deadline)
    if isinstance(node, sql.IsNull):
        operand = sub(node.operand)
        if node.missing_only:
            return lambda row: operand(row) is MISSING
        return lambda row: _is_null(operand(row))
    if isinstance(node, sql.In):
        operand, items = sub(node.operand), [sub(item) for item in node.items]
        return lambda row: _in(operand(row), [item(row) for item in items], node)
    if isinstance(node, sql.Between):
        operand, low, high = sub(node.operand), sub(node.low), sub(node.high)
        return lambda row: _between(operand(row), low(row), high(row), node)
    raise QueryError(f"cannot evaluate {type(node).__name__}")  # the compiler only makes the above


def _is_null(value: Any) -> bool:
    return value is None or value is MISSING


def _kind(value: Any) -> str:
    """Name a value's type for an error message (the value itself is never shown)."""
    if value is MISSING:
        return "MISSING"
    if value is None:
        return "NULL"
    kinds = {str: "text", bool: "bool", dict: "object", list: "list", Decimal: "decimal"}
    return kinds.get(type(value), type(value).__name__)


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


COMPARE_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def compare(op: str, left: Any, right: Any, node: sql.Expr) -> bool | None:
    """Compare as SQL does: NULL if either side is NULL or MISSING.

    Text compares only with text and numbers with numbers: S3 Select treats CSV fields as text
    until CAST, so guessing a conversion could return rows S3 Select would not. ``node`` is
    the expression named if they cannot be compared.
    """
    if _is_null(left) or _is_null(right):
        return None
    same_kind = (
        (isinstance(left, str) and isinstance(right, str))
        or (_numeric(left) and _numeric(right))
        or (isinstance(left, bool) and isinstance(right, bool))
    )
    if not same_kind:
        raise _failure(
            node,
            f"cannot compare {_kind(left)} with {_kind(right)}; CAST one side, "
            f"e.g. CAST(s.col AS INT)",
        )
    try:
        return COMPARE_OPS[op](left, right)
    except InvalidOperation:  # a NaN ordered against a DECIMAL (a literal such as 2.5)
        return False  # unordered: false, as a NaN ordered against a FLOAT is


def arithmetic(op: str, left: Any, right: Any, node: sql.Expr) -> Any:
    """+ - * / % on numbers (integer division truncates, as in SQL) and || on text.

    Results stay bounded: text at a record's length, integers under INT_LIMIT, decimals in
    their context's range; past that the expression ``node`` fails, named.
    """
    if _is_null(left) or _is_null(right):
        return None
    if op == "||":
        if not (isinstance(left, str) and isinstance(right, str)):
            raise _failure(node, f"|| joins text, not {_kind(left)} and {_kind(right)}")
        if len(left) + len(right) > MAX_RECORD_CHARS:
            raise _failure(node, OVER_MAX_RECORD_SIZE, RecordTooLarge)
        return left + right
    if not (_numeric(left) and _numeric(right)):
        raise _failure(node, f"cannot apply {op} to {_kind(left)} and {_kind(right)}; CAST first")
    if op in "/%" and right == 0:
        raise _failure(node, "division by zero")
    try:
        result = _calculate(op, left, right)
        return _bounded(result) if isinstance(result, int) else result
    except ArithmeticError:  # OverflowError, decimal.Overflow, decimal.InvalidOperation
        raise _failure(node, "the result is out of range") from None


def _calculate(op: str, left: Any, right: Any) -> Any:
    if isinstance(left, float) or isinstance(right, float):
        left, right = float(left), float(right)
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    if isinstance(left, int) and isinstance(right, int):
        quotient = abs(left) // abs(right) * (1 if (left >= 0) == (right >= 0) else -1)
        return quotient if op == "/" else left - right * quotient
    return left / right if op == "/" else left - right * int(left / right)


def _bounded(value: int) -> int:
    """Keep an integer the engine made under INT_LIMIT (Python's are unbounded)."""
    if -INT_LIMIT < value < INT_LIMIT:
        return value
    raise OverflowError(f"integer beyond {MAX_INT_DIGITS} digits")


def _chain(operands: list[Getter], decisive: bool) -> Getter:
    """AND (``decisive`` FALSE) or OR (``decisive`` TRUE) over a chain, in SQL's logic.

    The decisive value at the first operand that has it; else the other truth value only if
    every operand has it; else NULL.
    """
    other = not decisive

    def evaluate_chain(row: Any) -> bool | None:
        result: bool | None = other
        for operand in operands:
            value = operand(row)
            if value is decisive:
                return decisive
            if value is not other:
                result = None
        return result

    return evaluate_chain


def _not(value: Any, node: sql.Expr) -> bool | None:
    if _is_null(value):
        return None
    if not isinstance(value, bool):
        raise _failure(node, f"NOT needs a condition, got {_kind(value)}")
    return not value


def _in(value: Any, items: list[Any], node: sql.Expr) -> bool | None:
    if _is_null(value):
        return None
    unknown = False
    for item in items:
        result = compare("=", value, item, node)
        if result:
            return True
        unknown = unknown or result is None
    return None if unknown else False


def _between(value: Any, low: Any, high: Any, node: sql.Expr) -> bool | None:
    lower = compare(">=", value, low, node)
    if lower is False:
        return False
    upper = compare("<=", value, high, node)
    if upper is False:
        return False
    return None if lower is None or upper is None else True


def _like(operand: Getter, node: sql.Like, layout: Layout, deadline: Deadline) -> Getter:
    if isinstance(node.pattern, sql.Literal) and isinstance(node.pattern.value, str):
        compiled = like_pattern(node.pattern.value, node.escape)

        def like_constant(row: Any) -> bool | None:
            value = operand(row)
            if _is_null(value):
                return None
            if not isinstance(value, str):
                raise _failure(node, f"LIKE matches text, not {_kind(value)}")
            return compiled.matches(value, deadline)

        return like_constant
    pattern_of = compile_expr(node.pattern, layout, deadline)

    def like_computed(row: Any) -> bool | None:
        value, text = operand(row), pattern_of(row)
        if _is_null(value) or _is_null(text):
            return None
        if not isinstance(value, str) or not isinstance(text, str):
            raise _failure(node, f"LIKE matches text, not {_kind(value)} / {_kind(text)}")
        try:
            compiled = like_pattern(text, node.escape)
        except QueryError as error:
            raise _failure(node, str(error)) from None
        return compiled.matches(value, deadline)

    return like_computed


# --- CAST ------------------------------------------------------------------------------------

_NUMBER_TEXT = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def _cast(value: Any, convert: Callable[[Any], Any], node: sql.Cast) -> Any:
    if _is_null(value):
        return value
    try:
        return convert(value)
    except OverflowError:  # _bounded, or int() of an infinity
        raise _failure(node, f"this {_kind(value)} is out of the range of {node.type}") from None
    except (ValueError, TypeError, ArithmeticError):
        raise _failure(node, f"this {_kind(value)} is not a valid {node.type}") from None


def _to_decimal(value: Any) -> Decimal:
    if isinstance(value, str):
        # The length first: the pattern backtracks quadratically on long digit strings.
        if len(value) > MAX_NUMBER_CHARS or not _NUMBER_TEXT.fullmatch(value):
            raise ValueError("not a number")
        return Decimal(value.strip())
    if isinstance(value, bool):
        return Decimal(int(value))
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, (int, Decimal)):
        return Decimal(value)
    raise TypeError(value)


def _to_int(value: Any) -> int:
    if isinstance(value, (int, float)):
        return _bounded(int(value))
    number = _to_decimal(value)
    # Checked before int(): int(Decimal('1e999999999')) would build a billion digits.
    if number.is_finite() and number.adjusted() >= MAX_INT_DIGITS:
        raise OverflowError(f"beyond {MAX_INT_DIGITS} digits")
    return int(number)


def _to_float(value: Any) -> float:
    return float(value) if _numeric(value) else float(_to_decimal(value))


def _to_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if _numeric(value):
        return value != 0
    raise ValueError(value)


CASTS: dict[str, Callable[[Any], Any]] = {
    "INT": _to_int,
    "FLOAT": _to_float,
    "DECIMAL": _to_decimal,
    "STRING": _to_string,
    "BOOL": _to_bool,
}


# --- aggregates ------------------------------------------------------------------------------


class Accumulator:
    """One aggregate's running state; NULL and MISSING values are skipped, as in SQL."""

    def __init__(self, node: sql.Aggregate, operand: Getter | None) -> None:
        self.node, self.function, self.operand = node, node.function, operand
        self.count = 0
        self.total: Any = 0
        self.best: Any = None

    def add(self, row: Any) -> None:
        if self.operand is None:  # COUNT(*)
            self.count += 1
            return
        value = self.operand(row)
        if _is_null(value):
            return
        self.count += 1
        if self.function in ("SUM", "AVG"):
            if not _numeric(value):
                raise _failure(
                    self.node, f"{self.function} needs numbers, got {_kind(value)}; CAST"
                )
            self.total = arithmetic("+", self.total, value, self.node)
        elif self.function in ("MIN", "MAX") and (
            self.best is None
            or compare("<" if self.function == "MIN" else ">", value, self.best, self.node)
        ):
            self.best = value

    def result(self) -> Any:
        if self.function == "COUNT":
            return self.count
        if self.function in ("MIN", "MAX"):
            return self.best
        if not self.count:
            return None
        if self.function == "SUM":
            return self.total
        if isinstance(self.total, int):  # AVG of INT is DECIMAL in S3 Select
            return Decimal(self.total) / Decimal(self.count)
        return self.total / self.count


def _aggregate(
    plan: sql.Plan, layout: Layout, where: Getter | None, records: Records, deadline: Deadline
) -> Output:
    projections = plan.projections or ()
    accumulators = []
    for projection in projections:
        assert isinstance(projection.expr, sql.Aggregate)  # Plan.aggregate guarantees it
        operand = projection.expr.operand
        getter = compile_expr(operand, layout, deadline) if operand is not None else None
        accumulators.append(Accumulator(projection.expr, getter))
    for number, row in enumerate(records.rows, start=1):
        try:
            if where is not None and not where(row):
                continue
            for accumulator in accumulators:
                accumulator.add(row)
        except EvaluationError as error:
            raise _in_record(number, error) from None
    return [p.name for p in projections], [a.result() for a in accumulators]
