"""QUERY_ENGINE=auto: when S3 Select is used, when the local engine takes over, and the cap."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace

import pytest
from botocore.exceptions import ClientError

from tests.unit.in_memory_s3 import in_memory_bucket
from worker.messages import InputFormat
from worker.query import (
    Deadline,
    QueryError,
    QueryRefused,
    QueryRequest,
    QueryTimeout,
    run_query,
    s3select,
)
from worker.query.auto import LIMIT_PROBE, AutoEngine, same_rows

BUCKET = "auto"
BODY = b"a,b\n1,2\n3,4\n"
FIRST = '{"a":"1","b":"2"}\n'
RIGHT = FIRST + '{"a":"3","b":"4"}\n'
DEFAULT_SQL = "SELECT * FROM S3Object s LIMIT 10000"
MOTO_LIKE = RIGHT + '{"a":""}\n'  # moto's extra record after a final newline


def refusal(code: str, status: int, message: str = "no") -> ClientError:
    error = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(error, "SelectObjectContent")


class FakeS3:
    """moto's GetObject behind a scripted SelectObjectContent (answers by SQL; a conforming
    answer to the LIMIT probe by default); counts the calls of each."""

    def __init__(self, s3, answers: dict[str, str] | None = None, error=None) -> None:
        self._s3, self.error = s3, error
        self.answers = {LIMIT_PROBE: FIRST, **(answers or {})}
        self.selects = self.gets = 0
        self._lock = threading.Lock()

    def select_object_content(self, **kwargs):
        with self._lock:
            self.selects += 1
        if self.error is not None:
            raise self.error
        answer = self.answers[kwargs["Expression"]]
        events = [{"Records": {"Payload": answer.encode()}}, {"Stats": {"Details": {}}}]
        return {"Payload": (event for event in [*events, {"End": {}}])}  # closable, as botocore's

    def get_object(self, **kwargs):
        with self._lock:
            self.gets += 1
        return self._s3.get_object(**kwargs)

    def head_object(self, **kwargs):
        return self._s3.head_object(**kwargs)


@pytest.fixture(scope="module")
def moto_s3():
    with in_memory_bucket(BUCKET, {"rows.csv": BODY}) as client:
        yield client


def request(sql: str = DEFAULT_SQL, key: str = "rows.csv"):
    return QueryRequest(BUCKET, key, sql, InputFormat())


def switches(capsys) -> list[dict]:
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return [line for line in lines if line["event"] == "query-engine"]


@pytest.mark.parametrize(
    "error",
    [
        refusal("MethodNotAllowed", 405, "The specified method is not allowed"),
        refusal("NotImplemented", 501),
        refusal("InternalFailure", 501, "not included in your current license plan"),
    ],
)
def test_a_refusal_switches_to_local_for_good_and_says_so_once(moto_s3, capsys, error):
    engine, s3 = AutoEngine(), FakeS3(moto_s3, error=error)
    first, second = engine.run(s3, request()), engine.run(s3, request())

    assert first.text == second.text == RIGHT
    assert first.engine == "local"
    assert s3.selects == 1, "S3 Select is not asked again after it refused"
    [logged] = switches(capsys)
    assert logged["engine"] == "local"
    assert "not available" in logged["reason"]


def test_an_answer_that_agrees_is_trusted_from_then_on(moto_s3, capsys):
    engine, s3 = AutoEngine(), FakeS3(moto_s3, {DEFAULT_SQL: RIGHT})
    first = engine.run(s3, request())
    gets_after_check, selects_after_check = s3.gets, s3.selects
    second = engine.run(s3, request())

    assert first.engine == second.engine == "s3select"
    assert first.text == second.text == RIGHT
    assert gets_after_check > 0, "the first answer is checked against the local engine"
    assert selects_after_check == 2, "the query and the LIMIT probe"
    assert (s3.gets, s3.selects) == (gets_after_check, 3), "then only the query itself"
    assert switches(capsys) == []


def test_ignoring_limit_switches_to_local_even_when_the_cap_hides_it(moto_s3, capsys):
    engine = AutoEngine()
    s3 = FakeS3(moto_s3, {DEFAULT_SQL: MOTO_LIKE, LIMIT_PROBE: MOTO_LIKE})
    result = engine.run(s3, request())

    assert (result.engine, result.text) == ("local", RIGHT)
    assert "does not honour LIMIT" in engine.local_reason
    assert engine.run(s3, request()).engine == "local"
    assert s3.selects == 2, "S3 Select is not asked again"
    assert len(switches(capsys)) == 1


def test_a_wrong_answer_switches_to_local_and_returns_the_right_rows(moto_s3):
    engine = AutoEngine()
    s3 = FakeS3(moto_s3, {DEFAULT_SQL: FIRST})
    result = engine.run(s3, request())
    assert (result.engine, result.text) == ("local", RIGHT)
    assert "differs from the local engine's (1 vs 2 records)" in engine.local_reason


def test_the_limit_check_waits_for_an_object_with_two_records(moto_s3):
    moto_s3.put_object(Bucket=BUCKET, Key="one.csv", Body=b"a,b\n1,2\n")
    engine, s3 = AutoEngine(), FakeS3(moto_s3, {DEFAULT_SQL: FIRST})
    assert engine.run(s3, request(key="one.csv")).engine == "s3select"
    assert engine.run(s3, request(key="one.csv")).engine == "s3select"
    assert s3.selects == 4, "each item probes again while no object could settle it"
    s3.answers[DEFAULT_SQL] = RIGHT
    engine.run(s3, request())
    engine.run(s3, request())
    assert s3.selects == 7, "settled by rows.csv: its second item sends only the query"


def test_s3_select_failing_where_local_succeeds_switches(moto_s3):
    engine = AutoEngine()
    s3 = FakeS3(moto_s3, error=refusal("500", 500, "Internal Server Error"))
    result = engine.run(s3, request("SELECT s.a FROM S3Object s WHERE s.a = '3'"))
    assert (result.engine, result.text) == ("local", '{"a":"3"}\n')
    assert "failed where the local engine succeeded" in engine.local_reason


def test_both_engines_failing_fails_the_item_without_switching(moto_s3):
    engine = AutoEngine()
    s3 = FakeS3(moto_s3, error=refusal("NoSuchKey", 404, "The specified key does not exist."))
    with pytest.raises(QueryError, match="does not exist"):
        engine.run(s3, request(key="missing.csv"))
    assert engine.local_reason is None


def test_sql_beyond_the_local_engine_keeps_s3_selects_answer(moto_s3):
    upper = "SELECT UPPER(s.a) FROM S3Object s"
    engine, s3 = AutoEngine(), FakeS3(moto_s3, {upper: '{"_1":"1"}\n'})
    result = engine.run(s3, request(upper))
    assert (result.engine, result.text) == ("s3select", '{"_1":"1"}\n')
    assert engine.local_reason is None
    s3.error = refusal("InvalidQuery", 400, "bad")
    failed = "S3 Select on s3://auto/rows.csv failed: InvalidQuery: bad; the local engine cannot"
    with pytest.raises(QueryError, match=f"{failed} run it either: function UPPER"):
        engine.run(s3, request(upper))


def test_a_timeout_is_never_answered_by_the_other_engine(moto_s3):
    # Not even to say that the local engine cannot run the SQL: the item is out of time.
    upper = "SELECT UPPER(s.a) FROM S3Object s"
    engine, s3 = AutoEngine(), FakeS3(moto_s3, {upper: '{"_1":"1"}\n'})
    with pytest.raises(QueryTimeout, match="passed the item's deadline"):
        engine.run(s3, replace(request(upper), deadline=time.monotonic() - 1))
    assert (s3.gets, engine.local_reason) == (0, None)


def local_out_of_time(monkeypatch) -> None:
    """The local engine's checks run out of time while S3 Select answers at once."""
    monkeypatch.setattr("worker.query.local.Deadline", lambda at: Deadline(float("-inf")))


