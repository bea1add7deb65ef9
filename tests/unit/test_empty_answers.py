"""Empty answers say what they are: nothing priced, no log streams, a run whose children ended."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from batchspot.cost.attempts import Attempt
from batchspot.cost.prices import AttemptCost
from batchspot.cost.report import CostReport, render_table
from batchspot.logs import show_logs
from batchspot.status import JobProgress

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def attempt(index: int) -> Attempt:
    return Attempt(f"job:{index}", 1, T0, T0 + timedelta(seconds=60))


def test_cost_with_nothing_priced_says_so_and_gives_no_percentage():
    costs = [AttemptCost(attempt(0), None, None), AttemptCost(attempt(1), 0.1, None)]
    text = render_table(costs, "pricing-api")
    assert text.splitlines()[-1].startswith("nothing priced: none of the 2 attempts has")
    assert "%" not in text and not CostReport(costs, "pricing-api").priced


def test_cost_with_zero_on_demand_prices_gives_no_percentage():
    text = render_table([AttemptCost(attempt(0), 0.0, 0.0)], "pricing-api")
    assert "no saving to compute: the On-Demand cost is 0" in text and "%" not in text


class ChildrenOnly:
    """A Batch client that knows one array job whose children never started a container."""

    def __init__(self, children: list[dict[str, Any]]) -> None:
        self.jobs = {"job": {"jobId": "job", "status": "SUBMITTED", "arrayProperties": {"size": 2}}}
        self.jobs |= {child["jobId"]: child for child in children}

    def describe_jobs(self, jobs: list[str]) -> dict[str, Any]:
        return {"jobs": [self.jobs[j] for j in jobs if j in self.jobs]}


def test_logs_without_streams_say_why_with_the_childrens_reasons():
    pull = "CannotPullContainerError: pull image manifest has been retried 5 time(s)"
    batch = ChildrenOnly(
        [
            {"jobId": "job:0", "status": "FAILED", "statusReason": pull},
            {"jobId": "job:1", "status": "FAILED", "statusReason": pull},
        ]
    )
    printed: list[str] = []

    def waited(seconds: float) -> None:
        raise AssertionError("follow waited on, though every child has ended")

    # follow ends too: every child has ended, though the parent still says SUBMITTED
    assert show_logs(batch, None, job_id="job", follow=True, emit=printed.append, sleep=waited) == 0

    (said,) = printed
    assert said.splitlines() == [
        "no log lines for job job: Batch names no log stream for its children (it does when "
        "a container starts); their status:",
        f"  FAILED x2: {pull}",
    ]


def test_an_array_job_is_finished_once_every_child_ended_whatever_the_parent_says():
    """AWS Batch User Guide, "Array jobs": the parent's status follows its children's; moto's
    server leaves it SUBMITTED (https://docs.aws.amazon.com/batch/latest/userguide/array_jobs.html).
    """
    ended = JobProgress("job", "run", "SUBMITTED", 3, {"SUCCEEDED": 2, "FAILED": 1})
    running = JobProgress("job", "run", "SUBMITTED", 3, {"SUCCEEDED": 2, "RUNNING": 1})
    assert ended.finished and not running.finished
    assert JobProgress("job", "run", "FAILED", 1).finished
    assert not JobProgress("job", "run", "RUNNING", 1).finished
