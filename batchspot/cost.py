"""What a finished job cost on Spot, and what it would have cost On-Demand.

The method is the original write-up's: for each attempt (each array child, each retry), the
instance's hourly price times the attempt's run time, once at the Spot price in effect in that
zone while it ran and once at the On-Demand price. An instance running several children at once
is counted once per child, so this is the price of the capacity each attempt held, not an
invoice; boot and idle time are not counted.

The instance of an attempt comes from Batch (its ECS container instance) then ECS (its EC2
instance id) then EC2 (type and zone). ECS and EC2 forget a terminated instance after about an
hour, so run this soon after the job ends, or give the instance type and zone yourself.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

PRICE_TABLE = "data/ondemand_prices.json"
PRODUCT_DESCRIPTIONS = ["Linux/UNIX", "Linux/UNIX (Amazon VPC)"]
DESCRIBE_CHUNK = 100


@dataclass(frozen=True)
class Attempt:
    """One attempt of one job or array child, and the instance it ran on."""

    job_id: str
    number: int
    started: datetime
    stopped: datetime
    container_instance_arn: str | None = None
    instance_type: str | None = None
    zone: str | None = None

    @property
    def seconds(self) -> float:
        """Run time of the attempt."""
        return (self.stopped - self.started).total_seconds()


@dataclass(frozen=True)
class AttemptCost:
    """An attempt with its two hourly prices (None where unknown)."""

    attempt: Attempt
    spot_per_hour: float | None
    ondemand_per_hour: float | None

    @property
    def spot(self) -> float | None:
        """What the attempt cost at the Spot price."""
        return run_cost(self.attempt.seconds, self.spot_per_hour)

    @property
    def ondemand(self) -> float | None:
        """What the attempt would have cost On-Demand."""
        return run_cost(self.attempt.seconds, self.ondemand_per_hour)


def run_cost(seconds: float, per_hour: float | None) -> float | None:
    """Price of ``seconds`` of an instance at ``per_hour`` (per-second billing)."""
    return None if per_hour is None else seconds / 3600 * per_hour


def saving(spot: float, ondemand: float) -> float:
    """Fraction of the On-Demand cost that Spot saved."""
    return 1 - spot / ondemand if ondemand else 0.0


# --- attempts and their instances ------------------------------------------------------------


def _millis(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, tz=UTC)


def job_attempts(batch: Any, job_id: str) -> list[Attempt]:
    """Every finished attempt of the job, or of each child of an array job."""
    jobs = batch.describe_jobs(jobs=[job_id])["jobs"]
    if not jobs:
        raise LookupError(f"no Batch job {job_id!r} (jobs are kept about 7 days after they end)")
    size = jobs[0].get("arrayProperties", {}).get("size")
    if size:
        ids = [f"{job_id}:{index}" for index in range(size)]
        jobs = [
            job
            for start in range(0, len(ids), DESCRIBE_CHUNK)
            for job in batch.describe_jobs(jobs=ids[start : start + DESCRIBE_CHUNK])["jobs"]
        ]
    return [
        Attempt(
            job_id=job["jobId"],
            number=number,
            started=_millis(attempt["startedAt"]),
            stopped=_millis(attempt["stoppedAt"]),
            container_instance_arn=attempt.get("container", {}).get("containerInstanceArn"),
        )
        for job in jobs
        for number, attempt in enumerate(job.get("attempts", []), start=1)
        if attempt.get("startedAt") and attempt.get("stoppedAt")
    ]


def _cluster_of(container_instance_arn: str) -> str | None:
    # arn:aws:ecs:<region>:<account>:container-instance/<cluster>/<id>
    parts = container_instance_arn.split(":", 5)[-1].split("/")
    return parts[1] if len(parts) == 3 else None


def locate_instances(ecs: Any, ec2: Any, attempts: list[Attempt]) -> list[Attempt]:
    """Fill in each attempt's instance type and zone where ECS and EC2 still know them."""
    by_cluster: dict[str, set[str]] = defaultdict(set)
    for attempt in attempts:
        arn = attempt.container_instance_arn
        if arn and (cluster := _cluster_of(arn)):
            by_cluster[cluster].add(arn)
    instance_of: dict[str, str] = {}  # container instance ARN -> EC2 instance id
    for cluster, arns in by_cluster.items():
        ordered = sorted(arns)
        for start in range(0, len(ordered), DESCRIBE_CHUNK):
            found = ecs.describe_container_instances(
                cluster=cluster, containerInstances=ordered[start : start + DESCRIBE_CHUNK]
            )["containerInstances"]
            instance_of.update({c["containerInstanceArn"]: c["ec2InstanceId"] for c in found})
    placement = _describe_instances(ec2, sorted(set(instance_of.values())))
    located = []
    for attempt in attempts:
        instance_id = instance_of.get(attempt.container_instance_arn or "")
        instance_type, zone = placement.get(instance_id or "", (None, None))
        located.append(replace(attempt, instance_type=instance_type, zone=zone))
    return located


