r"""JSON lines on the vectorised fast path: aggregates, and WHERE, over top-level fields.

The object is read a block of whole lines at a time (at most 1 MiB, so every line in a block
is within S3 Select's record cap), each block parsed by ``pyarrow.json.read_json`` with an
explicit schema of only the fields the query reads (other fields are parsed and ignored), and
folded with the CSV fast path's machinery (:class:`.fast.Fold`, :func:`.fast.compile_value`).

pyarrow reads data the evaluator's ``json.loads`` per line reads otherwise, so a block is used
only once these hold, else the query is handed back (:class:`.fastplan.Declined`); each was
measured against pyarrow 26 (docs/query-engine.md, "JSON lines"):

* one object per line: after JSON's whitespace, every line that is not blank starts with
  ``{`` and ends with ``}``, and Arrow's rows are as many as those lines. Strings cannot hold a
  raw newline (both parsers refuse it), so no object can span lines, and a line holding two
  objects (which Arrow reads as two rows) shows in the count;
* the bytes are UTF-8 (Arrow does not check), and no line nests past the evaluator's depth
  cap or holds a digit run Python's ``int`` refuses (Arrow reads both in an ignored field);
* each field read is of one kind at a time: null (every value so far null or missing), then
  integers (int64: Arrow refuses ``2.5``, ``1e3`` and integers past 64 bits, which the
  evaluator reads as floats or exact integers), then floats (float64, where a whole number
  may have been written ``1`` or ``1.0``: :class:`_JsonFold` keeps the evaluator's types);
  or text (Arrow refuses lone surrogates). A block a field's kind cannot read is read with the
  kinds it may still turn to; any other value (a boolean, an object, text after numbers)
  declines;
* the evaluator finds an unquoted field in any case when the exact name is absent: a block
  where such a field has nulls and may spell its name another way (another case, a ``\u``
  escape) declines.

A null and a missing field are both Arrow's null: aggregates and comparisons skip both, as
the evaluator does, and rows (where MISSING would be left out) stay with the evaluator.
Duplicate keys in a read field, which ``json.loads`` resolves to the last, fail Arrow's read.
"""

from __future__ import annotations

import io
import json
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import json as arrow_json

from worker.messages import InputFormat
from worker.query import Deadline
from worker.query.local import sql
from worker.query.local.caps import MAX_JSON_DEPTH, MAX_RECORD_CHARS
from worker.query.local.evaluator import JsonLayout
from worker.query.local.fast import Fold, compile_value, masked, opened
from worker.query.local.fastplan import (
    MAX_EXACT_INT,
    Declined,
    json_field,
    literal_kind,
    literal_value,
)
from worker.query.local.reader import RangedObject
from worker.query.local.serialise import serialise

# A block is at most a record's cap: a line that does not end within it may pass the cap, and
# is declined for the evaluator to measure in characters (it refuses it in S3 Select's words).
BLOCK_BYTES = MAX_RECORD_CHARS
_BOM = b"\xef\xbb\xbf"  # the evaluator's utf-8-sig drops it at the object's start only
_JSON_SPACE = b" \t\r"  # with the newline, all the whitespace JSON allows between tokens
_OPENINGS_AND_NEWLINES = bytes(b for b in range(256) if b not in b"{[\n")
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
# The escapes that could spell an ASCII letter (\u0041-\u007a) or a Kelvin sign, which
# str.lower() makes "k"; and the Kelvin sign itself in UTF-8. It is the one character beyond
# ASCII that lowers to an ASCII letter alone (U+0130 lowers to "i" and a combining dot).
_ESCAPED_LETTER = re.compile(rb"\\u00[4-7]|\\u212[aA]")
_KELVIN = "\u212a".encode()
# A field's kind so far: "null" while every value read was null or missing.
FieldKind = Literal["null", "int", "float", "text"]
_TYPES: dict[FieldKind, pa.DataType] = {
    "null": pa.null(),
    "int": pa.int64(),
    "float": pa.float64(),
    "text": pa.string(),
}
# The kinds a field of one kind may show in a later block: integers that meet a float in the
# field are read as floats from then on (json.loads reads 1 and 2.5 as an int and a float).
_LATER: dict[FieldKind, tuple[FieldKind, ...]] = {
    "null": ("null", "int", "float", "text"),
    "int": ("int", "float"),
    "float": ("float",),
    "text": ("text",),
}


