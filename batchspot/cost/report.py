"""A priced job as an operator reads it: a fixed-width table, a totals line, a PNG chart."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from batchspot.cost.prices import AttemptCost


def saving(spot: float, ondemand: float) -> float:
    """Fraction of the On-Demand cost that Spot saved."""
    return 1 - spot / ondemand if ondemand else 0.0


def verdict(spot: float, ondemand: float) -> str:
    """Return ``68% saved``, or why there is no percentage (no On-Demand cost to compare)."""
    if ondemand <= 0:
        return "no saving to compute: the On-Demand cost is 0"
    return f"{saving(spot, ondemand):.0%} saved"


@dataclass(frozen=True)
class CostReport:
    """The priced attempts of one job, and where the On-Demand prices came from."""

    costs: list[AttemptCost]
    ondemand_source: str

    def render(self) -> str:
        """Return the table and the totals line."""
        return render_table(self.costs, self.ondemand_source)

    @property
    def priced(self) -> bool:
        """Whether any attempt was priced both ways (else there is nothing to chart)."""
        return totals(self.costs)[2] > 0


def _money(value: float | None) -> str:
    return "?" if value is None else f"{value:.4f}"


def render_table(costs: list[AttemptCost], ondemand_source: str) -> str:
    """Return a fixed-width table, one row per attempt, then the totals and the saving."""
    header = (
        f"{'job':<40} {'try':>3} {'instance':<12} {'zone':<11} {'run s':>8} "
        f"{'spot $/h':>9} {'od $/h':>9} {'spot $':>9} {'od $':>9}"
    )
    rows = [header, "-" * len(header)]
    for cost in costs:
        attempt = cost.attempt
        rows.append(
            f"{attempt.job_id:<40} {attempt.number:>3} {attempt.instance_type or '?':<12} "
            f"{attempt.zone or '?':<11} {attempt.seconds:>8.0f} "
            f"{_money(cost.spot_per_hour):>9} {_money(cost.ondemand_per_hour):>9} "
            f"{_money(cost.spot):>9} {_money(cost.ondemand):>9}"
        )
    rows.append("")
    rows.append(summary(costs, ondemand_source))
    return "\n".join(rows)


def totals(costs: list[AttemptCost]) -> tuple[float, float, int]:
    """Spot and On-Demand totals over the attempts priced both ways, and how many those are."""
    priced = [c for c in costs if c.spot is not None and c.ondemand is not None]
    return sum(c.spot for c in priced), sum(c.ondemand for c in priced), len(priced)  # type: ignore[misc]


def summary(costs: list[AttemptCost], ondemand_source: str) -> str:
    """Return the totals line: On-Demand vs Spot, the saving, and what was left out."""
    spot, ondemand, priced = totals(costs)
    if not priced:
        return (
            f"nothing priced: none of the {len(costs)} attempts has an instance type, a zone and "
            "both prices (see the table); give what AWS no longer knows with --instance-type, "
            "--zone, --spot-price, --ondemand-price"
        )
    line = (
        f"{priced} of {len(costs)} attempts priced: On-Demand {ondemand:.4f} $ vs Spot "
        f"{spot:.4f} $, {verdict(spot, ondemand)} (On-Demand prices: {ondemand_source})"
    )
    if priced < len(costs):
        line += "\nunpriced attempts lack an instance type, a zone or a price: see the table"
    return line


def write_chart(costs: list[AttemptCost], path: Path) -> Path:
    """Save a bar chart of On-Demand vs Spot cost per instance type as a PNG."""
    from matplotlib.figure import Figure  # imported here: slow, and only this needs it

    by_type: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for cost in costs:
        if cost.spot is not None and cost.ondemand is not None:
            by_type[cost.attempt.instance_type or "?"][0] += cost.ondemand
            by_type[cost.attempt.instance_type or "?"][1] += cost.spot
    names = sorted(by_type)
    spot, ondemand, _ = totals(costs)
    figure = Figure(figsize=(max(4.0, 1.6 * len(names) + 2), 3.5), layout="constrained")
    axes = figure.subplots()
    positions = range(len(names))
    width = 0.38
    od_bars = axes.bar([p - width / 2 for p in positions], [by_type[n][0] for n in names], width)
    spot_bars = axes.bar([p + width / 2 for p in positions], [by_type[n][1] for n in names], width)
    od_bars.set_label("On-Demand")
    spot_bars.set_label("Spot")
    for bars in (od_bars, spot_bars):
        axes.bar_label(bars, fmt="%.4f $")
    axes.set_xticks(list(positions), names)
    axes.set_ylabel("USD")
    axes.set_title(f"Spot {spot:.4f} $ vs On-Demand {ondemand:.4f} $: {verdict(spot, ondemand)}")
    axes.legend()
    figure.savefig(path, format="png", dpi=120)
    return path
