"""The SQL compiler: S3 Select's SQL into a plan, and clear refusals for the rest."""

from __future__ import annotations

from decimal import Decimal

import pytest

from worker.query import QueryUnsupported
from worker.query.limit import declared_limit
from worker.query.local import sql


def test_select_star_with_limit() -> None:
    plan = sql.compile_query("SELECT * FROM S3Object s LIMIT 10000")
    assert plan == sql.Plan(projections=None, where=None, limit=10000)


def test_projection_names_follow_columns_aliases_and_positions() -> None:
    plan = sql.compile_query(
        'SELECT s._3, s."Name", s.city AS town, CAST(s.age AS INT) FROM S3Object AS s'
    )
    assert [p.name for p in plan.projections] == ["_3", "Name", "town", "_4"]
    assert plan.projections[1].expr == sql.Column((("Name", True),))
    assert plan.projections[3].expr == sql.Cast(sql.Column((("age", False),)), "INT")


def test_the_table_alias_is_stripped_but_nested_paths_are_kept() -> None:
    plan = sql.compile_query("SELECT s.projects[0].project_name, name FROM S3Object[*] s")
    assert plan.projections[0].expr == sql.Column((("projects", False), 0, ("project_name", False)))
    assert plan.projections[1].expr == sql.Column((("name", False),))


def test_where_compiles_every_supported_operator() -> None:
    plan = sql.compile_query(
        "SELECT * FROM S3Object s WHERE s.a LIKE 'x!%%' ESCAPE '!' AND s.b NOT IN ('1', '2') "
        "OR NOT s.c IS NULL AND s.d BETWEEN 1 AND 2.5 AND s.e IS MISSING AND -s.f % 2 <> 0"
    )
    text = repr(plan.where)
    for node in ("Like(", "escape='!'", "In(", "Not(", "IsNull(", "Between(", "Negate("):
        assert node in text
    assert "Decimal('2.5')" in text
    assert "missing_only=True" in text


def test_aggregates_make_an_aggregate_plan() -> None:
    plan = sql.compile_query("SELECT COUNT(*), SUM(CAST(_3 AS INT)) AS total FROM S3Object")
    assert plan.aggregate
    assert plan.projections[0] == sql.Projection("_1", sql.Aggregate("COUNT", None))
    assert plan.projections[1].name == "total"


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("SELECT s.a FROM S3Object s GROUP BY s.a", "GROUP BY"),
        ("SELECT s.a FROM S3Object s ORDER BY s.a", "ORDER BY"),
        ("SELECT DISTINCT s.a FROM S3Object s", "SELECT DISTINCT"),
        ("SELECT UPPER(s.a) FROM S3Object s", "function UPPER"),
        ("SELECT FOO(s.a) FROM S3Object s", "function FOO"),
        ("SELECT CAST(s.a AS TIMESTAMP) FROM S3Object s", "CAST to TIMESTAMP"),
        ("SELECT COUNT(DISTINCT s.a) FROM S3Object s", "COUNT(DISTINCT"),
        ("SELECT s.a, COUNT(*) FROM S3Object s", "mixing aggregates"),
        ("SELECT * FROM S3Object s WHERE COUNT(*) > 1", "COUNT is only allowed"),
        ("SELECT * FROM S3Object s WHERE s.a IN (SELECT 1)", "IN with a subquery"),
        ("SELECT * FROM other", "FROM must name S3Object, got other"),
        ("SELECT * FROM S3Object s LIMIT s.a", "LIMIT must be a whole number"),
        ("SELECT a FROM S3Object UNION SELECT b FROM S3Object", "UNION"),
        ("SELECT * FROM S3Object; SELECT 1", "expected one SELECT statement"),
        ("SELECT * FROM S3Object[*].Rules[*].id", "cannot parse the SQL"),
    ],
)
def test_unsupported_constructs_are_named(query: str, named: str) -> None:
    with pytest.raises(QueryUnsupported, match=named.replace("(", r"\(")):
        sql.compile_query(query)


def test_literals_are_int_decimal_text_bool_null() -> None:
    plan = sql.compile_query("SELECT 1, 1.5, 'x', TRUE, NULL FROM S3Object")
    assert [p.expr.value for p in plan.projections] == [1, Decimal("1.5"), "x", True, None]


@pytest.mark.parametrize(
    ("query", "limit"),
    [
        ("SELECT * FROM S3Object s LIMIT 10000", 10000),
        ("select * from s3object limit 5;", 5),
        ("SELECT * FROM S3Object s", None),
        ("SELECT * FROM S3Object[*].a[*] LIMIT 3", None),  # sqlglot cannot parse it
    ],
)
def test_declared_limit(query: str, limit: int | None) -> None:
    assert declared_limit(query) == limit