def chunks(
    source: RangedObject, fmt: InputFormat, plan: sql.Plan, rows_format: str, deadline: Deadline
) -> Iterator[str]:
    """Yield the aggregate's one output record; raise Declined where it cannot be exact.

    :func:`.fastplan.refusal` admitted the plan: aggregates of top-level fields, a WHERE of
    comparisons. Nothing is output before the last block is folded.
    """
    if plan.limit == 0:
        return
    fields = _Fields(plan)
    scan = _Scan(plan, fields)
    for block in _blocks(opened(source, fmt)):
        deadline.check()
        lines = _checked_lines(block)
        table = scan.parsed(block)
        if table.num_rows != lines:
            raise Declined("a line holds other than one JSON object")
        _check_spellings(block, fields, table)
        deadline.records += table.num_rows
        try:
            scan.fold(table, block)
        except pa.ArrowException as error:  # e.g. two fields compared, null so far in both
            raise Declined(f"Arrow cannot compute this ({type(error).__name__})") from None
    names = [p.name for p in plan.projections or ()]
    yield from serialise([(names, [fold.result() for fold in scan.folds])], rows_format)


class _Fields:
    """The top-level fields the query reads, each a position in the batch (``f0``, ``f1``...).

    Also the layout :func:`.fast.compile_value` resolves columns with.
    """

    def __init__(self, plan: sql.Plan) -> None:
        self.names: list[str] = []
        self.unquoted: set[str] = set()  # read by unquoted names: found in any case
        stack: list[object] = [plan.where, *(p.expr for p in plan.projections or ())]
        while stack:
            node = stack.pop()
            if isinstance(node, sql.Column):
                name = json_field(node)
                if name not in self.names:
                    self.names.append(name)
                step = node.path[0]
                if isinstance(step, tuple) and not step[1] and name.lower() != name.upper():
                    self.unquoted.add(name)
            elif hasattr(node, "__dataclass_fields__"):
                stack += [getattr(node, name) for name in node.__dataclass_fields__]
            elif isinstance(node, tuple):
                stack += node

    def position(self, column: sql.Column) -> int:
        """Return the batch position of the field ``column`` names."""
        return self.names.index(json_field(column))


def _blocks(stream: io.BufferedReader) -> Iterator[bytes]:
    """Yield the object's bytes a block of whole lines at a time (the last may lack its newline)."""
    carry = b""
    first = True
    while True:
        wanted = BLOCK_BYTES - len(carry)
        data = stream.read(wanted)
        ended = len(data) < wanted  # a buffered read is short only at the end
        if first:
            data, first = data.removeprefix(_BOM), False
        buffer = carry + data
        if ended:
            if buffer:
                yield buffer
            return
        end = buffer.rfind(b"\n") + 1
        if not end:
            raise Declined(f"a line does not end within {BLOCK_BYTES} bytes")
        yield buffer[:end]
        carry = buffer[end:]


