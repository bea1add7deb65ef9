"""Every item and summary line the worker writes is a valid CloudWatch EMF document.

The rules checked are those of "Specification: Embedded metric format" (Amazon CloudWatch
User Guide, https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/
CloudWatch_Embedded_Metric_Format_Specification.html): the root's ``_aws`` holds a
millisecond ``Timestamp`` and ``CloudWatchMetrics``; each directive has a Namespace, at most
100 MetricDefinitions and DimensionSets of at most 30 keys; every name a directive references
is a member of the root, a dimension's a string and a metric's a number or an array of at most
100 numbers; a Unit is one of the listed ones; names are 1 to 255 characters (its JSON
schema). Older editions allowed 9 keys in a DimensionSet; the lines use 1 and 2. Dimension
values follow CloudWatch's Dimension type (API reference: ASCII, 1 to 1024 characters, not
only whitespace). No emulator parses EMF, so the lines are checked against the documents
themselves. The lines come from the worker's own loop, settling one message of every outcome,
and stay within Docker's 16 KiB line.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.unit.in_memory_s3 import in_memory_bucket
from worker.config import ConfigError, load_config
from worker.handlers import RowsToJson
from worker.logs import MAX_LINE_BYTES, log
from worker.loop import Worker
from worker.messages import read_message
from worker.metrics import ITEM_UNITS, CallCounter, MetricSet
from worker.output import ResultStore
from worker.process import Outcome, Services, process_message
from worker.stopping import StopSignal

BUCKET = "data"
UNITS = frozenset(
    [
        "Seconds",
        "Microseconds",
        "Milliseconds",
        "Bytes",
        "Kilobytes",
        "Megabytes",
        "Gigabytes",
        "Terabytes",
        "Bits",
        "Kilobits",
        "Megabits",
        "Gigabits",
        "Terabits",
        "Percent",
        "Count",
        "Bytes/Second",
        "Kilobytes/Second",
        "Megabytes/Second",
        "Gigabytes/Second",
        "Terabytes/Second",
        "Bits/Second",
        "Kilobits/Second",
        "Megabits/Second",
        "Gigabits/Second",
        "Terabits/Second",
        "Count/Second",
        "None",
    ]
)
MAX_METRICS = 100
MAX_DIMENSIONS = 30
MAX_VALUES = 100
# The specification's JSON schema: names (namespace, dimension keys, metric names) 1 to 255.
MAX_NAME = 255


class Settles:
    """An InFlight that settles every message it is asked to (the loop's only use here)."""

    def __init__(self, acks: bool = True) -> None:
        self.acks = acks

    def ack(self, _message_id: str) -> bool:
        return self.acks

    def release(self, message_ids: list[str], _delay: int) -> list[str]:
        return list(message_ids)


def body(key: str) -> str:
    return json.dumps({"bucket": BUCKET, "key": key})


def worker_lines(capsys: pytest.CaptureFixture[str]) -> list[bytes]:
    """Settle a message of every outcome through the worker's loop, then end it; its lines."""
    env = {
        "SQS_QUEUE_URL": "q",
        "OUTPUT_BUCKET": BUCKET,
        "QUERY_ENGINE": "local",
        "AWS_BATCH_JQ_NAME": "batchspot-spot",
        "BATCHSPOT_JOB_NAME": "nightly",
    }
    config = load_config(env)
    with in_memory_bucket(BUCKET, {"in.csv": b"id\n1\n2\n"}) as s3:
        services = Services(s3=s3, store=ResultStore(s3, 1024**2), handler=RowsToJson("json"))
        worker = Worker(config, None, services, Settles(), StopSignal(), CallCounter(), 2, 30)  # type: ignore[arg-type]
        items = [
            (body("in.csv"), 1),  # ok
            (body("in.csv"), 2),  # already-done (a redelivery finds the result)
            (json.dumps({"Event": "s3:TestEvent"}), 1),  # ignored
            (body("missing.csv"), 1),  # failed, retried later
            (body("missing.csv"), 2),  # failed for the last time: dead-letter queue
            ("not json", 1),  # malformed: failed for good
        ]
        for number, (text, attempt) in enumerate(items):
            worker._settle(
                f"m{number}",
                attempt,
                process_message(read_message(text), attempt, config, services),
            )
        # A reason of any length (custom code's error text) must not cut the metrics away.
        huge = Outcome("failed", "é" * 200_000, fields={"source": "s3://b/k", "duration_ms": 7})
        worker._settle("m-huge", 1, huge)
        worker._inflight = Settles(acks=False)  # given back by a stop before it was deleted
        worker._settle(
            "m-late", 1, process_message(read_message(body("in.csv")), 1, config, services)
        )
        worker.tally.released = 3
        worker._summary(1.5, 0)
    return capsys.readouterr().out.encode("utf-8").splitlines()


def check_emf(record: dict[str, Any]) -> None:
    """Assert that ``record`` is an EMF document by the specification's rules."""
    metadata = record["_aws"]
    assert set(metadata) == {"Timestamp", "CloudWatchMetrics"}
    stamp = metadata["Timestamp"]
    assert isinstance(stamp, int) and abs(stamp - time.time() * 1000) < 60_000, "ms since epoch"
    assert metadata["CloudWatchMetrics"], "at least one directive"
    for directive in metadata["CloudWatchMetrics"]:
        assert set(directive) == {"Namespace", "Dimensions", "Metrics"}
        assert directive["Namespace"] == "BatchSpot"
        assert directive["Dimensions"], "at least one DimensionSet"
        for dimension_set in directive["Dimensions"]:
            assert 1 <= len(dimension_set) <= MAX_DIMENSIONS
            for name in dimension_set:
                assert 1 <= len(name) <= MAX_NAME, name
                value = record[name]
                assert isinstance(value, str) and value.isascii() and value.strip(), (name, value)
                assert len(value) <= 1024
        metrics = directive["Metrics"]
        assert 1 <= len(metrics) <= MAX_METRICS
        for metric in metrics:
            assert set(metric) <= {"Name", "Unit", "StorageResolution"}
            assert 1 <= len(metric["Name"]) <= MAX_NAME
            assert metric["Unit"] in UNITS, metric
            value = record[metric["Name"]]
            values = value if isinstance(value, list) else [value]
            assert len(values) <= MAX_VALUES
            for number in values:
                assert isinstance(number, int | float) and not isinstance(number, bool), metric


def test_every_item_and_summary_line_is_a_valid_emf_document(
    capsys: pytest.CaptureFixture[str],
) -> None:
    lines = worker_lines(capsys)
    records = [json.loads(line) for line in lines]
    assert all(len(line) <= MAX_LINE_BYTES for line in lines), "within Docker's 16 KiB line"
    items = [r for r in records if r["event"] == "item"]
    assert [r["outcome"] for r in items] == [
        "ok", "already-done", "ignored", "failed", "failed", "failed", "failed", "already-done"
    ]  # fmt: skip
    (summary,) = [r for r in records if r["event"] == "summary"]
    for record in [*items, summary]:
        check_emf(record)
        directive = record["_aws"]["CloudWatchMetrics"][0]
        # Low cardinality: the queue, then queue and job name; never an item or a job id.
        assert directive["Dimensions"] == [["JobQueue"], ["JobQueue", "JobName"]]
        assert (record["JobQueue"], record["JobName"]) == ("batchspot-spot", "nightly")
    assert "…[truncated" in items[6]["reason"], "the huge reason was cut, the metrics kept"


def test_the_lines_carry_what_the_dashboard_reads(capsys: pytest.CaptureFixture[str]) -> None:
    records = [json.loads(line) for line in worker_lines(capsys)]
    declared = {
        r["event"] + ":" + m["Name"]: m["Unit"]
        for r in records
        if "_aws" in r
        for m in r["_aws"]["CloudWatchMetrics"][0]["Metrics"]
    }
    assert declared == {
        "item:items_ok": "Count",
        "item:items_failed": "Count",
        "item:items_already_done": "Count",
        "item:duration_ms": "Milliseconds",
        "item:bytes_in": "Bytes",
        "item:bytes_out": "Bytes",
        "summary:released": "Count",
        "summary:aws_calls": "Count",
        "summary:aws_calls_per_item": "None",
        "summary:peak_rss_mib": "Megabytes",
    }
    items = [r for r in records if r["event"] == "item"]
    # One outcome counted per line: their sums are the items of each kind.
    assert sum(r["items_ok"] for r in items) == 1 and sum(r["items_failed"] for r in items) == 4
    assert sum(r["items_already_done"] for r in items) == 2
    assert items[0]["engine"] == "local", "the engine stays a property of the line"
    (summary,) = [r for r in records if r["event"] == "summary"]
    assert summary["released"] == 3 and summary["peak_rss_mib"] > 0


@pytest.mark.parametrize("variable", ["AWS_BATCH_JQ_NAME", "BATCHSPOT_JOB_NAME"])
def test_a_name_cloudwatch_would_refuse_as_a_dimension_is_a_configuration_error(
    variable: str,
) -> None:
    with pytest.raises(ConfigError, match=f"{variable} must be 1 to 128 letters"):
        load_config({"SQS_QUEUE_URL": "q", "OUTPUT_BUCKET": BUCKET, variable: "nächtlich"})


def test_a_line_cut_to_fit_still_declares_only_the_metrics_it_holds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """However many long fields a line has, cutting them leaves its ``_aws`` block whole."""
    metrics = MetricSet(ITEM_UNITS, {"JobQueue": "q", "JobName": "n"})
    numbers = {name: 1 for name in ITEM_UNITS}
    log("item", emf=metrics, **numbers, **{f"note{i}": "x" * 2000 for i in range(60)})
    (line,) = capsys.readouterr().out.encode("utf-8").splitlines()
    record = json.loads(line)
    assert len(line) <= MAX_LINE_BYTES and "…[truncated" in record["note0"]
    check_emf(record)
    declared = record["_aws"]["CloudWatchMetrics"][0]["Metrics"]
    assert [metric["Name"] for metric in declared] == list(ITEM_UNITS)


def test_a_batch_line_counts_its_items_and_the_summary_divides_calls_by_items(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A batch of 3 (one refused for good) is one item line counting 2 + 1 items, so the item
    metrics' Sum counts items; calls per item divide by the 3 items, not the 1 message."""
    config = load_config({"SQS_QUEUE_URL": "q", "OUTPUT_BUCKET": BUCKET, "QUERY_ENGINE": "local"})
    unusable = {"delimiter": ",", "quote": ","}
    sources = [{"bucket": BUCKET, "key": key} for key in ("a.csv", "b.csv")]
    batch = json.dumps({"items": [*sources, {"bucket": BUCKET, "key": "c.csv", "input": unusable}]})
    counter = CallCounter()
    objects = {key: b"id\n1\n" for key in ("a.csv", "b.csv", "c.csv")}
    with in_memory_bucket(BUCKET, objects) as s3:
        services = Services(
            s3=counter.attach(s3), store=ResultStore(s3, 1024**2), handler=RowsToJson("json")
        )
        worker = Worker(config, None, services, Settles(), StopSignal(), counter, 2, 30)  # type: ignore[arg-type]
        worker._settle("m0", 1, process_message(read_message(batch), 1, config, services))
        worker._summary(1.0, 0)
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    item, summary = (event for event in logged if event["event"] in ("item", "summary"))
    check_emf(item)
    assert (item["items"], item["items_ok"], item["items_failed"]) == (3, 2, 1)
    assert (summary["ok"], summary["items_ok"], summary["items_failed"]) == (1, 2, 1)
    assert summary["aws_calls"] > 0
    assert summary["aws_calls_per_item"] == round(summary["aws_calls"] / 3, 3)
