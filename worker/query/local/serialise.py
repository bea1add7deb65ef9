"""Write output records as S3 Select's JSON or CSV output serialisation would.

JSON: one object a line, a newline after each, MISSING fields left out, text values as
strings, numbers as numbers. CSV: fields quoted only when needed, a newline after each record,
NULL and MISSING as empty fields.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from worker.query.local.evaluator import MISSING, Output


def serialise(rows: Iterable[Output], rows_format: str) -> str:
    """Serialise every output record into one text, in ``rows_format`` ("json" or "csv")."""
    return _json_lines(rows) if rows_format == "json" else _csv(rows)


def _json_lines(rows: Iterable[Output]) -> str:
    encode = json.JSONEncoder(
        ensure_ascii=False, separators=(",", ":"), default=_json_number
    ).encode
    parts = []
    for names, values in rows:
        parts.append(
            encode({n: v for n, v in zip(names, values, strict=False) if v is not MISSING})
        )
    parts.append("")
    return "\n".join(parts) if len(parts) > 1 else ""


def _json_number(value: Any) -> Any:
    """Decimals (from DECIMAL literals, CASTs and AVG) as JSON numbers."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _csv(rows: Iterable[Output]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for _names, values in rows:
        writer.writerow([v if type(v) is str else _csv_text(v) for v in values])
    return buffer.getvalue()


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