def _checked_lines(block: bytes) -> int:
    """Return the block's lines that hold an object, once it is known to be read alike.

    Declined where Arrow could read the block otherwise than the evaluator does: bytes that
    are not UTF-8, a line not shaped as one object, nesting or digits past Python's caps, a
    field's name spelled another way (:func:`_check_spellings`, once parsed).
    """
    try:
        block.decode("utf-8")  # as the evaluator decodes: Arrow passes bytes that are not
    except UnicodeDecodeError:
        raise Declined("the object is not UTF-8 text") from None
    openings = block.translate(None, _OPENINGS_AND_NEWLINES)  # a line's brackets, { and [
    if re.search(rb"(?m)^[^\n]{%d}" % (MAX_JSON_DEPTH + 1), openings):
        raise Declined(f"a line may nest JSON deeper than {MAX_JSON_DEPTH} levels")
    lines = pc.list_flatten(pc.split_pattern(pa.array([block], pa.binary()), b"\n"))
    digits = sys.get_int_max_str_digits()  # only a line longer than that can hold them
    longest = pc.max(pc.binary_length(lines)).as_py()
    if digits and longest > digits and b"0" * (digits + 1) in block.translate(_DIGITS_AS_ZERO):
        raise Declined(f"a line holds a number longer than {digits} digits")
    trimmed = pc.utf8_trim(lines.cast(pa.string()), _JSON_SPACE.decode())
    filled = pc.not_equal(pc.binary_length(trimmed), 0)
    shaped = pc.and_(pc.starts_with(trimmed, "{"), pc.ends_with(trimmed, "}"))
    if not pc.all(pc.or_(pc.invert(filled), shaped)).as_py():
        raise Declined("a line is not one JSON object")
    return pc.sum(filled).as_py() or 0


def _check_spellings(block: bytes, fields: _Fields, table: pa.Table) -> None:
    """Decline if an unquoted field's name may be written in another case in ``block``.

    The evaluator reads ``s.name`` from a key in any case when ``name`` itself is absent;
    Arrow reads the exact key only. Where Arrow has a value, the exact key is there and both
    read it: only a field with nulls in the block is looked for. Counting ``"name"`` against
    its case-folded spellings finds any other case of it (as a key or a value: declining is
    then merely cautious); escapes and the Kelvin sign could spell a letter without showing
    in the count.
    """
    names = [
        name
        for position, name in enumerate(fields.names)
        if name in fields.unquoted and table.column(position).null_count
    ]
    if not names:
        return
    if _ESCAPED_LETTER.search(block) or _KELVIN in block:
        raise Declined("a field's name may be spelled with escapes")
    folded = block.lower()
    for name in names:
        exact, lowered = f'"{name}"'.encode(), f'"{name.lower()}"'.encode()
        if folded.count(lowered) != block.count(exact):
            raise Declined(f"the field {name!r} may be written in another case")


def _field_kinds(block: bytes, names: list[str], kinds: list[FieldKind]) -> list[FieldKind]:
    """Return each field's kind in ``block``: the first of its possible kinds that reads it.

    Declined for a field no kind reads (a boolean, an object, text after numbers).
    """
    found: list[FieldKind] = []
    for name, kind in zip(names, kinds, strict=True):
        for candidate in _LATER[kind]:
            try:
                _read(block, pa.schema([(name, _TYPES[candidate])]))
            except pa.ArrowInvalid:
                continue
            found.append(candidate)
            break
        else:
            raise Declined(f"the field {name!r} holds a value json.loads reads otherwise")
    return found


def _read(block: bytes, schema: pa.Schema) -> pa.Table:
    return arrow_json.read_json(
        pa.BufferReader(block),
        read_options=arrow_json.ReadOptions(use_threads=False, block_size=len(block) + 1),
        parse_options=arrow_json.ParseOptions(
            explicit_schema=schema, unexpected_field_behavior="ignore", newlines_in_values=False
        ),
    )


