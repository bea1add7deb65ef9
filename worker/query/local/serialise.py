"""Write output records as S3 Select's JSON or CSV output serialisation would.

JSON: one object a line, a newline after each, MISSING fields left out, text values as
strings, numbers as numbers. CSV: fields quoted only when needed, a newline after each record,
NULL and MISSING as empty fields.

The output is produced as it is read, in chunks of whole records, so a result of any size
streams to the custom code without being held. A record over 1 MiB is refused as S3 Select
refuses it (OverMaxRecordSize), before it is passed on; the whole result is capped only where
it is joined into one string (:func:`worker.query.join_capped`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from typing import Any

from worker.query import QueryError
from worker.query.local.caps import MAX_INT_DIGITS, MAX_RECORD_CHARS, over_max_record_size
from worker.query.local.evaluator import MISSING, Output

# A chunk is handed on once it holds this many characters: one pipe's worth for a command
# handler, and few enough pieces that their overhead does not count.
CHUNK_CHARS = 64 * 1024


def serialise(rows: Iterable[Output], rows_format: str, first_number: int = 1) -> Iterator[str]:
    """Yield the output records' text in ``rows_format`` ("json" or "csv"), in chunks.

    ``first_number`` is the first record's number in errors (the fast path serialises here
    the batches it cannot render itself, part way through a result).
    """
    render = _json_record() if rows_format == "json" else _csv_record()
    pieces: list[str] = []
    buffered = 0
    for number, row in enumerate(rows, start=first_number):
        text = render(row, number)
        if len(text) - 1 > MAX_RECORD_CHARS:  # the record's newline is not part of it
            raise over_max_record_size(f"output record {number}")
        pieces.append(text)
        buffered += len(text)
        if buffered >= CHUNK_CHARS:
            yield "".join(pieces)
            pieces, buffered = [], 0
    if pieces:
        yield "".join(pieces)


def _json_record() -> Callable[[Output, int], str]:
    encode = json.JSONEncoder(
        ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_json_number
    ).encode

    def render(row: Output, number: int) -> str:
        names, values = row
        record = {n: v for n, v in zip(names, values, strict=False) if v is not MISSING}
        try:
            return encode(record) + "\n"
        except ValueError:  # JSON has no infinities or NaN (1e999 in the data, overflows)
            raise QueryError(
                f"output record {number} holds a number JSON cannot represent (infinite or NaN)"
            ) from None

    return render


def _json_number(value: Any) -> Any:
    """Decimals (from DECIMAL literals, CASTs and AVG) as JSON numbers.

    Whole decimals in the engine's integer range are written as integers; others as floats
    (never ``int()`` of ``Decimal('1e999999')``, a million digits).
    """
    if isinstance(value, Decimal):
        whole = value.is_finite() and value.adjusted() < MAX_INT_DIGITS
        return int(value) if whole and value == value.to_integral_value() else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class _LastWrite:
    """A file for ``csv.writer`` that keeps only what was written last: one whole record."""

    text = ""

    def write(self, text: str) -> None:
        """Keep ``text``."""
        self.text = text


def _csv_record() -> Callable[[Output, int], str]:
    target = _LastWrite()
    writer = csv.writer(target, lineterminator="\n")

    def render(row: Output, number: int) -> str:
        writer.writerow([v if type(v) is str else _csv_text(v) for v in row[1]])
        return target.text

    return render


def _csv_text(value: Any) -> str:
    if value is None or value is MISSING:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, float):
        return repr(value)
    return str(value)
