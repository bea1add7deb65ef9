r"""JSON lines on the vectorised fast path: aggregates, and WHERE, over top-level fields.

The object is read a block of whole lines at a time (at most 1 MiB, so every line in a block
is within S3 Select's record cap), each block parsed by ``pyarrow.json.read_json`` with an
explicit schema of only the fields the query reads (other fields are parsed and ignored), and
folded with the CSV fast path's machinery (:class:`.fast.Fold`, :func:`.fast._compile`).

pyarrow reads data the evaluator's ``json.loads`` per line reads otherwise, so a block is used
only once these hold, else the query is handed back (:class:`.fastplan.Declined`); each was
measured against pyarrow 26 (docs/query-engine.md, "JSON lines"):

* one object per line: after JSON's whitespace, every line that is not blank starts with
  ``{`` and ends with ``}``, and Arrow's rows are as many as those lines. Strings cannot hold a
  raw newline (both parsers refuse it), so no object can span lines, and a line holding two
  objects (which Arrow reads as two rows) shows in the count;
* the bytes are UTF-8 (Arrow does not check), and no line nests past the evaluator's depth
  cap or holds a digit run Python's ``int`` refuses (Arrow reads both in an ignored field);
* each field read has one type in the whole object, fixed by the first block: integers
  (int64: Arrow refuses ``2.5``, ``1e3`` and integers past 64 bits, all of which the evaluator
  reads as floats or exact integers), or text (Arrow refuses lone surrogates); any other
  value (a boolean, an object, a float) fails the read and declines;
* the evaluator finds an unquoted field in any case when the exact name is absent: a block
  that may spell a field's name another way (another case, a ``\u`` escape) declines.

A null and a missing field are both Arrow's null: aggregates and comparisons skip both, as
the evaluator does, and rows (where MISSING would be left out) stay with the evaluator.
Duplicate keys in a read field, which ``json.loads`` resolves to the last, fail Arrow's read.
"""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import json as arrow_json