class _Scan:
    """The query's WHERE and aggregates over blocks, with each field's kind so far."""

    def __init__(self, plan: sql.Plan, fields: _Fields) -> None:
        self._names = fields.names
        self._kinds: list[FieldKind] = ["null"] * len(fields.names)
        self._where = compile_value(plan.where, fields) if plan.where is not None else None
        self._where_node = plan.where
        self._fields = fields
        self._compared = sorted(
            {fields.position(c) for c in _columns(plan.where)} if plan.where else set()
        )
        self.folds = [_JsonFold(p.expr, fields) for p in plan.projections or ()]

    def parsed(self, block: bytes) -> pa.Table:
        """Return the block's rows, their fields named by position (``f0``, ``f1``...)."""
        try:
            table = _read(block, self._schema())
        except pa.ArrowInvalid:  # its messages quote the data: logs name only the kind
            kinds = _field_kinds(block, self._names, self._kinds)
            if kinds == self._kinds:
                raise Declined("Arrow cannot read a block as json.loads does") from None
            self._kinds = kinds
            self._check_kinds()
            try:
                table = _read(block, self._schema())
            except pa.ArrowInvalid:
                raise Declined("Arrow cannot read a block as json.loads does") from None
        # A table, not a batch: with no field read (COUNT(*)) it still counts the rows.
        table = table.rename_columns([f"f{i}" for i in range(len(self._names))])
        for position in self._compared:
            _check_compared(table.column(position))
        return table

    def _schema(self) -> pa.Schema:
        return pa.schema(
            [(name, _TYPES[kind]) for name, kind in zip(self._names, self._kinds, strict=True)]
        )

    def _check_kinds(self) -> None:
        """Decline text compared with a number, or summed: the evaluator's error, not ours."""
        for node in _comparisons(self._where_node):
            kinds = set()
            for operand in _operands(node):
                if isinstance(operand, sql.Column):
                    kinds.add(self._kinds[self._fields.position(operand)])
                else:
                    kinds.add(literal_kind(literal_value(operand)))
            kinds.discard("null")  # NULL compares with anything (as NULL)
            if len(kinds) > 1 and "text" in kinds:
                raise Declined(f"{sql.describe(node)} compares text with a number")
        for fold in self.folds:
            fold.check_kind(self._kinds)

    def fold(self, table: pa.Table, block: bytes) -> None:
        """Add the rows WHERE keeps (TRUE, not NULL) to every aggregate."""
        selected = masked(self._where, table)

        def line(row: int) -> bytes:
            """Return the text of ``selected``'s ``row``: the block's line that holds it."""
            if self._where is not None and selected.num_rows != table.num_rows:
                kept = pc.fill_null(self._where(table), False)
                row = pc.indices_nonzero(kept)[row].as_py()
            return [text for text in block.split(b"\n") if text.strip(_JSON_SPACE)][row]

        for fold in self.folds:
            fold.add(selected, line)


def _comparisons(node: sql.Expr | None) -> Iterator[Any]:
    """Yield the comparisons (=, BETWEEN, IN...) of a WHERE fastplan admitted."""
    if isinstance(node, sql.Logical):
        for operand in node.operands:
            yield from _comparisons(operand)
    elif isinstance(node, sql.Not):
        yield from _comparisons(node.operand)
    elif node is not None:
        yield node


def _operands(node: Any) -> tuple[sql.Expr, ...]:
    if isinstance(node, sql.Compare):
        return (node.left, node.right)
    if isinstance(node, sql.Between):
        return (node.operand, node.low, node.high)
    return (node.operand, *node.items)


def _columns(node: sql.Expr | None) -> list[sql.Column]:
    return [o for c in _comparisons(node) for o in _operands(c) if isinstance(o, sql.Column)]


def _check_compared(values: pa.ChunkedArray) -> None:
    """Decline numbers that do not compare exactly in float64 as in Python.

    Integers past 2**53 (an integer field compared with a FLOAT; or one read as a float, whose
    exact value json.loads keeps), NaN and infinities (Python's comparisons of them).
    """
    if not pa.types.is_integer(values.type) and not pa.types.is_floating(values.type):
        return
    extremes = pc.min_max(values)
    low, high = extremes["min"].as_py(), extremes["max"].as_py()
    if low is not None and max(-low, high) >= MAX_EXACT_INT:
        raise Declined("a number too large to compare exactly")
    if pa.types.is_floating(values.type) and not pc.all(pc.is_finite(values)).as_py():
        raise Declined("a number compared is not finite")


