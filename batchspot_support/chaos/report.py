"""The checker of a chaos run: what a user would check once every worker has left.

The figures and verdict ``invoke chaos`` prints (:class:`ChaosReport`), and :func:`verify`,
which reads them from the output bucket, the queues and the workers' logs.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from batchspot.fleet import Fleet
from batchspot_support.chaos.settings import ChaosSettings
from batchspot_support.chaos.stack import (
    OUTPUT_PREFIX,
    ChaosStack,
    HostileItem,
    received_bodies,
    stored_versions,
)
from batchspot_support.hostile import peak_rss_budget_kib, ran_fast_path
from worker.batches import read_lines
from worker.keys import BATCH_RESULTS
from worker.manifest import is_run_record
from worker.messages import read_message
from worker.process import message_items
from worker.queue_depth import QueueCounts, queue_counts

# Worker log events worth a look after a run, counted in the report (see worker/loop.py and
# worker/inflight.py): messages lost to another receiver, items finishing after their
# deadline, deletes given up, a sweep ended by its cap rather than by an empty queue, the
# heartbeat turning unhealthy (or healthy again), and the retries that faults cause.
NOTABLE_EVENTS = (
    "lost",
    "heartbeat",
    "late-finish",
    "delete-abandoned",
    "sweep-cap",
    "stuck",
    "item-error",
    "delete-failed",
    "visibility-failed",
    "receive-failed",
    "throttled",
)


@dataclass
class ChaosReport:
    """What happened and what was found; ``failures`` empty means the run passed."""

    settings: ChaosSettings
    emulator: str
    seconds: float = 0.0  # from the first worker's start to the last one's exit
    wall_seconds: float = 0.0  # the stack, seeding, policy, drain and checks
    blows: Counter[str] = field(default_factory=Counter)
    starts: int = 0
    good: int = 0  # items seeded from good sources
    poison: int = 0
    results: int = 0  # result objects the good items make: one each, or one per batch
    stored: int = 0  # of those, stored
    items_stored: int = 0  # good items whose result is stored (a line of a batch's)
    lost: int = 0  # good items without a stored result
    versions: int = 0
    logged_ok: int = 0
    logged_already_done: int = 0
    healthy_failed_attempts: int = 0
    given_back: int = 0
    max_receives: int = 0
    wrong: int = 0
    queue_end: QueueCounts = field(default_factory=lambda: QueueCounts(0, 0, 0))
    dead_lettered: int = 0
    healthy_dead_lettered: int = 0
    poison_not_dead_lettered: int = 0
    injected: Counter[str] = field(default_factory=Counter)
    self_exit_codes: Counter[int] = field(default_factory=Counter)
    child_ends: Counter[str] = field(default_factory=Counter)  # as Batch records them
    reclaims_of_the_sweeper: int = 0
    failed_slots: list[int] = field(default_factory=list)
    notable_events: Counter[str] = field(default_factory=Counter)
    hostile: int = 0
    hostile_stored: int = 0
    hostile_versions: int = 0
    hostile_dead_lettered: int = 0
    hostile_unsettled: int = 0  # neither stored nor dead-lettered, or both
    hostile_without_reason: int = 0  # dead-lettered, but no attempt failed for its reason
    hostile_max_ms: int = 0  # the longest hostile attempt, from its ``item`` log line
    peak_rss_kib: int = 0  # the largest VmHWM any worker reached
    over_memory_budget: int = 0  # workers past 128 MiB, or 256 MiB if they ran the fast path
    outside_prefix: int = 0  # keys in the output bucket outside OUTPUT_PREFIX (or with '..')
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when every check held."""
        return not self.failures

    @property
    def duplicates(self) -> int:
        """Writes beyond the first per result: extra versions or extra ``ok`` lines."""
        healthy = max(self.versions - self.stored, self.logged_ok - self.results, 0)
        return healthy + self.hostile_versions - self.hostile_stored

    @property
    def stranded(self) -> int:
        """Messages left on the work queue after every worker left by itself."""
        return self.queue_end.total

    def render(self) -> str:
        """Return the report as ``invoke chaos`` prints it."""
        s = self.settings
        end = self.queue_end
        layer = (
            f"on: SlowDown {s.s3_slowdown_rate:g}, throttling {s.sqs_throttle_rate:g}, "
            f"failed visibility entries {s.visibility_entry_failure_rate:g}, "
            f"409 on conditional writes {s.conditional_conflict_rate:g}"
            if s.aws_rules
            else "off"
        )
        rows: list[tuple[str, object]] = [
            ("emulator", self.emulator),
            ("AWS rules layer", layer),
            (
                "items (good + poison + hostile)" if s.hostile else "items (good + poison)",
                f"{self.good} + {self.poison}" + (f" + {self.hostile}" if s.hostile else ""),
            ),
            *(
                [("batch messages (items each)", f"{self.results} ({s.batch_size})")]
                if s.batch_size
                else []
            ),
            ("worker slots", s.workers),
            (
                "Spot reclaims (notice, then host gone)",
                f"{self.blows['reclaims']}, {self.blows['waves']} of them waves over every "
                f"host; {self.reclaims_of_the_sweeper} of array child 0 (the sweeper)",
            ),
            ("custom code time per item", f"{s.work_ms} ms"),
            ("worker processes started", self.starts),
            ("exit codes of workers that left by themselves", _counts(self.self_exit_codes)),
            ("children's ends as Batch records them", _counts(self.child_ends)),
            ("drain seconds (first start to last exit)", f"{self.seconds:.1f}"),
            ("wall seconds (stack, seed, policy, drain, checks)", f"{self.wall_seconds:.1f}"),
            ("items lost", self.lost),
            ("items stored", self.items_stored),
            ("batches stored twice" if s.batch_size else "stored twice", self.duplicates),
            ("writes that reached S3 (object versions)", self.versions),
            ("ok log lines (killed workers included)", self.logged_ok),
            ("already-done (redelivered, not rewritten)", self.logged_already_done),
            ("failed attempts of healthy items (retried)", self.healthy_failed_attempts),
            ("messages given back on a stop (each a receive)", self.given_back),
            (
                "most receives a healthy item needed",
                f"{self.max_receives} (maxReceiveCount {s.max_receive_count})",
            ),
            ("outputs not equal to the custom code's result", self.wrong),
            (
                "stranded (visible / in flight / delayed)",
                f"{self.stranded} ({end.visible} / {end.in_flight} / {end.delayed})",
            ),
            ("healthy items dead-lettered", self.healthy_dead_lettered),
            ("dead-letter queue", f"{self.dead_lettered} (poison seeded: {self.poison})"),
            ("worker events of note", _counts(self.notable_events)),
        ]
        if s.hostile:
            rows += self._hostile_rows()
        if s.aws_rules:
            rows.append(("layer's injected answers", _counts(self.injected)))
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {value}" for name, value in rows]
        verdict = "PASS" if self.passed else "FAIL: " + "; ".join(self.failures)
        return "\n".join([*lines, verdict])

    def _hostile_rows(self) -> list[tuple[str, object]]:
        """Return the figures issue 11 asks of the hostile mix."""
        s = self.settings
        return [
            (
                "hostile items seeded / stored / dead-lettered",
                f"{self.hostile} / {self.hostile_stored} / {self.hostile_dead_lettered}",
            ),
            ("hostile items neither stored nor dead-lettered", self.hostile_unsettled),
            ("hostile items dead-lettered without their reason", self.hostile_without_reason),
            (
                "longest hostile attempt",
                f"{self.hostile_max_ms / 1000:.1f} s (ITEM_TIMEOUT_SECONDS {s.item_timeout:g})",
            ),
            (
                "fleet's peak RSS (VmHWM)",
                f"{self.peak_rss_kib / 1024:.1f} MiB; over budget: {self.over_memory_budget}",
            ),
            ("written outside the results prefix", self.outside_prefix),
        ]


