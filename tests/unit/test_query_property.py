"""Property: on random small tables and random supported queries, the local engine returns
what SQLite returns for the same query on the fully loaded rows, from CSV and from Parquet."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sqlite3
import uuid
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.in_memory_s3 import in_memory_bucket
from tests.unit.query_paths import query_path  # noqa: F401 - each test runs on both paths
from worker.messages import InputFormat
from worker.query import QueryRequest, run_query

BUCKET = "property"
TEXT = st.text(alphabet="ab,\"\n é%_'", max_size=5)
# Small domains, so that comparisons often hit equal values and boundaries.
NUMBER = st.integers(min_value=-5, max_value=5)


@dataclass(frozen=True)
class Table:
    kinds: tuple[str, ...]  # "int" or "text" per column c1, c2, ...
    rows: tuple[tuple[object, ...], ...]

    def columns(self, kind: str) -> list[str]:
        return [f"c{i + 1}" for i, k in enumerate(self.kinds) if k == kind]


@st.composite
def tables(draw, nulls: bool = False) -> Table:
    kinds = tuple(draw(st.lists(st.sampled_from(["int", "text"]), min_size=1, max_size=3)))
    number, text = (NUMBER | st.none(), TEXT | st.none()) if nulls else (NUMBER, TEXT)
    row = st.tuples(*(number if k == "int" else text for k in kinds))
    return Table(kinds, tuple(draw(st.lists(row, max_size=25))))


def quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@st.composite
def conditions(draw, table: Table, depth: int = 2) -> tuple[str, str]:
    """A WHERE condition as (S3 Select SQL, SQLite SQL)."""
    if depth and draw(st.booleans()):
        op = draw(st.sampled_from(["AND", "OR", "NOT"]))
        left = draw(conditions(table, depth - 1))
        if op == "NOT":
            return f"NOT ({left[0]})", f"NOT ({left[1]})"
        right = draw(conditions(table, depth - 1))
        return f"({left[0]}) {op} ({right[0]})", f"({left[1]}) {op} ({right[1]})"
    column = draw(st.sampled_from([f"c{i + 1}" for i in range(len(table.kinds))]))
    if table.kinds[int(column[1:]) - 1] == "int":
        value, other = draw(NUMBER), draw(NUMBER)
        form = draw(st.sampled_from(["cmp", "between", "in"]))
        if form == "cmp":
            op = draw(st.sampled_from(["=", "<>", "!=", "<", "<=", ">", ">="]))
            tail = f"{op} {value}"
        elif form == "between":
            tail = f"BETWEEN {min(value, other)} AND {max(value, other)}"
        else:
            tail = f"IN ({value}, {other})"
        return f"CAST(s.{column} AS INT) {tail}", f"{column} {tail}"
    text = draw(TEXT)
    if draw(st.booleans()):
        op = draw(st.sampled_from(["=", "<>", "<", ">="]))
        return f"s.{column} {op} {quote(text)}", f"{column} {op} {quote(text)}"
    pattern = draw(st.text(alphabet="ab%_é", max_size=4))
    return f"s.{column} LIKE {quote(pattern)}", f"{column} LIKE {quote(pattern)}"


@st.composite
def queries(draw, table: Table) -> tuple[str, str]:
    """A query as (S3 Select SQL, SQLite SQL)."""
    ints = table.columns("int")
    if ints and draw(st.booleans()):
        aggregates = []
        for position in range(draw(st.integers(1, 3))):
            function = draw(st.sampled_from(["COUNT", "SUM", "MIN", "MAX", "AVG"]))
            column = draw(st.sampled_from(ints))
            s3, lite = f"{function}(CAST(s.{column} AS INT))", f"{function}({column})"
            if function == "COUNT" and draw(st.booleans()):
                s3, lite = "COUNT(*)", "COUNT(*)"
            aggregates.append((f"{s3} AS p{position}", f"{lite} AS p{position}"))
        select = [a[0] for a in aggregates], [a[1] for a in aggregates]
    elif draw(st.booleans()):
        select = ["*"], ["*"]
    else:
        names = draw(st.lists(st.sampled_from(range(len(table.kinds))), min_size=1, max_size=3))
        select = [], []
        for position, index in enumerate(names):
            column = f"c{index + 1}"
            if table.kinds[index] == "int":
                select[0].append(f"CAST(s.{column} AS INT) AS p{position}")
            else:
                select[0].append(f"s.{column} AS p{position}")
            select[1].append(f"{column} AS p{position}")
    s3_sql = f"SELECT {', '.join(select[0])} FROM S3Object s"
    lite_sql = f"SELECT {', '.join(select[1])} FROM t"
    if draw(st.booleans()):
        where = draw(conditions(table))
        s3_sql, lite_sql = f"{s3_sql} WHERE {where[0]}", f"{lite_sql} WHERE {where[1]}"
    limit = draw(st.none() | st.integers(0, 10))
    if limit is not None:
        s3_sql, lite_sql = f"{s3_sql} LIMIT {limit}", f"{lite_sql} LIMIT {limit}"
    return s3_sql, lite_sql


def reference(table: Table, sql: str, typed: bool = False) -> list[list[object]]:
    connection = sqlite3.connect(":memory:")
    connection.execute("PRAGMA case_sensitive_like = ON")
    columns = ", ".join(
        f"c{i + 1} {'INTEGER' if k == 'int' else 'TEXT'}" for i, k in enumerate(table.kinds)
    )
    connection.execute(f"CREATE TABLE t ({columns})")
    marks = ", ".join("?" * len(table.kinds))
    connection.executemany(f"INSERT INTO t VALUES ({marks})", table.rows)
    rows = [list(row) for row in connection.execute(sql)]
    if sql.startswith("SELECT * ") and not typed:  # CSV fields come back as text
        rows = [[str(value) for value in row] for row in rows]
    return rows


def same(left: object, right: object) -> bool:
    if isinstance(left, (int, float)) and isinstance(right, (int, float)):
        return math.isclose(left, right, rel_tol=1e-9)
    return left == right


@pytest.fixture(scope="module")
def s3():
    with in_memory_bucket(BUCKET) as client:
        yield client


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_local_engine_agrees_with_sqlite(s3, data) -> None:
    table = data.draw(tables())
    s3_sql, lite_sql = data.draw(queries(table))
    body = io.StringIO()
    writer = csv.writer(body, lineterminator="\n")
    writer.writerow([f"c{i + 1}" for i in range(len(table.kinds))])
    writer.writerows(table.rows)
    key = f"{uuid.uuid4().hex}.csv"
    s3.put_object(Bucket=BUCKET, Key=key, Body=body.getvalue().encode())

    text = run_query(s3, QueryRequest(BUCKET, key, s3_sql, InputFormat()), "local").text
    assert_rows(text, reference(table, lite_sql), s3_sql)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_local_engine_agrees_with_sqlite_on_parquet(s3, data) -> None:
    """Parquet keeps types and NULLs: the same queries, with or without CAST on the integer
    columns (whole batches run those without; the evaluator the rest)."""
    table = data.draw(tables(nulls=True))
    s3_sql, lite_sql = data.draw(queries(table))
    if data.draw(st.booleans()):
        s3_sql = re.sub(r"CAST\((s\.c\d+) AS INT\)", r"\1", s3_sql)
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {
        f"c{i + 1}": pa.array(
            [row[i] for row in table.rows], pa.int64() if k == "int" else pa.string()
        )
        for i, k in enumerate(table.kinds)
    }
    body = pa.BufferOutputStream()
    pq.write_table(pa.table(columns), body, row_group_size=data.draw(st.integers(1, 10)))
    key = f"{uuid.uuid4().hex}.parquet"
    s3.put_object(Bucket=BUCKET, Key=key, Body=body.getvalue().to_pybytes())

    fmt = InputFormat(kind="PARQUET")
    text = run_query(s3, QueryRequest(BUCKET, key, s3_sql, fmt), "local").text
    assert_rows(text, reference(table, lite_sql, typed=True), s3_sql)


def assert_rows(text: str, expected: list[list[object]], s3_sql: str) -> None:
    got = [list(json.loads(line).values()) for line in text.splitlines()]
    assert len(got) == len(expected), (s3_sql, got, expected)
    for got_row, expected_row in zip(got, expected, strict=True):
        assert len(got_row) == len(expected_row), (s3_sql, got, expected)
        assert all(map(same, got_row, expected_row)), (s3_sql, got, expected)
