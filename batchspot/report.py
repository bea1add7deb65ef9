"""``invoke report``: one picture and a few lines of a job, read from its workers' own logs.

The item and summary lines every worker writes (``worker.loop``) hold all it needs: when each
item settled, how, how long it took and why it failed; each worker process's run time, items
and AWS calls. They are read from CloudWatch Logs (the job's streams, as ``invoke logs`` finds
them) or from a local run's log directory (``invoke local``: one file per array child), so a
running job can be reported as well as a finished one. The cost panel prices the children's
run time Spot against On-Demand with ``batchspot.cost``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from statistics import quantiles
from typing import Any

from batchspot.cost import CostReport, saving
from batchspot.cost.attempts import Attempt
from batchspot.cost.prices import AttemptCost
from batchspot.cost.report import totals
from batchspot.errors import OperatorError
from batchspot.logs import fetch_events, job_streams
from worker.logs import records as log_records

# The panels of the picture, in order (their titles name them).
PANELS = (
    "Items over time",
    "Item duration",
    "Failures by reason",
    "Throughput per child",
    "Spot vs On-Demand",
)
# A failure's reason is shown cut to this many characters; the logs hold the whole text.
REASON_CHARS = 60
# The reasons drawn, most frequent first; the others are summed as one bar.
TOP_REASONS = 8


@dataclass(frozen=True)
class Item:
    """One item line: a message settled by a child."""

    at: float  # seconds since the epoch
    child: str
    outcome: str
    duration_ms: float | None
    reason: str | None
    dead_lettered: bool
    units: int = 1  # the items it settled: a batch's line settles all of its items


@dataclass
class Child:
    """One worker process's part of the job: its items and, once it ended, its summary."""

    name: str
    started: float | None = None
    ended: float | None = None
    seconds: float | None = None  # from the summary lines: its longest worker loop's run time
    items: int = 0
    aws_calls: int = 0
    calls: Counter[str] = field(default_factory=Counter)  # by ``service.Operation``

    @property
    def busy_seconds(self) -> float | None:
        """Its run time: the summary's, else (still running) from its start to its last line."""
        if self.seconds is not None:
            return self.seconds
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started

    @property
    def items_per_second(self) -> float:
        """Items settled per second of run time."""
        busy = self.busy_seconds
        return self.items / busy if busy else 0.0


@dataclass
class RunLog:
    """What the logs of one job say."""

    job_id: str
    items: list[Item] = field(default_factory=list)
    children: dict[str, Child] = field(default_factory=dict)

    def count(self, outcome: str) -> int:
        """Item lines with this outcome (``failed`` counts failed attempts)."""
        return sum(1 for item in self.items if item.outcome == outcome)

    @property
    def ended_items(self) -> int:
        """Items that reached their end: stored, found stored, ignored or dead-lettered.

        A batch's line counts its items. Failed attempts that were retried are not items that
        ended, though their calls count: that is what a retry costs.
        """
        return sum(
            item.units for item in self.items if item.outcome != "failed" or item.dead_lettered
        )

    @property
    def calls(self) -> Counter[str]:
        """AWS calls by ``service.Operation``, over the children's summaries so far."""
        return sum((child.calls for child in self.children.values()), Counter())

    @property
    def dead_lettered(self) -> int:
        """Items whose last failure sent them to the dead-letter queue."""
        return sum(1 for item in self.items if item.dead_lettered)

    @property
    def durations(self) -> list[float]:
        """Item durations in milliseconds, of the items that have one."""
        return [item.duration_ms for item in self.items if item.duration_ms is not None]

    @property
    def started(self) -> float:
        """When the first child wrote its first line (seconds since the epoch)."""
        return min((c.started for c in self.children.values() if c.started), default=0.0)

    @property
    def seconds(self) -> float:
        """From the first child's first line to the last child's last line."""
        ended = max((c.ended for c in self.children.values() if c.ended), default=0.0)
        return max(0.0, ended - self.started)

    @property
    def calls_per_item(self) -> float | None:
        """AWS calls per item settled, over the children that ended (their summaries)."""
        ended = [c for c in self.children.values() if c.seconds is not None]
        settled = sum(c.items for c in ended)
        return sum(c.aws_calls for c in ended) / settled if settled else None

    def add(self, child_name: str, record: dict[str, Any]) -> None:
        """Take in one log line of ``child_name``."""
        child = self.children.setdefault(child_name, Child(child_name))
        at = float(record.get("ts") or 0)
        child.started = at if child.started is None else min(child.started, at)
        child.ended = at if child.ended is None else max(child.ended, at)
        if record.get("event") == "item":
            child.items += 1
            self.items.append(
                Item(
                    at=at,
                    child=child_name,
                    outcome=str(record.get("outcome")),
                    duration_ms=record.get("duration_ms"),
                    reason=record.get("reason"),
                    dead_lettered=record.get("next") == "dead-letter queue",
                    units=int(record.get("items") or 1),
                )
            )
        elif record.get("event") == "summary":
            # One per worker process: a container runs WORKER_PROCESSES of them side by side.
            child.seconds = max(child.seconds or 0.0, float(record.get("seconds") or 0))
            child.aws_calls += int(record.get("aws_calls") or 0)
            child.calls.update(record.get("calls") or {})


