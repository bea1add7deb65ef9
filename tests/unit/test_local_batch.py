"""``invoke local --containers`` reads the children's CloudWatch Logs once, for two uses.

The run's summaries (its counts) and its report both come from the children's log lines; each
FilterLogEvents call is an API call the operator pays for on AWS, so they are fetched once.
CloudWatch Logs is moto's in-process mock; Batch is a stand-in answering as moto's Batch does
once the array job and its final job have ended.
"""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
from moto import mock_aws

from batchspot.local_batch import MOTO_LOG_GROUP, run_array_job

OUTCOMES = {0: ["ok", "ok"], 1: ["ok"]}  # each child's items


class EndedArrayJob:
    """Batch after the array job (a child per OUTCOMES entry) and its final job succeeded."""

    def describe_job_definitions(self, **_: Any) -> dict[str, Any]:
        return {"jobDefinitions": [{"revision": 1, "containerProperties": {"image": "bs:local"}}]}

    def submit_job(self, **request: Any) -> dict[str, Any]:
        job_id = "final" if "dependsOn" in request else "array"
        return {"jobId": job_id, "jobName": request["jobName"]}

    def describe_jobs(self, jobs: list[str]) -> dict[str, Any]:
        known = {
            "array": {"jobId": "array", "status": "SUCCEEDED", "arrayProperties": {"size": 2}},
            "final": {"jobId": "final", "status": "SUCCEEDED"},
        }
        for index in OUTCOMES:
            known[f"array:{index}"] = {
                "jobId": f"array:{index}",
                "status": "SUCCEEDED",
                "container": {"logStreamName": f"batchspot/default/{index}"},
            }
        return {"jobs": [known[job] for job in jobs if job in known]}


def ship_worker_logs(logs: Any) -> None:
    """Put each child's item and summary lines where moto's Batch ships them."""
    logs.create_log_group(logGroupName=MOTO_LOG_GROUP)
    now = int(time.time() * 1000)
    for index, outcomes in OUTCOMES.items():
        stream = f"batchspot/default/{index}"
        logs.create_log_stream(logGroupName=MOTO_LOG_GROUP, logStreamName=stream)
        lines = [{"ts": now / 1000, "event": "item", "outcome": o} for o in outcomes]
        lines.append({"ts": now / 1000, "event": "summary", "ok": len(outcomes), "seconds": 2})
        logs.put_log_events(
            logGroupName=MOTO_LOG_GROUP,
            logStreamName=stream,
            logEvents=[
                {"timestamp": now + n, "message": json.dumps(line)} for n, line in enumerate(lines)
            ],
        )


def test_the_summaries_and_the_report_come_from_one_read_of_the_logs() -> None:
    with mock_aws():
        logs = boto3.client("logs", region_name="us-east-1")
        ship_worker_logs(logs)
        calls: list[str] = []  # every CloudWatch Logs call from here on
        logs.meta.events.register("before-call.logs", lambda model, **_: calls.append(model.name))
        array = run_array_job(
            EndedArrayJob(),
            logs,
            None,
            outputs={"job_queue": "q", "job_definition": "d", "final_job_definition": "f"},
            container_env={},
            size=len(OUTCOMES),
            job_name="batchspot",
            image_name="bs:local",
            progress=lambda: None,
            timeout=60,
        )
        summaries, report = array.summaries, array.log()
    assert sorted(summary["ok"] for summary in summaries) == [1, 2]
    assert {name: child.items for name, child in report.children.items()} == {
        "child 0": 2,
        "child 1": 1,
    }
    assert calls == ["FilterLogEvents"], "one page of two streams, read once for both"
