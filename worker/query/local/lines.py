"""Output lines (JSON lines or CSV) written from Arrow columns, as :mod:`.serialise` writes them.

Both vectorised paths (:mod:`.fast` for CSV input, :mod:`.parquet_vector`) write their rows
here: each column becomes text with one Arrow cast, and each batch's lines come from one
``binary_join_element_wise`` over the columns and the constant text between them (names,
quotes, commas). Columns of text, integers, floats and booleans are written; NULL as ``null``
in JSON and as an empty field in CSV. The output must be the serialiser's byte for byte, so a
batch Arrow would write otherwise (text needing JSON escapes or CSV quotes, an empty
one-field CSV record, NaN or an infinity in JSON) is written by the serialiser itself.

A batch with a line that may pass 1 MiB raises :class:`LongLine`: the caller chooses between
declining the query and the serialiser, which refuses such a record in S3 Select's words.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from worker.query.local.caps import MAX_RECORD_CHARS
from worker.query.local.serialise import serialise

# Text that JSON escapes, or that a CSV writer quotes: such batches go to the Python serialiser.
JSON_SPECIAL = bytes(range(0x20)) + b'"\\'
CSV_SPECIAL = b',"\r\n'
# Arrow writes a float's shortest round-trip digits, as repr does, and lays them out as repr
# does for these magnitudes (and zero), less repr's ".0" on whole numbers. Outside them
# (tests/unit/test_query_lines.py) Arrow writes 1e-05 as "0.00001", 1e-07 as "1e-7", 1e10 as
# "1e+10" where repr writes "1e-05", "1e-07", "10000000000.0": those values are repr's own.
ARROW_FLOATS_AS_REPR = (1e-4, 1e10)


class LongLine(Exception):
    """A line of the batch may pass 1 MiB (S3 Select's record limit)."""


class LineWriter:
    """Writes batches of records whose fields have ``names`` in ``rows_format`` (json, csv)."""

    def __init__(self, names: list[str], rows_format: str) -> None:
        self._names, self._format = names, rows_format
        self._json = rows_format == "json"
        self._before = json_prefixes(names) if self._json else ["", *[","] * (len(names) - 1)]

    def text(self, fields: list[pa.Array], first_number: int) -> str:
        """Return a batch's lines (one array a field, the first record numbered ``first_number``).

        LongLine if Arrow would write a line that may pass 1 MiB.
        """
        lines = self._arrow_lines(fields)
        return self.serialised(fields, first_number) if lines is None else joined_lines(lines)

    def serialised(self, fields: list[pa.Array], first_number: int) -> str:
        """Return the batch's lines as the Python serialiser writes them, value by value."""
        records = zip(*(field.to_pylist() for field in fields), strict=True)
        rows = ((self._names, list(record)) for record in records)
        return "".join(serialise(rows, self._format, first_number))

    def _arrow_lines(self, fields: list[pa.Array]) -> pa.Array | None:
        """Return the batch's lines as one string array, or None if Python must write them."""
        parts: list[Any] = []
        for before, field in zip(self._before, fields, strict=True):
            parts.append(before)
            value = self._value_parts(field)
            if value is None:
                return None
            if len(fields) == 1 and not self._json and _any_empty(value[0]):
                return None  # csv.writer quotes the one empty field of a one-field record
            parts += value
        parts.append("}\n" if self._json else "\n")
        return pc.binary_join_element_wise(*_constants_merged(parts), "")

    def _value_parts(self, field: pa.Array) -> list[Any] | None:
        """Return the parts a field's values are written as: its text, then what follows it.

        None if Python must write them.
        """
        null = "null" if self._json else ""
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            if holds_any(field, JSON_SPECIAL if self._json else CSV_SPECIAL):
                return None
            text = field.cast(pa.string())  # joined with string: never past 2 GiB in a batch
            if not self._json:
                return [pc.fill_null(text, null) if text.null_count else text]
            if not text.null_count:
                return ['"', text, '"']
            return [pc.fill_null(pc.binary_join_element_wise('"', text, '"', ""), null)]
        if pa.types.is_floating(field.type):
            written = _float_parts(field.cast(pa.float64()), finite_only=self._json)
            if written is None:
                return None
            text, *after = written
        else:  # integers and booleans: Arrow writes them as Python and json do
            text, after = field.cast(pa.string()), []
        return [pc.fill_null(text, null) if text.null_count else text, *after]


def _float_parts(values: pa.Array, finite_only: bool) -> list[Any] | None:
    """Return floats' text as repr writes it, then the ".0" after whole numbers.

    The text is Arrow's, and repr's own outside the magnitudes where they agree; the ".0" an
    array, or one constant where every value is whole. None if ``finite_only`` and a value
    is NaN or infinite (JSON has no text for them).
    """
    low, high = ARROW_FLOATS_AS_REPR
    text = values.cast(pa.string())
    whole = pc.equal(pc.trunc(values), values)  # NULL: NULL; NaN: False
    magnitude = pc.abs(values)
    extremes = pc.min_max(magnitude)  # NULLs and NaN skipped: None where every value is NULL
    smallest, largest = extremes["min"].as_py(), extremes["max"].as_py()
    outside = smallest is not None and (smallest < low or largest >= high)
    if outside or pc.any(pc.is_nan(values)).as_py():  # zero too: then value by value
        alike = pc.or_(
            pc.and_(pc.greater_equal(magnitude, low), pc.less(magnitude, high)),
            pc.equal(magnitude, 0),
        )  # NaN: False; NULL: NULL
        unlike = pc.invert(pc.fill_null(alike, True))
        odd = values.filter(unlike).to_pylist()
        if finite_only and not all(map(math.isfinite, odd)):
            return None
        if odd:
            reprs = pa.array([repr(value) for value in odd], pa.string())
            text = pc.replace_with_mask(text, unlike, reprs)
        whole = pc.and_(whole, alike)
    if whole.null_count:
        whole = pc.fill_null(whole, False)
    count = pc.sum(whole).as_py()  # None for an empty batch
    if not count:
        return [text]
    if count == len(values):
        return [text, ".0"]
    return [text, pc.if_else(whole, ".0", "")]


def _any_empty(text: pa.Array) -> bool:
    return bool(pc.any(pc.equal(pc.binary_length(text), 0)).as_py())


def _constants_merged(parts: list[Any]) -> list[Any]:
    """Join neighbouring constants: each part of the join costs per row."""
    merged: list[Any] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        else:
            merged.append(part)
    return merged


def json_prefixes(names: list[str]) -> list[str]:
    """Return what comes before each field's value in a JSON line: ``{"a":``, ``,"b":``..."""
    return [
        ("{" if i == 0 else ",") + json.dumps(name, ensure_ascii=False) + ":"
        for i, name in enumerate(names)
    ]


def _values_bytes(text: pa.Array) -> memoryview:
    """Return the bytes of a string array's values, end to end (a slice of its data buffer)."""
    data = text.buffers()[2]
    if data is None or not len(text):
        return memoryview(b"")
    large = pa.types.is_large_string(text.type)
    offsets = pa.Array.from_buffers(
        pa.int64() if large else pa.int32(),
        len(text) + 1,
        [None, text.buffers()[1]],
        offset=text.offset,
    )
    return memoryview(data)[offsets[0].as_py() : offsets[-1].as_py()]


def holds_any(text: pa.Array, characters: bytes) -> bool:
    """Whether a value of a string array holds one of the ASCII ``characters``.

    One pass of ``bytes.translate`` over the bytes of the array's values: Arrow's regex kernel
    took ~4x as long (2 ms against 0.5 ms for 26 000 short texts), on every text column of
    every batch.
    """
    values = _values_bytes(text)
    return len(bytes(values).translate(None, characters)) != len(values)


def joined_lines(lines: pa.Array) -> str:
    """Return a string array's lines as one str; LongLine for a line that may pass 1 MiB.

    The lines lie end to end in the array's data buffer: one slice of it, decoded once.
    """
    if pc.max(pc.binary_length(lines)).as_py() > MAX_RECORD_CHARS:
        raise LongLine("an output record may pass 1 MiB")
    return str(_values_bytes(lines), "utf-8")
