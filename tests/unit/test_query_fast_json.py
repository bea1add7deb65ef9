"""JSON lines on the fast path (:mod:`worker.query.local.fast_json`): the aggregates it runs
itself give the evaluator's bytes, and every way pyarrow's JSON reader reads data otherwise
than ``json.loads`` per line either agrees in the result or hands the query back.
"""

from __future__ import annotations

import gzip
import json
import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.bare_s3 import BytesS3
from worker.messages import InputFormat
from worker.query import (
    QueryError,
    QueryLimitExceeded,
    QueryRequest,
    QueryTimeout,
    local,
    run_query,
)

JSON_LINES = InputFormat(kind="JSON", json_type="LINES")
JSON_GZIP = InputFormat(kind="JSON", json_type="LINES", compression="GZIP")


def taxi_lines(rows: int, seed: int = 5) -> bytes:
    """Trips as JSON lines: integers, floats, text, nulls, missing fields, keys in any order."""
    chance = random.Random(seed)
    lines = []
    for i in range(rows):
        record = {
            "vendor": i % 3,
            "passengers": chance.choice([1, 2, 3, 4, 5, None]),
            "tip": round(chance.uniform(0, 30), 2),
            "fare": chance.choice([7, 12.5, 0.1 * (i % 50), 30]),
            "zone": f"zone {i % 263}",
        }
        if i % 11 == 0:
            del record["zone"]
        items = list(record.items())
        chance.shuffle(items)
        lines.append(json.dumps(dict(items), separators=(",", ":") if i % 2 else (", ", ": ")))
    return ("\n".join(lines) + "\n").encode()


TAXI = taxi_lines(40_000)  # ~3.5 MiB: several of the fast path's 1 MiB blocks
QUERIES = [
    "SELECT COUNT(*) FROM S3Object s",
    "SELECT SUM(s.tip) FROM S3Object s WHERE s.passengers > 3",
    "SELECT AVG(s.vendor), MIN(s.zone), MAX(s.tip), COUNT(s.zone), SUM(s.fare), AVG(s.fare) "
    "FROM S3Object s WHERE s.zone <> 'zone 5' AND NOT s.vendor IN (1, 2)",
    "SELECT COUNT(*), SUM(s.passengers), MIN(s.fare) FROM S3Object s "
    "WHERE s.passengers < 2 OR s.zone <= 'zone 5' OR s.tip BETWEEN 1.5 AND 2.25",
]


def reasons(capsys) -> list[str]:
    lines = capsys.readouterr().out.splitlines()
    return [json.loads(line)["reason"] for line in lines if '"query-path"' in line]


def answer(body: bytes, sql: str, fast: bool, monkeypatch, fmt=JSON_LINES, rows_format="json"):
    """The query's text on one path, or its QueryError as ``Type: message``."""
    monkeypatch.setattr(local, "FAST_PATH", fast)
    request = QueryRequest("b", "k", sql, fmt, rows_format)
    try:
        return run_query(BytesS3({"k": body}), request, "local").text
    except QueryError as error:
        return f"{type(error).__name__}: {error}"


@pytest.mark.parametrize(("compressed", "rows_format"), [(False, "json"), (True, "csv")])
@pytest.mark.parametrize("sql", QUERIES)
def test_json_lines_aggregates_run_vectorised_with_the_evaluators_bytes(
    sql, compressed, rows_format, monkeypatch, capsys
) -> None:
    body, fmt = (gzip.compress(TAXI, 6), JSON_GZIP) if compressed else (TAXI, JSON_LINES)
    fast = answer(body, sql, True, monkeypatch, fmt, rows_format)
    assert reasons(capsys) == ["vectorised"]  # and not declined part way
    assert fast == answer(body, sql, False, monkeypatch, fmt, rows_format)
    assert fast.count("\n") == 1  # the one output record, not an error


def test_json_rows_stay_with_the_evaluator_which_leaves_missing_fields_out(
    monkeypatch, capsys
) -> None:
    body = b'{"a":1,"b":null}\n{"a":2}\n'
    text = answer(body, "SELECT s.a, s.b FROM S3Object s", True, monkeypatch)
    assert text == '{"a":1,"b":null}\n{"a":2}\n'  # Arrow would read b as null in both
    assert reasons(capsys) == ["JSON rows (only aggregates of JSON lines run vectorised)"]