class _JsonFold:
    """One aggregate of a JSON field, whose numbers json.loads types by how each is written.

    ``1`` is an INT and ``1.0`` or ``1e0`` a FLOAT to the evaluator; Arrow reads a field that
    holds both as float64, so a whole number there may have been either. COUNT, SUM and AVG
    fold with :class:`.fast.Fold`, exact where that cannot show: a SUM or AVG is a FLOAT once
    a value with a fraction is added (before it, whole numbers add exactly in both while their
    magnitudes sum under 2**53); a SUM of only whole numbers read as floats could be either
    type, and declines. MIN and MAX keep the value itself: a whole number read as a float (or
    a zero, whose sign the evaluator keeps from the first of equal values) is taken from its
    line as json.loads reads it.
    """

    def __init__(self, node: sql.Expr, fields: _Fields) -> None:
        assert isinstance(node, sql.Aggregate)  # Plan.aggregate guarantees it
        self._function = node.function
        self._position = None if node.operand is None else fields.position(node.operand)
        self._get = JsonLayout().column(node.operand.path) if node.operand else None
        self._fold = Fold(node, None if self._position is None else self._values)
        self._best: Any = None  # MIN or MAX so far, as the evaluator has it
        self._floats_added = False  # a value read as a float was added: maybe a FLOAT
        self._fraction_added = False  # a value with a fraction was added: surely a FLOAT
        self._whole_magnitudes = 0.0  # of the values added before the first fraction

    def _values(self, table: pa.Table) -> pa.ChunkedArray:
        return pc.drop_null(table.column(self._position))

    def check_kind(self, kinds: list[FieldKind]) -> None:
        """Decline SUM or AVG of text: the evaluator's error."""
        position, summed = self._position, self._function in ("SUM", "AVG")
        if position is not None and summed and kinds[position] == "text":
            raise Declined(f"{self._function} of text")

    def add(self, table: pa.Table, line: Callable[[int], bytes]) -> None:
        """Fold the rows WHERE kept; Declined where the evaluator's answer could differ.

        ``line`` returns the text of one of ``table``'s rows.
        """
        values = self._values(table) if self._position is not None else None
        if values is not None and len(values):
            floats = pa.types.is_floating(values.type)
            if floats and not pc.all(pc.is_finite(values)).as_py():
                raise Declined(f"{self._function} of a value that is not finite")
            if self._function in ("MIN", "MAX"):
                self._add_best(values, table, line)
                return
            if self._function in ("SUM", "AVG"):
                self._check_sum(values, floats)
        self._fold.add(table)

    def _check_sum(self, values: pa.ChunkedArray, floats: bool) -> None:
        self._floats_added = self._floats_added or floats
        if self._fraction_added:
            return
        whole = values
        if floats:
            first = pc.index(pc.not_equal(values, pc.trunc(values)), True).as_py()
            if first >= 0:
                whole, self._fraction_added = values.slice(0, first), True
        self._whole_magnitudes += (
            pc.sum(pc.abs(whole.cast(pa.float64(), safe=False))).as_py() or 0.0
        )
        if self._floats_added and self._whole_magnitudes >= MAX_EXACT_INT:
            raise Declined(f"{self._function} of whole numbers past 2**53 read as floats")

    def _add_best(
        self, values: pa.ChunkedArray, table: pa.Table, line: Callable[[int], bytes]
    ) -> None:
        """Keep the batch's MIN or MAX if it beats the one so far (ties keep the first)."""
        best = pc.min_max(values)["min" if self._function == "MIN" else "max"].as_py()
        if self._best is not None and not (
            best < self._best if self._function == "MIN" else best > self._best
        ):
            return
        if isinstance(best, float) and best.is_integer() and self._get is not None:
            first = pc.index(table.column(self._position), best).as_py()
            best = self._get(json.loads(line(first)))
        self._best = best

    def result(self) -> Any:
        """Return the aggregate's value, typed as the evaluator types it."""
        if self._function in ("MIN", "MAX") and self._position is not None:
            return self._best
        if self._floats_added and not self._fraction_added:
            raise Declined(f"{self._function} of whole numbers read as floats")
        return self._fold.result()