def _run_of(job_id: str) -> str:
    """Return the run an array child's job id (``<job>:<index>``) belongs to."""
    return job_id.split(":", 1)[0]


def from_log_dir(log_dir: Path, job_id: str | None = None) -> RunLog:
    """Read a local run's worker logs (``invoke local``'s ``<state dir>/logs``).

    Each file whose ``start`` line names ``job_id`` is one child; without ``job_id``, the job
    of the newest such file is reported.
    """
    files: list[tuple[float, str, Path, list[dict[str, Any]]]] = []
    for path in sorted(log_dir.glob("*.log")):
        records = list(log_records(path.read_text(errors="replace").splitlines()))
        start = next((r for r in records if r.get("event") == "start"), None)
        if start is not None:
            files.append((path.stat().st_mtime, _run_of(str(start.get("job_id"))), path, records))
    if not files:
        raise OperatorError(f"no worker log in {log_dir}: run `invoke local` first")
    wanted = job_id or max(files)[1]
    run = RunLog(wanted)
    for _, job, path, records in files:
        if job == wanted:
            for record in records:
                run.add(path.stem, record)
    if not run.children:
        raise OperatorError(f"no worker log in {log_dir} is from job {wanted}")
    return run


def from_cloudwatch(batch: Any, logs: Any, job_id: str, log_group: str) -> RunLog:
    """Read a Batch job's worker logs from CloudWatch Logs, each stream labelled by child."""
    streams = job_streams(batch, job_id)
    try:
        events = list(fetch_events(logs, log_group, sorted(streams.labels)))
    except LookupError as error:
        raise OperatorError(str(error)) from None
    return from_events(job_id, streams.labels, events)


def from_events(job_id: str, labels: Mapping[str, str], events: Iterable[dict[str, Any]]) -> RunLog:
    """Read a job's worker logs from CloudWatch events already fetched (``fetch_events``).

    ``labels`` names each event's stream's child. ``invoke local --containers`` fetches the
    events once, for its summaries and for this report.
    """
    run = RunLog(job_id)
    for event in events:
        label = labels.get(event.get("logStreamName", ""), "?")
        for record in log_records([event["message"]]):
            run.add(label, record)
    if not run.children:
        raise OperatorError(f"job {job_id} has no worker log lines yet: retry once a child runs")
    return run


def estimated_costs(
    run: RunLog, instance_type: str, spot_per_hour: float, ondemand_per_hour: float
) -> CostReport:
    """Price each child's run time at the given prices (a local run has no instance of its own)."""
    costs = []
    for child in run.children.values():
        busy, ended = child.busy_seconds, child.ended
        if busy is None or ended is None:
            continue
        stopped = datetime.fromtimestamp(ended, UTC)
        started = datetime.fromtimestamp(ended - busy, UTC)
        attempt = Attempt(child.name, 1, started, stopped, instance_type=instance_type)
        costs.append(AttemptCost(attempt, spot_per_hour, ondemand_per_hour))
    return CostReport(costs, f"offline table, {instance_type}, Spot {spot_per_hour} $/h given")