def _describe_instances(ec2: Any, instance_ids: list[str]) -> dict[str, tuple[str, str]]:
    placement: dict[str, tuple[str, str]] = {}
    for instance_id in instance_ids:  # one by one: a single forgotten id fails a whole call
        try:
            reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        except ClientError as error:
            if error.response["Error"]["Code"] != "InvalidInstanceID.NotFound":
                raise
            continue
        for instance in (i for r in reservations for i in r["Instances"]):
            placement[instance["InstanceId"]] = (
                instance["InstanceType"],
                instance["Placement"]["AvailabilityZone"],
            )
    return placement


# --- prices ----------------------------------------------------------------------------------


def effective_price(
    history: Iterable[tuple[datetime, float]], start: datetime, stop: datetime
) -> float | None:
    """Time-weighted Spot price over ``[start, stop]`` from a price-change history.

    Each record is the price from its timestamp until the next one; a history that begins
    after ``start`` is taken to have held its first price since ``start``.
    """
    changes = sorted(history)
    if not changes:
        return None
    if stop <= start:
        earlier = [price for moment, price in changes if moment <= start]
        return earlier[-1] if earlier else changes[0][1]
    total = 0.0
    for index, (moment, price) in enumerate(changes):
        begin = start if index == 0 else max(moment, start)
        end = min(changes[index + 1][0], stop) if index + 1 < len(changes) else stop
        if end > begin:
            total += price * (end - begin).total_seconds()
    return total / (stop - start).total_seconds()


def spot_price(
    ec2: Any, instance_type: str, zone: str, start: datetime, stop: datetime
) -> float | None:
    """Return the Spot price in effect in ``zone`` while the attempt ran (time-weighted)."""
    pages = ec2.get_paginator("describe_spot_price_history").paginate(
        InstanceTypes=[instance_type],
        AvailabilityZone=zone,
        ProductDescriptions=PRODUCT_DESCRIPTIONS,
        StartTime=start,
        EndTime=stop,
    )
    history = [
        (record["Timestamp"], float(record["SpotPrice"]))
        for page in pages
        for record in page["SpotPriceHistory"]
    ]
    return effective_price(history, start, stop)