# Each line (or pair of lines) is read otherwise by pyarrow.json than by json.loads per line
# (measured with pyarrow 26; docs/query-engine.md "JSON lines"), or tests a check made for it.
DIVERGING = {
    "two objects on a line": b'{"a":1} {"a":2}\n',
    "two objects, no space": b'{"a":1}{"a":2}\n',
    "an object across lines": b'{"a":\n1}\n',
    "a line of two after one across two": b'{"a":1}{"a":2}\n{"a":\n3}\n',
    "objects split by a carriage return": b'{"a":1}\r{"a":2}\n',
    "1 then 1.0 (an INT and a FLOAT)": b'{"a":1}\n{"a":1.0}\n',
    "1.0 then 1": b'{"a":1.0}\n{"a":1}\n',
    "whole numbers written as floats": b'{"a":2.0}\n{"a":1e0}\n',
    "a fraction after whole floats": b'{"a":2.0}\n{"a":1}\n{"a":0.5}\n',
    "an integer past 64 bits": b'{"a":123456789012345678901}\n',
    "integers past 2**53, compared": b'{"a":9007199254740993}\n{"a":1}\n',
    "a whole float past 2**53": b'{"a":9007199254740993}\n{"a":0.5}\n',
    "null and missing": b'{"a":null}\n{}\n{"a":3}\n',
    "keys in another order": b'{"a":1,"b":"x"}\n{"b":"y","a":4}\n',
    "a lone surrogate": b'{"a":"\\ud800"}\n',
    "a surrogate pair": b'{"a":"\\ud83d\\ude00"}\n{"a":"z"}\n',
    "a duplicate key": b'{"a":1,"a":2}\n',
    "the field in another case": b'{"A":5}\n{"a":1}\n',
    "the field in another case only": b'{"A":5}\n',
    "the field escaped in another case": b'{"\\u0041":5}\n{"a":1}\n',
    "the field with a Kelvin sign": '{"\u212a":5}\n{"k":1}\n'.encode(),
    "not UTF-8": b'{"a":1,"b":"\xff"}\n',
    "an encoded surrogate": b'{"a":1,"b":"\xed\xa0\x80"}\n',
    "nested 70 deep in another field": b'{"a":1,"b":' + b"[" * 70 + b"]" * 70 + b"}\n",
    "an integer of 4400 digits in another field": b'{"a":1,"b":' + b"9" * 4400 + b"}\n",
    "NaN": b'{"a":1}\n{"a":NaN}\n',
    "NaN first (MIN and MAX keep it)": b'{"a":NaN}\n{"a":1}\n',
    "whole numbers past 2**53 before a fraction": (
        b'{"a":9007199254740992}\n{"a":1}\n{"a":1}\n{"a":0.5}\n'
    ),
    "INTs beside a FLOAT that WHERE leaves out": b'{"a":1,"k":0}\n{"a":0.5,"k":1}\n',
    "Infinity in another field": b'{"a":1,"b":-Infinity}\n',
    "1e400 (infinite to json.loads)": b'{"a":1e400}\n',
    "a byte order mark first": b'\xef\xbb\xbf{"a":1}\n',
    "a byte order mark later": b'{"a":1}\n\xef\xbb\xbf{"a":1}\n',
    "blank lines, CRLF, no final newline": b'\n \n{"a":1}\r\n\t\n{"a":2}',
    "a form feed line": b'\x0c\n{"a":1}\n',
    "an array line": b'[1]\n{"a":1}\n',
    "a number line": b'1\n{"a":1}\n',
    "text then an integer": b'{"a":"x"}\n{"a":1}\n',
    "a boolean": b'{"a":true}\n',
    "an object": b'{"a":{"b":1}}\n',
    "-0 and -0.0": b'{"a":-0}\n{"a":-0.0}\n{"a":0.5}\n',
    "nothing": b"",
    "blank lines only": b"\n\n",
    "a control character in text": b'{"a":"x\ty"}\n',
    "a trailing comma": b'{"a":1,}\n',
}
DIVERGING_SQL = [
    "SELECT COUNT(*) FROM S3Object s",
    "SELECT SUM(s.a), AVG(s.a), COUNT(s.a) FROM S3Object s",
    "SELECT MIN(s.a), MAX(s.a) FROM S3Object s",
    "SELECT COUNT(*) FROM S3Object s WHERE s.a > 1 OR s.a < 9007199254740992.0",
    "SELECT COUNT(s.k) FROM S3Object s WHERE NOT s.a = 'x' OR s.k = 0",
    "SELECT SUM(s.a), MAX(s.a) FROM S3Object s WHERE s.k = 0",
    "SELECT COUNT(*), MAX(s.k) FROM S3Object s WHERE s.a < s.k OR s.b = s.c",
]