def _percentile(values: list[float], share: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return quantiles(values, n=100, method="inclusive")[share - 1]


def summary(run: RunLog, cost: CostReport | None) -> str:
    """Return a few lines: counts, durations, calls per item, throughput, cost, top failure."""
    p50, p99 = _percentile(run.durations, 50), _percentile(run.durations, 99)
    per_item = run.calls_per_item
    lines = [
        f"job {run.job_id}: {len(run.items)} item lines from {len(run.children)} children "
        f"over {run.seconds:.1f} s",
        f"items: succeeded {run.count('ok')}, already done {run.count('already-done')}, "
        f"failed attempts {run.count('failed')}, dead-lettered {run.dead_lettered}",
        "item duration: "
        + (f"p50 {p50:.0f} ms, p99 {p99:.0f} ms" if p50 is not None and p99 is not None else "n/a")
        + f"; AWS calls per item: {'n/a' if per_item is None else f'{per_item:.2f}'}",
    ]
    rates = sorted(run.children.values(), key=lambda c: c.items_per_second)
    if rates:
        lines.append(
            f"throughput per child: {rates[0].items_per_second:.2f} to "
            f"{rates[-1].items_per_second:.2f} items/s"
        )
    if cost is not None and cost.costs:
        spot, ondemand, priced = totals(cost.costs)
        lines.append(
            f"cost: On-Demand {ondemand:.5f} $ vs Spot {spot:.5f} $, "
            f"{saving(spot, ondemand):.0%} saved ({priced} attempts; {cost.ondemand_source})"
        )
    reasons = _reasons(run)
    if reasons:
        reason, count = reasons[0]
        lines.append(f"most frequent failure ({count}x): {reason}")
    return "\n".join(lines)


def _reasons(run: RunLog) -> list[tuple[str, int]]:
    counted = Counter(
        (item.reason or "no reason given")[:REASON_CHARS]
        for item in run.items
        if item.outcome == "failed"
    )
    return counted.most_common()


def picture(run: RunLog, cost: CostReport | None) -> Any:
    """Return the report's matplotlib Figure: one panel per entry of :data:`PANELS`."""
    from matplotlib.figure import Figure  # imported here: slow, and only this needs it

    figure = Figure(figsize=(15, 8.5), layout="constrained")
    figure.suptitle(f"job {run.job_id}")
    grid = figure.subplots(2, 3)
    over_time, durations, failures, children, money, _ = grid.flat
    figure.delaxes(grid.flat[-1])

    for outcome, label in (
        ("ok", "succeeded"),
        ("already-done", "already done"),
        ("failed", "failed"),
    ):
        moments = sorted(item.at - run.started for item in run.items if item.outcome == outcome)
        if moments:
            over_time.step([0.0, *moments], range(len(moments) + 1), where="post", label=label)
    over_time.set(title=PANELS[0], xlabel="seconds since the first child started", ylabel="items")
    over_time.legend(loc="upper left")

    durations.hist(run.durations or [0.0], bins=20)
    durations.set(title=PANELS[1], xlabel="milliseconds", ylabel="items")

    reasons = _reasons(run)
    shown = reasons[:TOP_REASONS]
    if len(reasons) > TOP_REASONS:
        shown.append(("other reasons", sum(count for _, count in reasons[TOP_REASONS:])))
    if shown:
        failures.barh([reason for reason, _ in shown][::-1], [count for _, count in shown][::-1])
    else:
        failures.text(0.5, 0.5, "no failures", ha="center", va="center")
        failures.set(xticks=[], yticks=[])
    failures.set(title=PANELS[2], xlabel="failed attempts")

    names = sorted(run.children)
    bars = children.bar(names, [run.children[n].items_per_second for n in names])
    children.bar_label(bars, labels=[f"{run.children[n].items} items" for n in names])
    children.set(title=PANELS[3], ylabel="items per second")
    children.tick_params(axis="x", labelrotation=30)

    spot, ondemand, _ = totals(cost.costs) if cost is not None else (0.0, 0.0, 0)
    bars = money.bar(["On-Demand", "Spot"], [ondemand, spot], color=["tab:gray", "tab:green"])
    money.bar_label(bars, fmt="%.5f $")
    money.set(title=PANELS[4], ylabel="USD")
    if cost is None or not cost.costs:
        money.text(0.5, 0.5, "not priced yet", ha="center", va="center", transform=money.transAxes)
    return figure


def write_report(run: RunLog, cost: CostReport | None, path: Path) -> str:
    """Save the picture as a PNG at ``path``; return the text summary with the PNG's path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    picture(run, cost).savefig(path, format="png", dpi=100)
    return f"{summary(run, cost)}\npicture: {path}"