def _counts(counter: Counter[Any]) -> str:
    """``name: n, name: n`` in name order, or ``none``."""
    return ", ".join(f"{name}: {n}" for name, n in sorted(counter.items())) or "none"


def verify(
    report: ChaosReport,
    s3: Any,
    sqs: Any,
    stack: ChaosStack,
    expected: dict[str, dict[str, Any]],
    poison: list[str],
    fleet: Fleet,
    hostile: list[HostileItem] | None = None,
) -> list[str]:
    """Run every check; record the figures and return a sentence for each failed check."""
    hostile = hostile or []
    # The run's own records (worker.manifest: each failed item's last failure) are no result.
    versions = {
        key: ids
        for key, ids in stored_versions(s3, stack.output_bucket).items()
        if not is_run_record(key, OUTPUT_PREFIX)
    }
    good = {key: ids for key, ids in versions.items() if key in expected}
    report.results = len(expected)
    report.stored = len(good)
    report.items_stored = sum(len(expected[key]) for key in good)
    report.versions = sum(len(v) for v in good.values())
    report.lost = sum(len(expected[key]) for key in set(expected) - set(versions))
    hostile_keys = {item.result_key for item in hostile}
    unexpected = set(versions) - set(expected) - hostile_keys
    report.hostile_stored = len(hostile_keys & set(versions))
    report.hostile_versions = sum(len(versions.get(key, [])) for key in hostile_keys)
    report.outside_prefix = sum(
        not key.startswith(OUTPUT_PREFIX) or ".." in key.split("/") for key in versions
    )
    for key, ids in good.items():
        for version_id in ids:
            body = s3.get_object(Bucket=stack.output_bucket, Key=key, VersionId=version_id)
            report.wrong += _wrong(key, body["Body"].read(), expected[key])
    read_logs(report, fleet)
    report.queue_end = queue_counts(sqs, stack.queue_url)
    dead = Counter(received_bodies(sqs, stack.dlq_url))
    report.dead_lettered = dead.total()
    hostile_bodies = Counter(item.body for item in hostile)
    healthy_dead = (dead - Counter(poison) - hostile_bodies).elements()
    report.healthy_dead_lettered = sum(message_items(read_message(body)) for body in healthy_dead)
    report.poison_not_dead_lettered = (Counter(poison) - dead).total()
    report.hostile_dead_lettered = (dead & hostile_bodies).total()
    report.hostile_unsettled = sum(
        (item.result_key in versions) == (item.body in dead) for item in hostile
    )
    reasons = [
        (event.get("source", ""), event.get("reason") or "")
        for _, event in fleet.events("item")
        if event.get("outcome") == "failed"
    ]
    report.hostile_without_reason = sum(
        item.body in dead
        and not any(
            source.endswith("/" + item.source) and item.reason in reason
            for source, reason in reasons
        )
        for item in hostile
    )
    report.peak_rss_kib = max((c.peak_rss_kib or 0 for c in fleet.children), default=0)
    fast = {id(child) for child, event in fleet.events("query-path") if ran_fast_path([event])}
    report.over_memory_budget = sum(
        (c.peak_rss_kib or 0) > peak_rss_budget_kib(id(c) in fast) for c in fleet.children
    )
    checks = [
        (report.lost == 0, f"{report.lost} items lost"),
        (not unexpected, f"{len(unexpected)} outputs at keys no source maps to"),
        (report.duplicates == 0, f"{report.duplicates} items stored twice"),
        (report.wrong == 0, f"{report.wrong} outputs differ from the custom code's result"),
        (report.stranded == 0, f"{report.stranded} messages stranded on the queue"),
        (
            report.healthy_dead_lettered == 0,
            f"{report.healthy_dead_lettered} healthy items dead-lettered",
        ),
        (
            report.poison_not_dead_lettered == 0,
            f"{report.poison_not_dead_lettered} poison items not dead-lettered",
        ),
        (
            not report.failed_slots,
            f"array children {report.failed_slots} not SUCCEEDED by Batch's rules",
        ),
    ]
    if report.settings.hostile:
        checks += _hostile_checks(report)
    return [sentence for held, sentence in checks if not held]


