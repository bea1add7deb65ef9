"""QUERY_ENGINE=auto against moto's server, whose S3 Select answers but is incomplete.

moto ignores LIMIT, adds a blank record after a CSV's final newline and fails on WHERE, so
these check that the rows are right anyway. The clients take their endpoint from boto3's own
AWS_ENDPOINT_URL, as the worker's do.
"""

from __future__ import annotations

import json
import uuid

import boto3
import pytest

from tests.integration.harness import (
    drain,
    log_events,
    make_stack,
    output_objects,
    run_worker,
    send_all,
    worker_env,
)
from worker.messages import InputFormat
from worker.query import QueryError, QueryRequest, local, run_query
from worker.query.auto import AutoEngine

pytestmark = pytest.mark.moto_only  # LocalStack refuses S3 Select; its case is a unit test

CSV = b"id,value\n" + b"".join(f"{i},{i * 10}\n".encode() for i in range(50))
JSON_LINES = b"".join(json.dumps({"id": i, "tag": f"t{i % 3}"}).encode() + b"\n" for i in range(50))


@pytest.fixture()
def env_s3(monkeypatch, aws_env):
    """An S3 client configured only through the environment, as the worker's is."""
    for name, value in aws_env.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3")
    bucket = f"query-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="rows.csv", Body=CSV)
    client.put_object(Bucket=bucket, Key="rows.jsonl", Body=JSON_LINES)
    return client, bucket


def test_auto_returns_exactly_limit_rows_of_csv_and_json(env_s3):
    s3, bucket = env_s3
    engine = AutoEngine()
    csv_rows = engine.run(
        s3, QueryRequest(bucket, "rows.csv", "SELECT * FROM S3Object s LIMIT 10", InputFormat())
    ).text.splitlines()
    expected = [{"id": str(i), "value": str(i * 10)} for i in range(10)]
    assert [json.loads(r) for r in csv_rows] == expected
    assert engine.local_reason is not None, "moto's answer is wrong, so the process goes local"

    json_request = QueryRequest(
        bucket, "rows.jsonl", "SELECT * FROM S3Object s LIMIT 3", InputFormat(kind="JSON")
    )
    rows = [json.loads(r) for r in engine.run(s3, json_request).text.splitlines()]
    assert rows == [{"id": i, "tag": f"t{i % 3}"} for i in range(3)]


def test_auto_answers_where_and_aggregates_that_moto_cannot(env_s3):
    s3, bucket = env_s3
    query = "SELECT s.id FROM S3Object s WHERE CAST(s.value AS INT) >= 470"
    result = run_query(s3, QueryRequest(bucket, "rows.csv", query, InputFormat()), "auto")
    assert result.text == '{"id":"47"}\n{"id":"48"}\n{"id":"49"}\n'
    count = QueryRequest(bucket, "rows.csv", "SELECT COUNT(*) FROM S3Object", InputFormat())
    assert run_query(s3, count, "local").text == '{"_1":50}\n'


def test_s3select_engine_still_caps_moto_to_limit(env_s3):
    s3, bucket = env_s3
    request = QueryRequest(bucket, "rows.csv", "SELECT * FROM S3Object s LIMIT 5", InputFormat())
    assert len(run_query(s3, request, "s3select").text.splitlines()) == 5


def test_a_missing_object_is_a_query_error_in_every_engine(env_s3):
    s3, bucket = env_s3
    request = QueryRequest(bucket, "nope.csv", "SELECT * FROM S3Object s LIMIT 5", InputFormat())
    for engine in ("auto", "local", "s3select"):
        with pytest.raises(QueryError, match=r"nope\.csv"):
            run_query(s3, request, engine)


def test_the_worker_with_auto_stores_limit_rows_and_dead_letters_bad_sql(sqs, s3, aws_env):
    stack = make_stack(sqs, s3, max_receive=1)
    s3.put_object(Bucket=stack.input_bucket, Key="rows.csv", Body=CSV)
    good = {"bucket": stack.input_bucket, "key": "rows.csv"}
    bad = {**good, "query": "SELECT s.id FROM S3Object s ORDER BY s.id"}
    send_all(sqs, stack.queue_url, [json.dumps(good), json.dumps(bad)])

    env = worker_env(aws_env, stack, QUERY_ENGINE="auto", S3_QUERY_LIMIT="7", IDLE_EXIT_SECONDS="3")
    finished = run_worker(env)

    assert finished.returncode == 0, finished.stdout + finished.stderr
    [stored] = output_objects(s3, stack.output_bucket).values()
    assert json.loads(stored) == [{"id": str(i), "value": str(i * 10)} for i in range(7)]
    logged = log_events(finished.stdout)
    switches = [e for e in logged if e["event"] == "query-engine"]
    assert len(switches) == 1 and switches[0]["engine"] == "local"
    reasons = [e["reason"] for e in logged if e["event"] == "item" and e["outcome"] == "failed"]
    assert len(reasons) == 1 and "ORDER BY is not supported" in reasons[0]
    assert drain(sqs, stack.dlq_url) == [json.dumps(bad)]


def test_the_fast_path_reads_moto_ranged_gets_as_the_evaluator_does(env_s3, monkeypatch, capsys):
    s3, bucket = env_s3
    rows = b"".join(f"{i},{i * 10 % 997},trip {i}\n".encode() for i in range(100_000))
    s3.put_object(Bucket=bucket, Key="big.csv", Body=b"id,value,note\n" + rows)  # ~2 MiB
    answers = {}
    for fast in (True, False):
        monkeypatch.setattr(local, "FAST_PATH", fast)
        answers[fast] = [
            run_query(s3, QueryRequest(bucket, "big.csv", sql, InputFormat()), "local").text
            for sql in (
                "SELECT COUNT(*) FROM S3Object s WHERE CAST(s.value AS INT) > 500",
                "SELECT SUM(CAST(s.value AS FLOAT)), MAX(s.note) FROM S3Object s",
                "SELECT * FROM S3Object s WHERE s.note >= 'trip 99990'",
            )
        ]
    assert answers[True] == answers[False]
    paths = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if "query-path" in line
    ]
    assert [e["path"] for e in paths[:3]] == ["fast"] * 3


def test_the_worker_runs_an_item_without_limit_on_the_fast_path(sqs, s3, aws_env):
    stack = make_stack(sqs, s3, max_receive=1)
    s3.put_object(Bucket=stack.input_bucket, Key="rows.csv", Body=CSV)
    query = "SELECT SUM(CAST(s.value AS INT)) AS total FROM S3Object s WHERE CAST(s.id AS INT) > 9"
    item = {"bucket": stack.input_bucket, "key": "rows.csv", "query": query}
    send_all(sqs, stack.queue_url, [json.dumps(item)])

    env = worker_env(aws_env, stack, QUERY_ENGINE="local", IDLE_EXIT_SECONDS="3")
    finished = run_worker(env)

    assert finished.returncode == 0, finished.stdout + finished.stderr
    [stored] = output_objects(s3, stack.output_bucket).values()
    assert json.loads(stored) == [{"total": sum(i * 10 for i in range(10, 50))}]
    paths = [e for e in log_events(finished.stdout) if e["event"] == "query-path"]
    assert [(e["path"], e["reason"]) for e in paths] == [("fast", "vectorised")]
