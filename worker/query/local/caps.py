"""The local engine's caps: what it refuses so that no input can hold a worker or its memory.

Each cap is enforced while streaming, before the oversized thing is held whole, so the engine's
memory stays bounded by about one record plus the result, and its time stays linear in the
bytes read (the item's deadline bounds the total). The result's own cap, shared with S3 Select,
is :data:`worker.query.MAX_RESULT_BYTES`.
"""

from __future__ import annotations

from worker.query import QueryLimitExceeded

# S3 Select refuses any input or output record longer than this (OverMaxRecordSize), and so
# does the local engine: a record is read a line at a time with this bound, never whole.
MAX_RECORD_CHARS = 1 << 20
OVER_MAX_RECORD_SIZE = (
    "OverMaxRecordSize: The length of a record in the input or result is greater than "
    "maxCharsPerRecord of 1 MB"
)

# JSON records nested deeper than this are refused. Real data rarely passes 20 levels; the cap
# keeps every recursive consumer (the JSON encoder, the custom code's parser) far from
# Python's recursion limit.
MAX_JSON_DEPTH = 64

# sqlglot's parser recurses about 20 Python frames per parenthesis and Python allows 1000, so
# 49 levels overflow it from an empty stack; 32 leaves room for the worker's own frames.
MAX_SQL_PARENS = 32
# Levels of the parsed expression (a chain of ANDs or of ORs is one level, whatever its length):
# the compiler and the evaluator recurse once or twice per level.
MAX_SQL_DEPTH = 64

# Decompression stops at RATIO x the compressed bytes read so far (but always allows FLOOR),
# and at TOTAL in all. Real CSV and JSON deflate 3-20x; deflate cannot pass ~1032x, so a gzip
# bomb is caught by the ratio (bzip2 bombs reach millions x). 64 MiB lets any small object
# through whatever its ratio; 16 GiB is minutes of parsing, well past any sane source.
DECOMPRESSION_RATIO = 100
DECOMPRESSION_FLOOR = 64 << 20
MAX_DECOMPRESSED_BYTES = 16 << 30

# Integers made by the engine (literals, CAST AS INT, arithmetic, SUM) stay under 10**38, the
# precision of S3 Select's DECIMAL (its INT is 64-bit): Python's integers are unbounded, and
# converting a huge one to text is quadratic.
MAX_INT_DIGITS = 38
INT_LIMIT = 10**MAX_INT_DIGITS
# Text longer than this is not read as a number (literals, CAST from text): every number in
# range is far shorter, and reading long digit strings costs quadratic time.
MAX_NUMBER_CHARS = 100

# LIKE costs at most the value's length times the pattern's (see :mod:`.like`), and each
# compiled pattern stays in ``re``'s cache of 512: patterns, which may come from records
# (``s.a LIKE s.b``), are capped so that both stay small. Real patterns are a few dozen.
MAX_LIKE_PATTERN_CHARS = 1024


def over_max_record_size(where: str) -> QueryLimitExceeded:
    """Return S3 Select's refusal of a record over 1 MiB, word for word, and where it was."""
    return QueryLimitExceeded(f"{OVER_MAX_RECORD_SIZE} ({where})")


def too_deep(where: str) -> QueryLimitExceeded:
    """Return the refusal of a JSON record nested deeper than :data:`MAX_JSON_DEPTH`."""
    return QueryLimitExceeded(f"{where} nests JSON deeper than {MAX_JSON_DEPTH} levels; refused")