def _wrong(key: str, body: bytes, expected: dict[str, Any]) -> int:
    """Count the items whose stored result is not the custom code's (or is missing)."""
    if key.startswith(OUTPUT_PREFIX + BATCH_RESULTS):
        try:
            lines = {line.source: line.result for line in read_lines(body.splitlines())}
        except ValueError:
            return len(expected)
        extra = len(set(lines) - set(expected))
        return extra + sum(lines.get(source) != result for source, result in expected.items())
    try:
        result = json.loads(body)
    except ValueError:
        result = None
    (wanted,) = expected.values()
    return int(result != wanted)


def _hostile_checks(report: ChaosReport) -> list[tuple[bool, str]]:
    """Return issue 11's promises for the hostile mix, as (held, sentence if not) pairs.

    Only with ``hostile``, so runs without it keep their checks.
    """
    limit_ms = report.settings.item_timeout * 1000
    return [
        (
            report.hostile_unsettled == 0,
            f"{report.hostile_unsettled} hostile items neither stored nor dead-lettered (or both)",
        ),
        (
            report.hostile_without_reason == 0,
            f"{report.hostile_without_reason} hostile items dead-lettered without their reason",
        ),
        (
            report.hostile_max_ms <= limit_ms,
            f"a hostile attempt took {report.hostile_max_ms} ms, over ITEM_TIMEOUT_SECONDS",
        ),
        (
            report.peak_rss_kib > 0 and report.over_memory_budget == 0,
            f"{report.over_memory_budget} workers over their peak-RSS budget (or RSS unread)",
        ),
        (report.outside_prefix == 0, f"{report.outside_prefix} objects outside the prefix"),
    ]


def read_logs(report: ChaosReport, fleet: Fleet) -> None:
    """Record what the workers' logs tell: outcomes, receives, give-backs, events of note.

    Healthy items are told from poison by their ``source``: only good sources are under
    ``good/``. Each ``item`` line carries the message's receive count as ``attempt``.
    """
    items = [event for _, event in fleet.events("item")]
    healthy = [event for event in items if "/good/" in event.get("source", "")]
    report.hostile_max_ms = max(
        (int(e.get("duration_ms", 0)) for e in items if "/hostile/" in e.get("source", "")),
        default=0,
    )
    outcomes = Counter(event["outcome"] for event in healthy)
    report.logged_ok, report.logged_already_done = outcomes["ok"], outcomes["already-done"]
    report.healthy_failed_attempts = outcomes["failed"]
    report.max_receives = max((int(event["attempt"]) for event in healthy), default=0)
    report.given_back = sum(len(event["messages"]) for _, event in fleet.events("released"))
    report.notable_events = Counter(name for name in NOTABLE_EVENTS for _ in fleet.events(name))
