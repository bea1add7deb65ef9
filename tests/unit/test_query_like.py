"""LIKE without backtracking (issue 11): same answers as the old regex translation, linear work.

The old translation (``%`` as ``.*`` in a backtracking regex) is kept here as the oracle: its
answers were right, only its time was not (n^(k+1) for k %s).
"""

from __future__ import annotations

import re
from unittest import mock

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.unit.deadlines import Countdown
from tests.unit.in_memory_s3 import in_memory_bucket
from worker.messages import InputFormat
from worker.query import Deadline, QueryError, QueryRequest, QueryTimeout, run_query
from worker.query.local import like
from worker.query.local.caps import MAX_LIKE_PATTERN_CHARS
from worker.query.local.like import like_pattern

HOSTILE = "%a%a%a%a%a%a%a%a%b"


def old_like_regex(pattern: str, escape: str | None) -> re.Pattern[str]:
    """LIKE as the engine translated it before issue 11: right, but backtracking."""
    parts, chars = [], iter(pattern)
    for char in chars:
        if char == escape:
            following = next(chars, None)
            if following is None:
                raise QueryError("ends with its escape character")
            parts.append(re.escape(following))
        elif char == "%":
            parts.append(".*")
        elif char == "_":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.DOTALL)


# Few letters make repeated pieces, overlaps and near misses likely; the other characters
# bring wildcards, escapes and newlines into the values.
PATTERNS = st.text(alphabet="a%", max_size=8) | st.text(alphabet="ab%_!", max_size=8)
VALUES = st.text(alphabet="a", max_size=6) | st.text(alphabet="ab", max_size=12)
VALUES |= st.text(alphabet="ab%_!\n", max_size=12)


@settings(max_examples=3000, deadline=None)
@given(
    pattern=PATTERNS,
    value=VALUES,
    escape=st.sampled_from([None, "!", "a", "%"]),
    window=st.sampled_from([1, 2, 3, like.WINDOW_STEPS]),
)
@example(pattern="%a%a%", value="a", escape=None, window=like.WINDOW_STEPS)  # pieces in order
@example(pattern="ab%ba", value="aba", escape=None, window=like.WINDOW_STEPS)  # ends overlap
@example(pattern="%ab%b", value="ab", escape=None, window=like.WINDOW_STEPS)
@example(pattern="a!%%", value="a%b", escape="!", window=1)
@example(pattern="%%", value="\n", escape=None, window=1)
def test_like_agrees_with_the_old_regex_translation(pattern, value, escape, window) -> None:
    try:
        expected = old_like_regex(pattern, escape).fullmatch(value) is not None
    except QueryError:
        with pytest.raises(QueryError, match="ends with its escape character"):
            like_pattern(pattern, escape)
        return
    # Tiny windows put piece boundaries and window boundaries everywhere (uncached: the
    # window is fixed when the pattern is compiled).
    with mock.patch.object(like, "WINDOW_STEPS", window):
        compiled = like_pattern.__wrapped__(pattern, escape)
    assert compiled.matches(value, Deadline(None)) is expected


@pytest.mark.timeout(20)
def test_the_measured_hostile_pattern_does_a_handful_of_searches() -> None:
    # Before: minutes (n^9 backtracking) on 4000 characters; hours on more.
    pattern = like_pattern(HOSTILE, None)
    for value in ("a" * 4000, "a" * 1_000_000):
        for candidate, expected in ((value, False), (value + "b", True)):
            searches = Countdown(10**9)
            assert pattern.matches(candidate, searches) is expected
            assert searches.checks <= 8  # at most one window per middle piece


@pytest.mark.timeout(20)
def test_the_measured_hostile_query_completes(tmp_path) -> None:
    body = ("t\n" + "a" * 4000 + "\n" + "a" * 4000 + "b\n").encode()
    with in_memory_bucket("like", {"t.csv": body}) as s3:
        sql = f"SELECT COUNT(*) FROM S3Object s WHERE s.t LIKE '{HOSTILE}'"
        result = run_query(s3, QueryRequest("like", "t.csv", sql, InputFormat()), "local")
    assert result.text == '{"_1":1}\n'


def test_a_long_search_checks_the_deadline_between_windows() -> None:
    # '_' pieces cost width x positions: the search is cut in windows, each one checked.
    pattern = like_pattern("%" + "a_" * 500 + "b%", None)
    deadline = Countdown(3)
    with pytest.raises(QueryTimeout, match="passed the item's deadline"):
        pattern.matches("a" * 200_000, deadline)
    assert deadline.checks == 4


def test_patterns_are_capped_whether_from_the_query_or_from_a_record() -> None:
    with pytest.raises(QueryError, match=f"accepts at most {MAX_LIKE_PATTERN_CHARS}"):
        like_pattern("a" * (MAX_LIKE_PATTERN_CHARS + 1), None)
    assert like_pattern("a" * MAX_LIKE_PATTERN_CHARS, None).matches(
        "a" * MAX_LIKE_PATTERN_CHARS, Deadline(None)
    )
    body = b"v,p\nx,secret" + b"%" * MAX_LIKE_PATTERN_CHARS + b"\n"
    with in_memory_bucket("like", {"p.csv": body}) as s3:
        sql = "SELECT * FROM S3Object s WHERE s.v LIKE s.p"
        with pytest.raises(
            QueryError, match="record 1: v LIKE p: a LIKE pattern of 1030"
        ) as raised:
            run_query(s3, QueryRequest("like", "p.csv", sql, InputFormat()), "local").text  # noqa: B018
    assert "secret" not in str(raised.value)
