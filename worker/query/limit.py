"""The LIMIT cap: the custom code never receives more records than the query's LIMIT.

Real S3 Select honours LIMIT; moto's emulation ignores it, and an engine's answer is only
trusted as far as it can be checked, so S3 Select's output is cut to LIMIT records here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from worker.query import QueryUnsupported
from worker.query.local.sql import limit_value, parse_select

# In S3 Select's CSV output (QuoteCharacter '"', RecordDelimiter "\n") a newline ends a record
# only outside quotes; a doubled quote inside quotes toggles twice, so counting quotes works.
_CSV_TOKENS = re.compile(r'["\n]')
# JSON output never has a raw newline inside a record.
_JSON_TOKENS = re.compile(r"\n")


def declared_limit(sql: str) -> int | None:
    """Return the query's ``LIMIT n``, or None if it has none or it cannot be parsed safely.

    S3 Select may run SQL the local engine refuses, so a refusal here only means "no cap".
    """
    try:
        return limit_value(parse_select(sql).args.get("limit"))
    except QueryUnsupported:
        return None


def cap_records(chunks: Iterable[str], rows_format: str, limit: int | None) -> Iterator[str]:
    """Pass on S3 Select output up to the end of record ``limit`` (all if None), then stop.

    Works on the stream as it arrives: a record may be split across chunks, and nothing after
    the last record kept is pulled from ``chunks``.
    """
    if limit is None:
        yield from chunks
        return
    if limit == 0:
        return
    tokens = _JSON_TOKENS if rows_format == "json" else _CSV_TOKENS
    seen = 0
    quoted = False
    for chunk in chunks:
        for token in tokens.finditer(chunk):
            if token.group() == '"':
                quoted = not quoted
            elif not quoted:
                seen += 1
                if seen == limit:
                    yield chunk[: token.end()]
                    return
        yield chunk
