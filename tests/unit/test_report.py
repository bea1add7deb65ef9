"""``invoke report`` reads what the workers logged, whatever else shares the log directory."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from batchspot.errors import OperatorError
from batchspot.report import PANELS, from_cloudwatch, from_log_dir, picture, summary


def write_log(path: Path, job_id: str, *events: dict[str, Any], mtime: float) -> None:
    lines = [json.dumps({"ts": 1000.0, "event": "start", "job_id": job_id})]
    lines += [json.dumps(event) for event in events]
    path.write_text("\n".join([*lines, "Traceback (most recent call last): not JSON"]) + "\n")
    os.utime(path, (mtime, mtime))


def item(ts: float, outcome: str, **fields: Any) -> dict[str, Any]:
    return {"ts": ts, "event": "item", "outcome": outcome, "duration_ms": 100, **fields}


def process_summary(ts: float, seconds: float, aws_calls: int) -> dict[str, Any]:
    return {"ts": ts, "event": "summary", "seconds": seconds, "aws_calls": aws_calls}


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    """Two children of job b (one running two worker processes), an older job a, a server log."""
    write_log(tmp_path / "slot-0-attempt-1.log", "a", item(1001, "ok"), mtime=10)
    write_log(
        tmp_path / "slot-0-attempt-2.log",
        "b:0",
        item(1001, "ok"),
        item(1002, "failed", reason="custom code raised ValueError", next="retry in 30 s"),
        process_summary(1004, 4.0, 10),
        process_summary(1004.5, 3.0, 6),  # the container's second worker process
        mtime=20,
    )
    write_log(
        tmp_path / "slot-1-attempt-1.log",
        "b:1",
        item(1003, "failed", reason="custom code raised ValueError", next="dead-letter queue"),
        item(1003, "already-done"),
        process_summary(1005, 5.0, 4),
        mtime=21,
    )
    (tmp_path / "moto-1234.log").write_text("127.0.0.1 - - POST / 200\n")
    return tmp_path


def test_the_newest_job_is_reported_with_every_process_counted(log_dir: Path) -> None:
    run = from_log_dir(log_dir)
    assert run.job_id == "b" and sorted(run.children) == ["slot-0-attempt-2", "slot-1-attempt-1"]
    assert (run.count("ok"), run.count("failed"), run.dead_lettered) == (1, 2, 1)
    assert run.calls_per_item == 20 / 4, "both processes of child 0 and child 1's calls"
    assert run.children["slot-0-attempt-2"].items_per_second == 2 / 4.0
    text = summary(run, None)
    assert "succeeded 1, already done 1, failed attempts 2, dead-lettered 1" in text
    assert "most frequent failure (2x): custom code raised ValueError" in text
    assert from_log_dir(log_dir, "a").count("ok") == 1


def test_the_picture_has_its_panels_and_counts_the_failures_by_reason(log_dir: Path) -> None:
    figure = picture(from_log_dir(log_dir), None)
    assert [axes.get_title() for axes in figure.axes] == list(PANELS)
    failures = figure.axes[2]
    assert [bar.get_width() for bar in failures.patches] == [2]
    assert [label.get_text() for label in failures.get_yticklabels()] == [
        "custom code raised ValueError"
    ]


def test_a_directory_without_worker_logs_says_so(tmp_path: Path) -> None:
    with pytest.raises(OperatorError, match=r"no worker log in .*: run `invoke local` first"):
        from_log_dir(tmp_path)
    (tmp_path / "slot-0-attempt-1.log").write_text(json.dumps({"event": "start", "job_id": "a"}))
    with pytest.raises(OperatorError, match="is from job zzz"):
        from_log_dir(tmp_path, "zzz")


class ArrayJob:
    """Batch's DescribeJobs for a running array job of two children, each with its stream."""

    def describe_jobs(self, jobs: list[str]) -> dict[str, Any]:
        known = {"j": {"jobId": "j", "status": "RUNNING", "arrayProperties": {"size": 2}}}
        for index in range(2):
            known[f"j:{index}"] = {
                "jobId": f"j:{index}",
                "status": "RUNNING",
                "container": {"logStreamName": f"batchspot/default/{index}"},
            }
        return {"jobs": [known[job] for job in jobs if job in known]}


def test_a_running_job_is_read_from_cloudwatch_logs_child_by_child() -> None:
    """CloudWatch Logs (moto's in-process mock) holds the lines the awslogs driver shipped."""
    with mock_aws():
        logs = boto3.client("logs", region_name="us-east-1")
        logs.create_log_group(logGroupName="/aws/batch/batchspot")
        now = int(time.time() * 1000)
        for index, outcomes in enumerate([["ok", "ok"], ["failed"]]):
            stream = f"batchspot/default/{index}"
            logs.create_log_stream(logGroupName="/aws/batch/batchspot", logStreamName=stream)
            lines = ["worker: a line that is not JSON"]
            lines += [json.dumps(item(now / 1000, outcome)) for outcome in outcomes]
            logs.put_log_events(
                logGroupName="/aws/batch/batchspot",
                logStreamName=stream,
                logEvents=[{"timestamp": now + n, "message": m} for n, m in enumerate(lines)],
            )
        run = from_cloudwatch(ArrayJob(), logs, "j", "/aws/batch/batchspot")
    assert {name: child.items for name, child in run.children.items()} == {
        "child 0": 2,
        "child 1": 1,
    }
    assert (run.count("ok"), run.count("failed"), run.calls_per_item) == (2, 1, None)
    assert "items: succeeded 2, already done 0, failed attempts 1" in summary(run, None)
