"""S3 Select SQL -> a small plan the evaluator understands, with sqlglot doing the parsing.

sqlglot is a maintained parser; this module only walks its tree and keeps the constructs of S3
Select's SQL that the local engine evaluates. Anything else is refused here, before a byte of
the object is read, with a :class:`QueryUnsupported` that names the construct.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from worker.query import QueryUnsupported
from worker.query.local.caps import INT_LIMIT, MAX_NUMBER_CHARS, MAX_SQL_DEPTH, MAX_SQL_PARENS

# A step of a column path: a name (with whether it was double-quoted, which makes it
# case-sensitive in S3 Select) or a zero-based list index (JSON only).
Step = tuple[str, bool] | int

CAST_TYPES = {
    exp.DataType.Type.INT: "INT",
    exp.DataType.Type.BIGINT: "INT",
    exp.DataType.Type.SMALLINT: "INT",
    exp.DataType.Type.TINYINT: "INT",
    exp.DataType.Type.FLOAT: "FLOAT",
    exp.DataType.Type.DOUBLE: "FLOAT",
    exp.DataType.Type.DECIMAL: "DECIMAL",
    exp.DataType.Type.TEXT: "STRING",
    exp.DataType.Type.VARCHAR: "STRING",
    exp.DataType.Type.CHAR: "STRING",
    exp.DataType.Type.BOOLEAN: "BOOL",
}
COMPARISONS = {exp.EQ: "=", exp.NEQ: "!=", exp.LT: "<", exp.LTE: "<=", exp.GT: ">", exp.GTE: ">="}
ARITHMETIC = {exp.Add: "+", exp.Sub: "-", exp.Mul: "*", exp.Div: "/", exp.Mod: "%"}
AGGREGATES = {exp.Count: "COUNT", exp.Sum: "SUM", exp.Avg: "AVG", exp.Min: "MIN", exp.Max: "MAX"}
SELECT_CLAUSES = {"expressions", "from_", "where", "limit"}
SUPPORTED = (
    "SELECT * | expressions [AS alias], FROM S3Object [alias], WHERE with = != <> < <= > >= "
    "AND OR NOT LIKE IS [NOT] NULL IN BETWEEN + - * / % ||, CAST, COUNT SUM AVG MIN MAX, LIMIT"
)
# What nests in SQL text: parentheses, outside string literals and quoted names.
_NESTING_TOKENS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|[()]")


@dataclass(frozen=True)
class Literal:
    """A constant."""

    value: Any


@dataclass(frozen=True)
class Column:
    """A reference to a field of the record, the table alias already removed."""

    path: tuple[Step, ...]


@dataclass(frozen=True)
class Cast:
    """``CAST(operand AS type)``; type is INT, FLOAT, DECIMAL, STRING or BOOL."""

    operand: Expr
    type: str


@dataclass(frozen=True)
class Compare:
    """A comparison; op is one of = != < <= > >=."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Arithmetic:
    """A binary operator on numbers (+ - * / %) or strings (||)."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Negate:
    """Unary minus."""

    operand: Expr


@dataclass(frozen=True)
class Logical:
    """AND / OR over a chain of conditions, in SQL's three-valued logic.

    ``a AND b AND c`` is one node, so a chain of any length costs one level of nesting.
    """

    op: str
    operands: tuple[Expr, ...]


@dataclass(frozen=True)
class Not:
    """NOT in three-valued logic."""

    operand: Expr


@dataclass(frozen=True)
class Like:
    """``operand LIKE pattern [ESCAPE escape]``."""

    operand: Expr
    pattern: Expr
    escape: str | None


@dataclass(frozen=True)
class IsNull:
    """``IS NULL`` (true for NULL and MISSING) or ``IS MISSING`` (true for MISSING only)."""

    operand: Expr
    missing_only: bool


@dataclass(frozen=True)
class In:
    """``operand IN (items)``."""

    operand: Expr
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Between:
    """``operand BETWEEN low AND high``."""

    operand: Expr
    low: Expr
    high: Expr


@dataclass(frozen=True)
class Aggregate:
    """An aggregate over all records that pass WHERE; operand None is ``COUNT(*)``."""

    function: str
    operand: Expr | None


Expr = (
    Literal
    | Column
    | Cast
    | Compare
    | Arithmetic
    | Negate
    | Logical
    | Not
    | Like
    | IsNull
    | In
    | Between
    | Aggregate
)


@dataclass(frozen=True)
class Projection:
    """One output field: its name in the output record and the expression giving its value."""

    name: str
    expr: Expr


@dataclass(frozen=True)
class Plan:
    """What the evaluator runs: projections (None for ``*``), filter, limit."""

    projections: tuple[Projection, ...] | None
    where: Expr | None
    limit: int | None

    @property
    def aggregate(self) -> bool:
        """Whether the query folds all records into one (every projection is an aggregate)."""
        return bool(self.projections) and all(
            isinstance(p.expr, Aggregate) for p in self.projections or ()
        )


def parse_select(sql: str) -> exp.Select:
    """Parse ``sql`` as one SELECT; raise :class:`QueryUnsupported` naming what is wrong.

    Nesting is bounded before sqlglot recurses into it (parentheses, in the text) and before
    anything recurses over its tree (every level), so no SQL can exhaust the stack.
    """
    _check_parentheses(sql)
    try:
        statements = [s for s in sqlglot.parse(sql) if s is not None]
    except SqlglotError as error:
        raise QueryUnsupported(f"cannot parse the SQL: {_first_line(error)}") from None
    except RecursionError:  # NOT NOT NOT ... and other chains sqlglot parses by recursion
        raise QueryUnsupported(
            f"the SQL nests too deeply to parse; the local engine accepts {MAX_SQL_DEPTH} levels"
        ) from None
    if len(statements) != 1:
        raise QueryUnsupported(f"expected one SELECT statement, got {len(statements)}")
    select = statements[0]
    _check_depth(select)
    if not isinstance(select, exp.Select):
        raise QueryUnsupported(f"{_describe(select)} is not supported; S3 Select runs one SELECT")
    return select


def _check_parentheses(sql: str) -> None:
    depth = 0
    for token in _NESTING_TOKENS.finditer(sql):
        if token.group() == "(":
            depth += 1
            if depth > MAX_SQL_PARENS:
                raise QueryUnsupported(
                    f"the SQL nests parentheses more than {MAX_SQL_PARENS} deep; "
                    f"the local engine accepts at most {MAX_SQL_PARENS}"
                )
        elif token.group() == ")":
            depth -= 1


def _check_depth(root: exp.Expression) -> None:
    """Refuse a tree deeper than MAX_SQL_DEPTH, counting a chain of ANDs (or ORs) as one level.

    Iterative: the tree may be thousands of levels deep (sqlglot builds ``a || b || ...``
    without recursion), and that is exactly what must not be recursed over.
    """
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_SQL_DEPTH:
            raise QueryUnsupported(
                f"the SQL nests expressions more than {MAX_SQL_DEPTH} levels deep; "
                f"the local engine accepts at most {MAX_SQL_DEPTH}"
            )
        for child in node.iter_expressions():
            chained = isinstance(child, (exp.And, exp.Or)) and type(child) is type(node)
            stack.append((child, depth if chained else depth + 1))


def compile_query(sql: str) -> Plan:
    """Parse ``sql`` and return its plan; raise :class:`QueryUnsupported` naming what is not."""
    select = parse_select(sql)
    for clause, value in select.args.items():
        if value and clause not in SELECT_CLAUSES:
            raise QueryUnsupported(f"{_clause_name(clause)} is not supported by S3 Select SQL")
    alias = _table_alias(select)
    compiler = _Compiler(alias)
    projections = compiler.projections(select.expressions)
    where = select.args.get("where")
    plan = Plan(
        projections=projections,
        where=compiler.condition(where.this) if where else None,
        limit=limit_value(select.args.get("limit")),
    )
    if projections and not plan.aggregate and any(_has_aggregate(p.expr) for p in projections):
        raise QueryUnsupported(
            "mixing aggregates (COUNT, SUM, AVG, MIN, MAX) with per-record values in one SELECT "
            "is not supported: S3 Select has no GROUP BY"
        )
    return plan


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _clause_name(clause: str) -> str:
    return {
        "group": "GROUP BY",
        "order": "ORDER BY",
        "joins": "JOIN",
        "distinct": "SELECT DISTINCT",
        "with_": "WITH",
    }.get(clause, clause.rstrip("_").upper())


def _describe(node: exp.Expression) -> str:
    """Name a construct as a user would, for error messages."""
    if isinstance(node, exp.Anonymous):
        return f"function {str(node.this).upper()}"
    if isinstance(node, exp.Func):
        return f"function {node.sql_name()}"
    if isinstance(node, (exp.Subquery, exp.Select)):
        return "a subquery"
    return node.key.upper().replace("_", " ")


def _table_alias(select: exp.Select) -> str | None:
    source = select.args.get("from_")
    table = source.this if source else None
    alias = None
    if isinstance(table, exp.Bracket) and [type(e) for e in table.expressions] == [exp.Star]:
        alias, table = table.alias, table.this  # FROM S3Object[*] is FROM S3Object
    if not isinstance(table, exp.Table) or table.args.get("db") or table.args.get("catalog"):
        what = _describe(table) if table is not None else "nothing"
        raise QueryUnsupported(f"FROM must name S3Object, got {what}")
    if table.name.lower() != "s3object":
        raise QueryUnsupported(f"FROM must name S3Object, got {table.name}")
    return alias or table.alias or None


def limit_value(limit: exp.Limit | None) -> int | None:
    """Return ``n`` of ``LIMIT n`` (None without LIMIT); QueryUnsupported if not a number."""
    if limit is None:
        return None
    value = limit.expression
    if isinstance(value, exp.Literal) and not value.is_string and str(value.this).isdigit():
        return int(_number(value.this))
    raise QueryUnsupported(f"LIMIT must be a whole number, got {value.sql()}")


def _has_aggregate(expr: object) -> bool:
    if isinstance(expr, Aggregate):
        return True
    if isinstance(expr, tuple):
        return any(_has_aggregate(item) for item in expr)
    if hasattr(expr, "__dataclass_fields__"):
        return any(_has_aggregate(getattr(expr, f)) for f in expr.__dataclass_fields__)
    return False


class _Compiler:
    """Turns sqlglot nodes into plan nodes; ``alias`` is the FROM alias to strip from paths."""

    def __init__(self, alias: str | None) -> None:
        self._alias = alias

    def projections(self, nodes: list[exp.Expression]) -> tuple[Projection, ...] | None:
        if len(nodes) == 1 and isinstance(nodes[0], exp.Star):
            return None
        result = []
        for position, node in enumerate(nodes, start=1):
            if isinstance(node, exp.Star):
                raise QueryUnsupported("* must be the only item of the SELECT list")
            name = None
            if isinstance(node, exp.Alias):
                name, node = node.alias, node.this
            expr = self.value(node, allow_aggregate=True)
            if name is None:
                last = expr.path[-1] if isinstance(expr, Column) else None
                name = last[0] if isinstance(last, tuple) else f"_{position}"
            result.append(Projection(name, expr))
        return tuple(result)

    def condition(self, node: exp.Expression) -> Expr:
        return self.value(node, allow_aggregate=False)

    def value(self, node: exp.Expression, allow_aggregate: bool = False) -> Expr:
        """Compile one expression node; the long type switch is the grammar, kept in one place."""
        if isinstance(node, exp.Paren):
            return self.value(node.this, allow_aggregate)
        if node.args.get("negate"):
            positive = node.copy()
            positive.set("negate", False)
            return Not(self.value(positive, allow_aggregate))
        if isinstance(node, exp.Literal):
            return Literal(node.this if node.is_string else _number(node.this))
        if isinstance(node, exp.Boolean):
            return Literal(bool(node.this))
        if isinstance(node, exp.Null):
            return Literal(None)
        if isinstance(node, (exp.Column, exp.Dot, exp.Bracket)):
            return Column(self._path(node))
        if isinstance(node, exp.Cast) and not isinstance(node, exp.TryCast):
            return self._cast(node)
        sub = lambda child: self.value(child, allow_aggregate)  # noqa: E731
        for kind, op in COMPARISONS.items():
            if isinstance(node, kind):
                return Compare(op, sub(node.this), sub(node.expression))
        for kind, op in ARITHMETIC.items():
            if isinstance(node, kind):
                return Arithmetic(op, sub(node.this), sub(node.expression))
        if isinstance(node, exp.DPipe):
            return Arithmetic("||", sub(node.this), sub(node.expression))
        if isinstance(node, exp.Neg):
            return Negate(sub(node.this))
        if isinstance(node, (exp.And, exp.Or)):
            return Logical(node.key.upper(), tuple(sub(item) for item in _chain(node)))
        if isinstance(node, exp.Not):
            return Not(sub(node.this))
        if isinstance(node, exp.Escape) and isinstance(node.this, exp.Like):
            return self._like(node.this, node.expression, allow_aggregate)
        if isinstance(node, exp.Like):
            return self._like(node, None, allow_aggregate)
        if isinstance(node, exp.Is):
            return self._is(node, allow_aggregate)
        if isinstance(node, exp.In):
            if node.args.get("query") or node.args.get("unnest") or node.args.get("field"):
                raise QueryUnsupported("IN with a subquery is not supported: S3 Select has none")
            return In(sub(node.this), tuple(sub(item) for item in node.expressions))
        if isinstance(node, exp.Between):
            return Between(sub(node.this), sub(node.args["low"]), sub(node.args["high"]))
        for kind, name in AGGREGATES.items():
            if isinstance(node, kind):
                return self._aggregate(node, name, allow_aggregate)
        raise QueryUnsupported(
            f"{_describe(node)} ({node.sql()}) is not supported by the local engine; "
            f"it supports {SUPPORTED}"
        )

    def _cast(self, node: exp.Cast) -> Cast:
        target = node.to.this
        if target not in CAST_TYPES:
            raise QueryUnsupported(f"CAST to {node.to.sql()} is not supported by the local engine")
        return Cast(self.value(node.this), CAST_TYPES[target])

    def _like(self, like: exp.Like, escape: exp.Expression | None, allow: bool) -> Like:
        escape_char = None
        if escape is not None:
            if not (isinstance(escape, exp.Literal) and escape.is_string and len(escape.this) == 1):
                raise QueryUnsupported(f"ESCAPE must be one character, got {escape.sql()}")
            escape_char = escape.this
        return Like(self.value(like.this, allow), self.value(like.expression, allow), escape_char)

    def _is(self, node: exp.Is, allow: bool) -> Expr:
        target = node.expression
        if isinstance(target, exp.Null):
            return IsNull(self.value(node.this, allow), missing_only=False)
        if isinstance(target, exp.Column) and target.name.upper() == "MISSING":
            return IsNull(self.value(node.this, allow), missing_only=True)
        raise QueryUnsupported(f"IS {target.sql()} is not supported; use IS NULL or IS MISSING")

    def _aggregate(self, node: exp.Expression, name: str, allowed: bool) -> Aggregate:
        if not allowed:
            raise QueryUnsupported(f"{name} is only allowed in the SELECT list")
        operand = node.this
        if isinstance(operand, exp.Distinct):
            raise QueryUnsupported(f"{name}(DISTINCT ...) is not supported by S3 Select SQL")
        if isinstance(operand, exp.Star):
            if name != "COUNT":
                raise QueryUnsupported(f"{name}(*) is not valid; only COUNT(*) is")
            return Aggregate(name, None)
        inner = self.value(operand)
        if _has_aggregate(inner):
            raise QueryUnsupported("aggregates cannot be nested")
        return Aggregate(name, inner)

    def _path(self, node: exp.Expression) -> tuple[Step, ...]:
        if isinstance(node, exp.Column):
            steps: list[Step] = [(part.name, bool(part.args.get("quoted"))) for part in node.parts]
        elif isinstance(node, exp.Dot):
            steps = [*self._path(node.this), (node.expression.name, _quoted(node.expression))]
            return tuple(steps)
        else:  # exp.Bracket
            index = node.expressions[0] if len(node.expressions) == 1 else None
            if not (isinstance(index, exp.Literal) and str(index.this).isdigit()):
                raise QueryUnsupported(f"only [n] list indexes are supported, got {node.sql()}")
            return (*self._path(node.this), int(index.this))
        first = steps[0]
        if len(steps) > 1 and isinstance(first, tuple) and self._is_alias(first[0]):
            steps = steps[1:]
        return tuple(steps)

    def _is_alias(self, name: str) -> bool:
        return name.lower() in {(self._alias or "").lower(), "s3object"}


def _chain(node: exp.Connector) -> list[exp.Expression]:
    """Return the operands of a chain of one connective, left to right, without recursion."""
    operands, stack = [], [node]
    while stack:
        item = stack.pop()
        if type(item) is type(node):
            stack += [item.expression, item.this]
        else:
            operands.append(item)
    return operands


def _quoted(node: exp.Expression) -> bool:
    return bool(node.args.get("quoted"))


def _number(text: str) -> int | Decimal:
    """Type a numeric literal as S3 Select does: whole numbers INT, others DECIMAL.

    Refused, before any conversion, when it is too long to be in range or is a whole number
    past the engine's integers (see :mod:`.caps`).
    """
    if len(text) > MAX_NUMBER_CHARS:
        raise QueryUnsupported(
            f"a numeric literal of {len(text)} characters; the local engine reads at most "
            f"{MAX_NUMBER_CHARS}"
        )
    try:
        value = int(text) if text.isdigit() else Decimal(text)
    except InvalidOperation:
        raise QueryUnsupported(f"{text} is not a number") from None
    if isinstance(value, int) and value >= INT_LIMIT:
        raise QueryUnsupported(f"the integer literal {text} is out of range (38 digits at most)")
    return value


def describe(expr: Expr) -> str:
    """Render the expression as SQL, cut to 80 characters, for error messages.

    Only the query's own words appear (columns as paths without the table alias), never a
    record's values: logs must not carry the data.
    """
    text = _render(expr)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _render(expr: Expr | None) -> str:
    if expr is None:
        return "*"
    if isinstance(expr, Literal):
        return _render_literal(expr.value)
    if isinstance(expr, Column):
        steps = (f"[{s}]" if isinstance(s, int) else f".{s[0]}" for s in expr.path)
        return "".join(steps).lstrip(".")
    if isinstance(expr, Cast):
        return f"CAST({_render(expr.operand)} AS {expr.type})"
    if isinstance(expr, (Compare, Arithmetic)):
        return f"{_render(expr.left)} {expr.op} {_render(expr.right)}"
    if isinstance(expr, Logical):
        return f" {expr.op} ".join(_render(item) for item in expr.operands)
    if isinstance(expr, Negate):
        return f"-{_render(expr.operand)}"
    if isinstance(expr, Not):
        return f"NOT {_render(expr.operand)}"
    if isinstance(expr, Like):
        escape = f" ESCAPE {_render_literal(expr.escape)}" if expr.escape else ""
        return f"{_render(expr.operand)} LIKE {_render(expr.pattern)}{escape}"
    if isinstance(expr, IsNull):
        return f"{_render(expr.operand)} IS {'MISSING' if expr.missing_only else 'NULL'}"
    if isinstance(expr, In):
        return f"{_render(expr.operand)} IN (...)"
    if isinstance(expr, Between):
        return f"{_render(expr.operand)} BETWEEN {_render(expr.low)} AND {_render(expr.high)}"
    return f"{expr.function}({_render(expr.operand)})"


def _render_literal(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    return "NULL" if value is None else str(value)
