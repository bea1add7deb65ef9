"""``invoke cost --requests``: a run's own AWS calls, priced per million items it settled."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from batchspot.cost.requests import distributed_map_per_million, request_cost
from batchspot.report import from_log_dir

ROOT = Path(__file__).resolve().parents[2]


def test_each_request_is_priced_by_its_class() -> None:
    """S3 pricing: PUT/COPY/POST/LIST $0.005 per 1,000, GET and others $0.0004, DELETE free;
    SQS pricing: $0.40 per million requests (https://aws.amazon.com/s3/pricing/,
    https://aws.amazon.com/sqs/pricing/)."""
    calls = {
        "s3.PutObject": 10,
        "s3.GetObject": 1000,
        "s3.HeadObject": 10,
        "s3.DeleteObject": 50,
        "sqs.ReceiveMessage": 100,
        "sqs.DeleteMessageBatch": 100,
        "sts.GetCallerIdentity": 1,
    }
    priced = request_cost(calls, items=1000)
    by_operation = {line.operation: line.per_million_items for line in priced.lines}
    assert by_operation["s3.PutObject"] == pytest.approx(0.05)  # 0.01 PUT a item
    assert by_operation["s3.GetObject"] == pytest.approx(0.40)
    assert by_operation["s3.HeadObject"] == pytest.approx(0.004)
    assert by_operation["s3.DeleteObject"] == by_operation["sts.GetCallerIdentity"] == 0
    assert by_operation["sqs.ReceiveMessage"] == pytest.approx(0.04)
    assert priced.per_million_items == pytest.approx(0.534)
    assert priced.lines[0].operation == "s3.GetObject", "the most expensive first"


def test_distributed_map_is_priced_per_child_execution() -> None:
    """Step Functions pricing: $0.025 per 1,000 state transitions
    (https://aws.amazon.com/step-functions/pricing/); a child reads its item once."""
    assert distributed_map_per_million(1) == pytest.approx(25.0 + 0.40)
    assert distributed_map_per_million(100) == pytest.approx(0.25 + 0.40)


def test_a_run_without_ended_items_is_refused() -> None:
    with pytest.raises(ValueError, match="no item has reached its end"):
        request_cost({"sqs.ReceiveMessage": 3}, items=0)


def write_child(path: Path, *records: dict) -> None:
    lines = [{"ts": 1.0, "event": "start", "job_id": "run-1:0"}, *records]
    path.write_text("\n".join(json.dumps(record) for record in lines) + "\n")


def test_cost_requests_prices_a_local_run_per_item_that_ended(tmp_path: Path) -> None:
    """A batch's line settles its items; a retried failure is no item, but its calls count."""
    write_child(
        tmp_path / "slot-0.log",
        {"ts": 2, "event": "item", "outcome": "ok", "items": 100, "items_failed": 1},
        {"ts": 3, "event": "item", "outcome": "failed", "next": "retry in 30 s"},
        {"ts": 4, "event": "item", "outcome": "ok"},
        {"ts": 5, "event": "summary", "seconds": 3, "calls": {"s3.PutObject": 2}},
    )
    write_child(
        tmp_path / "slot-1.log",
        {"ts": 2, "event": "item", "outcome": "failed", "next": "dead-letter queue"},
        {"ts": 3, "event": "item", "outcome": "already-done"},
        {"ts": 5, "event": "summary", "seconds": 3, "calls": {"s3.PutObject": 1}},
    )
    run = from_log_dir(tmp_path)
    assert run.ended_items == 103
    assert run.calls == {"s3.PutObject": 3}
    shown = subprocess.run(
        [sys.executable, "-m", "invoke", "cost", "--requests", "--log-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "over 103 items" in shown
    assert "s3.PutObject" in shown and "0.15" in shown  # 3 PUTs / 103 items x 1e6 x $5e-6
    assert "$25.40 per million without ItemBatcher, $0.65 with 100" in shown
