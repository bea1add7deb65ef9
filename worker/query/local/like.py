"""LIKE without backtracking: the pattern split at its %s, each piece found once, leftmost.

Translated to a regex (``%`` as ``.*``), a pattern with k %s makes Python's backtracking matcher
try every way of placing them: ``'%a%a%a%a%a%a%a%a%b'`` against 4000 a's is n^9 steps, hours.
Between two %s everything has a fixed width (``_`` is one character), so a value matches when
the first piece matches at its start, the last one at its end, and every piece between them
somewhere in order; placing each middle piece as far left as it fits is always right (a later
place only leaves less room for the pieces after it), so nothing is ever retried. Each piece
is a regex of literals and ``.``, which matches or fails at a position in at most its width
steps: a value of n characters costs at most n x the pattern's length, and the search is cut in
windows of bounded work so that the item's deadline is checked between them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from worker.query import Deadline, QueryError
from worker.query.local.caps import MAX_LIKE_PATTERN_CHARS

# Start positions tried per window, times a piece's width: about a millisecond of work.
WINDOW_STEPS = 1 << 20


@dataclass(frozen=True)
class LikePattern:
    """A compiled LIKE pattern: the fixed-width pieces around its %s.

    ``whole`` is the one piece of a pattern without %; otherwise ``first`` must match at the
    value's start and ``last`` at its end (None when empty), and each ``middle`` piece, with
    its width and the start positions searched per window, somewhere between them in order.
    """

    whole: re.Pattern[str] | None
    first: re.Pattern[str] | None
    first_width: int
    last: re.Pattern[str] | None
    last_width: int
    middle: tuple[tuple[re.Pattern[str], int, int], ...]

    def matches(self, value: str, deadline: Deadline) -> bool:
        """Whether the whole of ``value`` matches, case-sensitively as in S3 Select."""
        if self.whole is not None:
            return self.whole.fullmatch(value) is not None
        start, end = self.first_width, len(value) - self.last_width
        if end < start:
            return False
        if self.first is not None and self.first.match(value) is None:
            return False
        if self.last is not None and self.last.match(value, end) is None:
            return False
        for piece, width, step in self.middle:
            # Window by window: each one is bounded work, the deadline is checked between them.
            while True:
                stop = start + step - 1 + width
                found = piece.search(value, start, stop if stop < end else end)
                if found is not None:
                    break
                start += step
                if start + width > end:
                    return False
                deadline.check()
            start = found.end()
        return True


@lru_cache(maxsize=256)
def like_pattern(pattern: str, escape: str | None) -> LikePattern:
    """Compile ``pattern``: ``%`` any run of characters, ``_`` one, ``escape`` literal.

    The character after ``escape`` is literal; a pattern ending with it, or longer than
    MAX_LIKE_PATTERN_CHARS, is a QueryError.
    """
    if len(pattern) > MAX_LIKE_PATTERN_CHARS:
        raise QueryError(
            f"a LIKE pattern of {len(pattern)} characters; the local engine accepts at most "
            f"{MAX_LIKE_PATTERN_CHARS}"
        )
    pieces: list[list[str]] = [[]]
    chars = iter(pattern)
    for char in chars:
        if char == escape:
            following = next(chars, None)
            if following is None:
                raise QueryError(f"a LIKE pattern ends with its escape character {escape!r}")
            pieces[-1].append(re.escape(following))
        elif char == "%":
            pieces.append([])
        elif char == "_":
            pieces[-1].append(".")
        else:
            pieces[-1].append(re.escape(char))
    if len(pieces) == 1:
        return LikePattern(_compiled(pieces[0]), None, 0, None, 0, ())
    first, *middle, last = pieces
    return LikePattern(
        whole=None,
        first=_compiled(first) if first else None,
        first_width=len(first),
        last=_compiled(last) if last else None,
        last_width=len(last),
        # Empty pieces (from '%%') match anywhere: only non-empty ones are searched.
        middle=tuple((_compiled(p), len(p), max(1, WINDOW_STEPS // len(p))) for p in middle if p),
    )


def _compiled(piece: list[str]) -> re.Pattern[str]:
    """Compile a piece of literals and ``.``: it matches or fails in at most its width steps."""
    return re.compile("".join(piece), re.DOTALL)