def ondemand_from_api(pricing: Any, instance_type: str, region: str) -> float | None:
    """Return the On-Demand Linux price from the AWS Price List API (None if it has none)."""
    filters = {
        "instanceType": instance_type,
        "regionCode": region,
        "operatingSystem": "Linux",
        "tenancy": "Shared",
        "preInstalledSw": "NA",
        "capacitystatus": "Used",
        "licenseModel": "No License required",
    }
    response = pricing.get_products(
        ServiceCode="AmazonEC2",
        Filters=[{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in filters.items()],
        MaxResults=10,
    )
    for product in map(json.loads, response["PriceList"]):
        for term in product["terms"].get("OnDemand", {}).values():
            for dimension in term["priceDimensions"].values():
                usd = float(dimension["pricePerUnit"]["USD"])
                if usd > 0:
                    return usd
    return None


def offline_table() -> dict[str, Any]:
    """Load the bundled On-Demand price table (see its ``source`` and ``as_of`` fields)."""
    return json.loads((Path(__file__).parent / PRICE_TABLE).read_text())


class OnDemandPrices:
    """On-Demand prices from the Price List API, else the offline table; remembers answers."""

    def __init__(self, pricing: Any, region: str) -> None:
        """Use ``pricing`` (a client in a Price List API region) for prices in ``region``."""
        self.pricing = pricing
        self.region = region
        self.source = "pricing-api"
        self._known: dict[str, float | None] = {}

    def __call__(self, instance_type: str) -> float | None:
        """Return the hourly On-Demand price of ``instance_type``."""
        if instance_type not in self._known:
            self._known[instance_type] = self._lookup(instance_type)
        return self._known[instance_type]

    def _lookup(self, instance_type: str) -> float | None:
        if self.source == "pricing-api":
            try:
                return ondemand_from_api(self.pricing, instance_type, self.region)
            except (ClientError, BotoCoreError):
                self.source = "offline table"  # unreachable here: do not ask again
        return offline_table()["regions"].get(self.region, {}).get(instance_type)


def refresh_offline_table(pricing: Any, region: str, path: Path) -> int:
    """Re-fetch every price of ``region`` in the table from the Price List API; return count."""
    table = json.loads(path.read_text())
    prices = table["regions"].setdefault(region, {})
    for instance_type in sorted(prices):
        price = ondemand_from_api(pricing, instance_type, region)
        if price is not None:
            prices[instance_type] = price
    table["as_of"] = f"{datetime.now(UTC):%Y-%m-%d}, fetched from the Price List API"
    path.write_text(json.dumps(table, indent=2) + "\n")
    return len(prices)


def price_attempts(
    ec2: Any,
    ondemand: Callable[[str], float | None],
    attempts: list[Attempt],
    spot_per_hour: float | None = None,
) -> list[AttemptCost]:
    """Attach the Spot and On-Demand hourly prices to each attempt."""
    spot_cache: dict[tuple[str, str, datetime, datetime], float | None] = {}
    costs = []
    for attempt in attempts:
        spot = spot_per_hour
        if spot is None and attempt.instance_type and attempt.zone:
            key = (attempt.instance_type, attempt.zone, attempt.started, attempt.stopped)
            if key not in spot_cache:
                spot_cache[key] = spot_price(ec2, *key)
            spot = spot_cache[key]
        per_hour = ondemand(attempt.instance_type) if attempt.instance_type else None
        costs.append(AttemptCost(attempt, spot, per_hour))
    return costs


@dataclass(frozen=True)
class CostReport:
    """The priced attempts of one job, and where the On-Demand prices came from."""

    costs: list[AttemptCost]
    ondemand_source: str

    def render(self) -> str:
        """Return the table and the totals line."""
        return render_table(self.costs, self.ondemand_source)


def job_cost(
    batch: Any,
    ecs: Any,
    ec2: Any,
    ondemand: OnDemandPrices,
    *,
    job_id: str,
    instance_type: str | None = None,
    zone: str | None = None,
    spot_per_hour: float | None = None,
    ondemand_per_hour: float | None = None,
) -> CostReport:
    """Price every attempt of a finished job; given values fill what AWS no longer knows."""
    attempts = locate_instances(ecs, ec2, job_attempts(batch, job_id))
    if not attempts:
        raise LookupError(f"job {job_id} has no finished attempt to price yet")
    attempts = [
        replace(a, instance_type=a.instance_type or instance_type, zone=a.zone or zone)
        for a in attempts
    ]
    return _priced(ec2, ondemand, attempts, spot_per_hour, ondemand_per_hour)


def what_if(
    ec2: Any,
    ondemand: OnDemandPrices,
    *,
    seconds: float,
    instance_type: str,
    zone: str | None = None,
    spot_per_hour: float | None = None,
    ondemand_per_hour: float | None = None,
) -> CostReport:
    """Price one hypothetical run, e.g. the original write-up's 625 s on a c4.4xlarge.

    Without a Spot price, the price in effect in ``zone`` over the last ``seconds`` is used.
    """
    stopped = datetime.now(UTC)
    attempt = Attempt(
        job_id="what-if",
        number=1,
        started=stopped - timedelta(seconds=seconds),
        stopped=stopped,
        instance_type=instance_type,
        zone=zone,
    )
    return _priced(ec2, ondemand, [attempt], spot_per_hour, ondemand_per_hour)


def _priced(
    ec2: Any,
    ondemand: OnDemandPrices,
    attempts: list[Attempt],
    spot_per_hour: float | None,
    ondemand_per_hour: float | None,
) -> CostReport:
    if ondemand_per_hour is not None:
        costs = price_attempts(ec2, lambda _: ondemand_per_hour, attempts, spot_per_hour)
        return CostReport(costs, "given")
    costs = price_attempts(ec2, ondemand, attempts, spot_per_hour)
    return CostReport(costs, ondemand.source)


# --- report ----------------------------------------------------------------------------------


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
    line = (
        f"{priced} of {len(costs)} attempts priced: On-Demand {ondemand:.4f} $ vs Spot "
        f"{spot:.4f} $, {saving(spot, ondemand):.0%} saved (On-Demand prices: {ondemand_source})"
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
    axes.set_title(
        f"Spot {spot:.4f} $ vs On-Demand {ondemand:.4f} $: {saving(spot, ondemand):.0%} saved"
    )
    axes.legend()
    figure.savefig(path, format="png", dpi=120)
    return path