from worker.messages import InputFormat
from worker.query import Deadline
from worker.query.local import sql
from worker.query.local.caps import MAX_JSON_DEPTH, MAX_RECORD_CHARS
from worker.query.local.fast import Fold, Value, _compile, _mask, opened
from worker.query.local.fastplan import (
    MAX_EXACT_INT,
    Declined,
    Kind,
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
# str.lower() makes "k"; and the Kelvin sign itself in UTF-8.
_ESCAPED_LETTER = re.compile(rb"\\u00[4-7]|\\u212[aA]")
_KELVIN = "\u212a".encode()
_TYPES: dict[Kind, pa.DataType] = {"int": pa.int64(), "text": pa.string()}


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
    scan: _Scan | None = None
    for block in _blocks(opened(source, fmt)):
        deadline.check()
        lines = _checked_lines(block, fields)
        if scan is None:
            scan = _Scan(plan, fields, _field_kinds(block, fields))
        batch = scan.parsed(block)
        if batch.num_rows != lines:
            raise Declined("a line holds other than one JSON object")
        deadline.records += batch.num_rows
        scan.fold(batch)
    folds = scan.folds if scan else _Scan(plan, fields, {}).folds
    names = [p.name for p in plan.projections or ()]
    yield from serialise([(names, [fold.result() for fold in folds])], rows_format)


class _Fields:
    """The top-level fields the query reads, each a position in the batch (``f0``, ``f1``...).

    Also the layout :func:`.fast._compile` resolves columns with.
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
        data = stream.read(BLOCK_BYTES - len(carry))
        if first:
            data, first = data.removeprefix(_BOM), False
        buffer = carry + data
        if not data:
            if buffer:
                yield buffer
            return
        end = buffer.rfind(b"\n") + 1
        if not end:
            raise Declined(f"a line does not end within {BLOCK_BYTES} bytes")
        yield buffer[:end]
        carry = buffer[end:]


def _checked_lines(block: bytes, fields: _Fields) -> int:
    """Return the block's lines that hold an object, once it is known to be read alike.

    Declined where Arrow could read the block otherwise than the evaluator does: bytes that
    are not UTF-8, a line not shaped as one object, nesting or digits past Python's caps, a
    field's name spelled another way.
    """
    try:
        block.decode("utf-8")  # as the evaluator decodes: Arrow passes bytes that are not
    except UnicodeDecodeError:
        raise Declined("the object is not UTF-8 text") from None
    openings = block.translate(None, _OPENINGS_AND_NEWLINES)  # a line's brackets, { and [
    if re.search(rb"(?m)^[^\n]{%d}" % (MAX_JSON_DEPTH + 1), openings):
        raise Declined(f"a line may nest JSON deeper than {MAX_JSON_DEPTH} levels")
    digits = sys.get_int_max_str_digits()
    if digits and b"0" * (digits + 1) in block.translate(_DIGITS_AS_ZERO):
        raise Declined(f"a line holds a number longer than {digits} digits")
    if fields.unquoted:
        _check_spellings(block, fields.unquoted)
    squeezed = pa.array([block.translate(None, _JSON_SPACE)], pa.binary())
    lines = pc.list_flatten(pc.split_pattern(squeezed, b"\n"))
    filled = pc.not_equal(pc.binary_length(lines), 0)
    shaped = pc.and_(pc.starts_with(lines, "{"), pc.ends_with(lines, "}"))
    if not pc.all(pc.or_(pc.invert(filled), shaped)).as_py():
        raise Declined("a line is not one JSON object")
    return pc.sum(filled).as_py() or 0


def _check_spellings(block: bytes, names: set[str]) -> None:
    """Decline if an unquoted field's name may be written in another case in ``block``.

    The evaluator reads ``s.name`` from a key in any case when ``name`` itself is absent;
    Arrow reads the exact key only. Counting ``"name"`` against its case-folded spellings
    finds any other case of it (as a key or a value: declining is then merely cautious);
    escapes and the Kelvin sign could spell a letter without showing in the count.
    """
    if _ESCAPED_LETTER.search(block) or _KELVIN in block:
        raise Declined("a field's name may be spelled with escapes")
    folded = block.lower()
    for name in names:
        exact, lowered = f'"{name}"'.encode(), f'"{name.lower()}"'.encode()
        if folded.count(lowered) != block.count(exact):
            raise Declined(f"the field {name!r} may be written in another case")


def _field_kinds(block: bytes, fields: _Fields) -> dict[str, Kind]:
    """Return each field's kind from the first block: the first type that reads it whole.

    A field null or missing throughout reads as integers; should it hold text later, that
    block's read fails and declines.
    """
    kinds: dict[str, Kind] = {}
    for name in fields.names:
        for kind, data_type in _TYPES.items():
            try:
                _read(block, pa.schema([(name, data_type)]))
            except pa.ArrowInvalid:
                continue
            kinds[name] = kind
            break
        else:
            raise Declined(f"the field {name!r} holds values other than integers or text")
    return kinds


def _read(block: bytes, schema: pa.Schema) -> pa.Table:
    return arrow_json.read_json(
        pa.BufferReader(block),
        read_options=arrow_json.ReadOptions(use_threads=False, block_size=len(block) + 1),
        parse_options=arrow_json.ParseOptions(
            explicit_schema=schema, unexpected_field_behavior="ignore", newlines_in_values=False
        ),
    )


class _Scan:
    """The query's WHERE and folds, for fields of the kinds the first block showed."""

    def __init__(self, plan: sql.Plan, fields: _Fields, kinds: dict[str, Kind]) -> None:
        self._kinds = [kinds.get(name, "int") for name in fields.names]
        self._names = fields.names
        self._read_schema = pa.schema(
            [(name, _TYPES[kind]) for name, kind in zip(fields.names, self._kinds, strict=True)]
        )
        self._compared: list[int] = []  # the integer fields WHERE compares
        self._where: Value | None = None
        if plan.where is not None:
            self._check_kinds(plan.where, fields)
            self._where = _compile(plan.where, fields)
        self.folds = [self._fold(p.expr, fields) for p in plan.projections or ()]

    def _fold(self, node: sql.Expr, fields: _Fields) -> Fold:
        assert isinstance(node, sql.Aggregate)  # Plan.aggregate guarantees it
        if node.operand is None:
            return Fold(node, None, "int")
        position = fields.position(node.operand)  # type: ignore[arg-type]  # fastplan: a column
        kind = self._kinds[position]
        if kind == "text" and node.function in ("SUM", "AVG"):
            raise Declined(f"{node.function} of text")  # the evaluator's error
        return Fold(node, lambda batch: pc.drop_null(batch.column(position)), kind)

    def _check_kinds(self, node: Any, fields: _Fields) -> None:
        """Decline a comparison of text with a number: the evaluator's error, not ours."""
        if isinstance(node, (sql.Logical, sql.Not)):
            for operand in node.operands if isinstance(node, sql.Logical) else (node.operand,):
                self._check_kinds(operand, fields)
            return
        operands = (
            (node.left, node.right)
            if isinstance(node, sql.Compare)
            else (node.operand, node.low, node.high)
            if isinstance(node, sql.Between)
            else (node.operand, *node.items)
        )
        kinds = set()
        for operand in operands:
            if isinstance(operand, sql.Column):
                position = fields.position(operand)
                kinds.add(self._kinds[position])
                if self._kinds[position] == "int":
                    self._compared.append(position)
            else:
                kinds.add(literal_kind(literal_value(operand)))
        if len(kinds) > 1 and "text" in kinds:
            raise Declined(f"{sql.describe(node)} compares text with a number")

    def parsed(self, block: bytes) -> pa.Table:
        """Return the block's rows, their fields named by position (``f0``, ``f1``...)."""
        try:
            table = _read(block, self._read_schema)
        except pa.ArrowInvalid:  # its messages quote the data: logs name only the kind
            raise Declined(
                "Arrow cannot read a block as json.loads does (a value of another type, "
                "or not JSON)"
            ) from None
        # A table, not a batch: with no field read (COUNT(*)) it still counts the rows.
        batch = table.rename_columns([f"f{i}" for i in range(len(self._names))])
        for position in self._compared:
            extremes = pc.min_max(batch.column(position))
            low, high = extremes["min"].as_py(), extremes["max"].as_py()
            if low is not None and max(-low, high) >= MAX_EXACT_INT:
                raise Declined("an INT too large to compare exactly with a FLOAT")
        return batch

    def fold(self, batch: pa.Table) -> None:
        """Add the rows WHERE keeps (TRUE, not NULL) to every aggregate."""
        selected = _mask(self._where, batch)
        for fold in self.folds:
            fold.add(selected)
