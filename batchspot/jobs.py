"""A Batch job and its array children, described in DescribeJobs' chunks of 100 ids.

``logs``, ``cost``, ``results`` and ``doctor`` all start from the same question, so it is asked
one way and an unknown job id is one sentence everywhere; ``logs`` and ``doctor`` explain
children the same way too (:func:`tally`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from batchspot.errors import OperatorError
from worker.limits import MAX_DESCRIBE_IDS, chunked


def describe(batch: Any, job_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Describe the jobs (Batch omits ids it does not know, or has forgotten)."""
    return [
        job
        for ids in chunked(job_ids, MAX_DESCRIBE_IDS)
        for job in batch.describe_jobs(jobs=ids)["jobs"]
    ]


def one(batch: Any, job_id: str) -> dict[str, Any]:
    """Describe one job; an id Batch does not know is an operator's error, in one sentence."""
    found = describe(batch, [job_id])
    if not found:
        raise OperatorError(
            f"no Batch job {job_id!r} (Batch keeps jobs about 7 days after they end): check "
            "the id, e.g. with `invoke status`"
        )
    return found[0]


def with_children(batch: Any, job_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Return the job and its children: every array child, or the job itself when it has none."""
    job = one(batch, job_id)
    size = job.get("arrayProperties", {}).get("size")
    return job, describe(batch, [f"{job_id}:{index}" for index in range(size)]) if size else [job]


def reason(job: dict[str, Any]) -> str:
    """Return why Batch says the job is where it is (with its exit code), or ``""``."""
    attempts = job.get("attempts") or [{}]
    container = attempts[-1].get("container", {})
    text = job.get("statusReason") or container.get("reason") or ""
    if "exitCode" in container:
        text = f"{text} (exit code {container['exitCode']})".strip()
    return text


def tally(
    children: Sequence[dict[str, Any]], unexplained: Mapping[str, str] | None = None
) -> list[str]:
    """Group jobs by status and :func:`reason`: ``  FAILED x2: <reason>`` lines, largest first.

    ``unexplained`` gives, per status, what to say when Batch gives no reason.
    """
    groups = Counter((child["status"], reason(child)) for child in children)
    hints = unexplained or {}
    return [
        f"  {status} x{count}: {why or hints.get(status, 'no reason given')}"
        for (status, why), count in groups.most_common()
    ]