def test_a_timeout_of_the_limit_check_fails_the_item(moto_s3, monkeypatch):
    # One record: the LIMIT check is not settled, so each item runs it again.
    moto_s3.put_object(Bucket=BUCKET, Key="one.csv", Body=b"a,b\n1,2\n")
    engine, s3 = AutoEngine(), FakeS3(moto_s3, {DEFAULT_SQL: FIRST})
    assert engine.run(s3, request(key="one.csv")).engine == "s3select"  # now trusted
    local_out_of_time(monkeypatch)
    with pytest.raises(QueryTimeout):
        engine.run(s3, request(key="one.csv"))


def test_a_timeout_of_the_local_verification_fails_the_item(moto_s3, monkeypatch):
    projection = "SELECT s.a FROM S3Object s"
    answers = {DEFAULT_SQL: RIGHT, projection: '{"a":"1"}\n{"a":"3"}\n'}
    engine, s3 = AutoEngine(), FakeS3(moto_s3, answers)
    assert engine.run(s3, request()).engine == "s3select"  # settles the LIMIT check
    local_out_of_time(monkeypatch)
    with pytest.raises(QueryTimeout):
        engine.run(s3, request(projection))  # a new query: checked against the local engine


def test_concurrent_first_calls_switch_once(moto_s3, capsys):
    engine = AutoEngine()
    s3 = FakeS3(moto_s3, error=refusal("MethodNotAllowed", 405))
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(engine.run(s3, request()).text))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [RIGHT] * 8
    assert len(switches(capsys)) == 1


def test_s3select_engine_caps_an_answer_that_ignores_limit(moto_s3):
    s3 = FakeS3(
        moto_s3, {LIMIT_PROBE: MOTO_LIKE, "SELECT * FROM S3Object LIMIT 2": '1,"x\ny"\n2,z\n3,w\n'}
    )
    assert s3select.run(s3, request(LIMIT_PROBE)).text == FIRST
    csv_request = QueryRequest(
        BUCKET, "rows.csv", "SELECT * FROM S3Object LIMIT 2", InputFormat(), "csv"
    )
    assert s3select.run(s3, csv_request).text == '1,"x\ny"\n2,z\n'


def test_s3select_engine_classifies_refusals(moto_s3):
    s3 = FakeS3(moto_s3, error=refusal("MethodNotAllowed", 405))
    with pytest.raises(QueryRefused, match="S3 Select is not available here: MethodNotAllowed"):
        run_query(s3, request(), "s3select")


def test_an_unknown_engine_name_is_an_error(moto_s3):
    with pytest.raises(QueryError, match="unknown query engine 'fast'"):
        run_query(moto_s3, request(), "fast")


@pytest.mark.parametrize(
    ("left", "right", "rows_format", "same"),
    [
        ('{"_1":2.5}\n', '{"_1":2.50000000001}\n', "json", True),
        ('{"_1":2}\n', '{"_1":"2"}\n', "json", False),
        ('{"_1":true}\n', '{"_1":1}\n', "json", False),
        (RIGHT, MOTO_LIKE, "json", False),
        ('1,"a b"\n', "1,a b\n", "csv", True),
        ("1,2\n", "1,2\n\n", "csv", False),
    ],
)
def test_same_rows(left, right, rows_format, same):
    assert same_rows(left, right, rows_format) is same