# Past the first 1 MiB block, where each field's kind is already known.
PAST_FIRST_BLOCK = (b'{"a":7,"k":0,"pad":"' + b"p" * 1000 + b'"}\n') * 1100


@pytest.mark.parametrize("after", [b"", PAST_FIRST_BLOCK], ids=["first", "part way"])
@pytest.mark.parametrize("body", DIVERGING.values(), ids=DIVERGING.keys())
def test_data_pyarrow_reads_otherwise_gives_the_evaluators_answer(body, after, monkeypatch) -> None:
    """Each case, in the first block or after it: the same text or error on both paths."""
    for sql in DIVERGING_SQL:
        fast = answer(after + body, sql, True, monkeypatch)
        assert fast == answer(after + body, sql, False, monkeypatch), sql


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (DIVERGING["two objects on a line"], "a line holds other than one JSON object"),
        (DIVERGING["an object across lines"], "a line is not one JSON object"),
        (DIVERGING["not UTF-8"], "the object is not UTF-8 text"),
        (DIVERGING["the field in another case"], "the field 'a' may be written in another case"),
        (DIVERGING["1 then 1.0 (an INT and a FLOAT)"], "SUM of whole numbers read as floats"),
    ],
)
def test_data_pyarrow_reads_otherwise_is_handed_back_and_says_why(
    body, why, monkeypatch, capsys
) -> None:
    answer(body, DIVERGING_SQL[1], True, monkeypatch)
    assert reasons(capsys) == ["vectorised", f"declined on the data: {why}"]


def test_a_line_past_the_record_cap_is_refused_by_the_evaluator_unread(monkeypatch) -> None:
    body = b'{"a":1}\n' * 10 + b'{"a":"' + b"x" * (64 << 20) + b'"}\n'
    s3 = BytesS3({"k": body})
    monkeypatch.setattr(local, "FAST_PATH", True)
    request = QueryRequest("b", "k", "SELECT COUNT(*) FROM S3Object s", JSON_LINES)
    with pytest.raises(QueryLimitExceeded, match="OverMaxRecordSize"):
        run_query(s3, request, "local").text  # noqa: B018
    assert s3.bytes_served < 64 << 20  # neither path read the line whole


def test_a_gzip_bomb_of_json_lines_fails_in_the_evaluators_words(monkeypatch, capsys) -> None:
    line = b'{"a":"' + b"x" * 1016 + b'"}\n'
    bomb = gzip.compress(line * (16 << 10), 9) * 8  # 128 MiB inflated: past the 64 MiB floor
    sql = "SELECT MAX(s.a) FROM S3Object s"
    fast = answer(bomb, sql, True, monkeypatch, JSON_GZIP)
    assert fast == answer(bomb, sql, False, monkeypatch, JSON_GZIP)
    assert "decompression bomb" in fast
    assert reasons(capsys)[1].startswith("declined on the data: the GZIP data does not")


# --- the fuzz: any JSON lines, both paths --------------------------------------------------

