"""The LIMIT cap: the custom code never receives more records than the query's LIMIT.

Real S3 Select honours LIMIT; moto's emulation ignores it, and an engine's answer is only
trusted as far as it can be checked, so S3 Select's output is cut to LIMIT records here.
"""

from __future__ import annotations

import re

from worker.query import QueryUnsupported
from worker.query.local.sql import limit_value, parse_select

# In S3 Select's CSV output (QuoteCharacter '"', RecordDelimiter "\n") a newline ends a record
# only outside quotes; a doubled quote inside quotes toggles twice, so counting quotes works.
_CSV_TOKENS = re.compile(r'["\n]')


def declared_limit(sql: str) -> int | None:
    """Return the query's ``LIMIT n``, or None if it has none or it cannot be parsed safely.

    S3 Select may run SQL the local engine refuses, so a refusal here only means "no cap".
    """
    try:
        return limit_value(parse_select(sql).args.get("limit"))
    except QueryUnsupported:
        return None


def cap_records(text: str, rows_format: str, limit: int | None) -> str:
    """Keep the first ``limit`` records of S3 Select output ``text`` (all if limit is None)."""
    if limit is None:
        return text
    if limit == 0:
        return ""
    seen = 0
    if rows_format == "json":  # JSON output never has a raw newline inside a record
        end = -1
        while seen < limit:
            end = text.find("\n", end + 1)
            if end == -1:
                return text
            seen += 1
        return text[: end + 1]
    quoted = False
    for token in _CSV_TOKENS.finditer(text):
        if token.group() == '"':
            quoted = not quoted
        elif not quoted:
            seen += 1
            if seen == limit:
                return text[: token.end()]
    return text
