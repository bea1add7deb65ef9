"""The worker's metrics: the AWS calls it makes, and the metrics its log lines embed.

Calls per item is the worker's cost figure (the floor is 2.2: receive/10 + read + write +
delete/10), so it is counted through botocore's own event hooks, where every call passes.
Item and summary lines carry their numbers as CloudWatch metrics (:class:`MetricSet`).
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class CallCounter:
    """Thread-safe tally of API calls by ``service.Operation``."""

    def __init__(self) -> None:
        """Start with no calls counted."""
        self._lock = threading.Lock()
        self._calls: Counter[str] = Counter()

    def attach(self, client: Any) -> Any:
        """Count every call ``client`` makes from now on; return the client for chaining."""
        service = client.meta.service_model.service_name
        client.meta.events.register(
            "before-call", lambda model, **_: self._count(f"{service}.{model.name}")
        )
        return client

    def _count(self, name: str) -> None:
        with self._lock:
            self._calls[name] += 1

    def snapshot(self) -> dict[str, int]:
        """Return the calls so far, by operation."""
        with self._lock:
            return dict(self._calls)

    @property
    def total(self) -> int:
        """All calls so far."""
        with self._lock:
            return sum(self._calls.values())


# CloudWatch Embedded Metric Format (EMF): CloudWatch Logs turns the numbers of a log line
# into metrics when the line carries an ``_aws`` block naming them ("Specification: Embedded
# metric format", Amazon CloudWatch User Guide). No agent, no API call: the awslogs driver
# already ships every line the worker prints.
NAMESPACE = "BatchSpot"
EMF_ROOT = "_aws"
# Dimensions stay low-cardinality: each distinct value is a metric billed on its own, so
# there is none per item, message, child or job id. Every metric is published under the job
# queue alone (what the dashboard and alarms read: Terraform knows it) and under the job queue
# and job name (to tell workloads sharing a queue apart).
QUEUE_DIMENSION = "JobQueue"
NAME_DIMENSION = "JobName"
# Item lines: one per message settled. The outcome counters count the message's items (1 for
# a single item, its sources for a batch), so their Sum is items per period; the failure-rate
# alarm divides the Sums (terraform/modules/monitoring), as an Average would weigh a batch as
# one item. The engine is a property (the line's ``engine``
# field, searchable with Logs Insights), not a dimension: as a dimension it would multiply
# every item metric by the engines a run meets, for a fact that changes once per process.
ITEM_UNITS = {
    "items_ok": "Count",
    "items_failed": "Count",
    "items_already_done": "Count",
    "duration_ms": "Milliseconds",
    "bytes_in": "Bytes",
    "bytes_out": "Bytes",
}
# Summary lines: one per worker process at exit. Items are counted by the item lines only, so
# that nothing is counted twice; ``released`` counts the messages given back on a stop.
SUMMARY_UNITS = {
    "released": "Count",
    "aws_calls": "Count",
    "aws_calls_per_item": "None",
    "peak_rss_mib": "Megabytes",
}


@dataclass(frozen=True)
class MetricSet:
    """The metrics one kind of log line carries, and the dimensions they are published under."""

    units: Mapping[str, str]  # member of the line -> EMF unit
    dimensions: Mapping[str, str]  # dimension name -> value, the first one alone is a set too

    def embed(self, fields: Mapping[str, Any], timestamp_ms: int) -> dict[str, Any]:
        """Return the members that make a line holding ``fields`` an EMF document.

        Only members present with a number are declared (a failed item has no ``bytes_out``):
        a declared metric whose member is missing or not a number is an invalid document.
        """
        metrics = [
            {"Name": name, "Unit": unit}
            for name, unit in self.units.items()
            if _is_number(fields.get(name))
        ]
        if not metrics:
            return {}
        names = list(self.dimensions)
        directive = {"Namespace": NAMESPACE, "Dimensions": [names[:1], names], "Metrics": metrics}
        return {
            **self.dimensions,
            EMF_ROOT: {"Timestamp": timestamp_ms, "CloudWatchMetrics": [directive]},
        }


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