# Mostly what pyarrow reads as json.loads does (a field of one kind of value in one case);
# now and then what it does not.
KEYS = ["a", "b", "k"]
ODD_KEYS = st.sampled_from(["A", "\\u0061", "B"])
NUMBERS = st.one_of(
    st.integers(-20, 20).map(str),
    st.integers(-(2**60), 2**60).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["null", "1.0", "-0.0", "0", "0.5", "2e0", "1E+2", "-1e-400", "-2.5"]),
)
TEXTS = st.one_of(
    st.just("null"), st.text(alphabet='ab\\"é \x7f', max_size=4).map(lambda text: json.dumps(text))
)
ODD_VALUES = st.sampled_from(
    ["1e400", "NaN", "9007199254740993", "true", "[1]", '{"a":1}', '"\\ud800"', '"x"', "1"]
)


@st.composite
def json_lines(draw) -> bytes:
    """Lines of objects, mostly valid, with the shapes pyarrow reads otherwise now and then."""
    kinds = {key: draw(st.sampled_from([NUMBERS, TEXTS])) for key in KEYS}
    pair = st.one_of(
        *[st.tuples(st.just(key), kind) for key, kind in kinds.items()] * 20,
        st.tuples(ODD_KEYS, NUMBERS),
        st.tuples(st.sampled_from(KEYS), ODD_VALUES),
    )
    lines = []
    for _ in range(draw(st.integers(0, 8))):
        pairs = draw(st.lists(pair, max_size=3))
        line = "{" + ",".join(f'"{key}":{value}' for key, value in pairs) + "}"
        shape = draw(st.sampled_from(["plain"] * 60 + ["two", "split", "blank", "spaced", "raw"]))
        if shape == "two":
            line += " " + line
        elif shape == "split" and "," in line:
            line = line.replace(",", ",\n", 1)
        elif shape == "blank":
            line += "\n \t"
        elif shape == "spaced":
            line = " " + line.replace(":", " : ") + "\r"
        elif shape == "raw":
            line = draw(st.sampled_from(["[1]", "2", '"s"', "{", "}", "\x0c"]))
        lines.append(line)
    return "\n".join(lines).encode() + draw(st.sampled_from([b"", b"\n"]))


FUZZ_SQL = [
    *DIVERGING_SQL,
    "SELECT MIN(s.b), MAX(s.b), COUNT(s.b) FROM S3Object s WHERE s.b >= 'a'",
    'SELECT SUM(s."a"), COUNT(*) FROM S3Object s WHERE s."a" BETWEEN -5 AND 5',
    "SELECT COUNT(*), MIN(s.k) FROM S3Object s WHERE s.a > 0 OR NOT s.k < 5",
]


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=json_lines(),
    sql=st.sampled_from(FUZZ_SQL),
    rows_format=st.sampled_from(["json", "csv"]),
    compressed=st.booleans(),
)
def test_the_paths_agree_on_any_json_lines(monkeypatch, body, sql, rows_format, compressed):
    data, fmt = (gzip.compress(body), JSON_GZIP) if compressed else (body, JSON_LINES)
    fast = answer(data, sql, True, monkeypatch, fmt, rows_format)
    assert fast == answer(data, sql, False, monkeypatch, fmt, rows_format)


@pytest.mark.parametrize(
    "body",
    [
        TAXI.rstrip(b"\n"),
        b"\xef\xbb\xbf" + TAXI,  # a byte order mark, which utf-8-sig drops
        TAXI.replace(b"\n", b" \r\n\t\n", 500),  # CRLF, spaces, blank lines
    ],
    ids=["no final newline", "a byte order mark", "CRLF and blank lines"],
)
def test_lines_json_loads_reads_alike_run_vectorised(body, monkeypatch, capsys) -> None:
    fast = answer(body, QUERIES[2], True, monkeypatch)
    assert reasons(capsys) == ["vectorised"]
    assert fast == answer(body, QUERIES[2], False, monkeypatch)


def test_the_deadline_stops_json_lines_between_blocks(monkeypatch) -> None:
    monkeypatch.setattr(local, "FAST_PATH", True)
    request = QueryRequest("b", "k", QUERIES[1], JSON_LINES, deadline=time.monotonic())
    result = run_query(BytesS3({"k": TAXI}), request, "local")
    with pytest.raises(QueryTimeout):
        result.text  # noqa: B018
