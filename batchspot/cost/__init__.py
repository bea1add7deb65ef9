"""What a finished job cost on Spot, and what it would have cost On-Demand.

The method is the original write-up's: for each attempt (each array child, each retry), the
instance's hourly price times the attempt's run time, once at the Spot price in effect in that
zone while it ran and once at the On-Demand price. An instance running several children at once
is counted once per child, so this is the price of the capacity each attempt held, not an
invoice; boot and idle time are not counted.

One module per job: :mod:`~batchspot.cost.attempts` finds the attempts and their instances,
:mod:`~batchspot.cost.prices` prices them, :mod:`~batchspot.cost.report` renders the result.
Clients are made through ``aws(service, **options)`` (``batchspot.stack.aws``) only when a
price must be looked up, so a what-if with its prices given makes no AWS call at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3

from batchspot.cost.attempts import Attempt, job_attempts, locate_instances
from batchspot.cost.prices import (
    OnDemandPrices,
    offline_table,
    price_attempts,
    refresh_offline_table,
    run_cost,
)
from batchspot.cost.report import CostReport, saving, write_chart
from batchspot.errors import OperatorError

__all__ = [
    "CostReport",
    "Given",
    "job_cost",
    "offline_table",
    "refresh_prices",
    "run_cost",
    "saving",
    "what_if",
    "write_chart",
]

Clients = Callable[..., Any]  # batchspot.stack.aws: (service, **options) -> boto3 client
PRICING_REGION = "us-east-1"  # the Price List API lives in a few regions; this one answers all
WHAT_IF_REGION = "us-east-1"  # the write-up's, for a what-if on a machine with no region set


@dataclass(frozen=True)
class Given:
    """What the operator supplied, filling in what AWS no longer knows (or need not be asked)."""

    instance_type: str | None = None
    zone: str | None = None
    spot_per_hour: float | None = None
    ondemand_per_hour: float | None = None


def _pricing(aws: Clients) -> Any:
    return aws("pricing", region=PRICING_REGION, attempts=2)


def job_cost(aws: Clients, *, job_id: str, region: str | None, given: Given) -> CostReport:
    """Price every attempt of a finished job; ``given`` fills what AWS no longer knows."""
    ec2 = aws("ec2")
    attempts = locate_instances(aws("ecs"), ec2, job_attempts(aws("batch"), job_id))
    if not attempts:
        raise OperatorError(
            f"job {job_id} has no finished attempt to price yet: retry once it ends"
        )
    attempts = [
        replace(a, instance_type=a.instance_type or given.instance_type, zone=a.zone or given.zone)
        for a in attempts
    ]
    ondemand = OnDemandPrices(_pricing(aws), region or ec2.meta.region_name)
    return _priced(lambda: ec2, ondemand, attempts, given)


def what_if(aws: Clients, *, seconds: float, region: str | None, given: Given) -> CostReport:
    """Price one hypothetical run, e.g. the original write-up's 625 s on a c4.4xlarge.

    On-Demand comes from the offline table first; without a Spot price, the price in effect
    in ``given.zone`` over the last ``seconds`` is looked up.
    """
    if not given.instance_type:
        raise OperatorError("--seconds needs --instance-type (e.g. --instance-type c4.4xlarge)")
    stopped = datetime.now(UTC)
    attempt = Attempt(
        job_id="what-if",
        number=1,
        started=stopped - timedelta(seconds=seconds),
        stopped=stopped,
        instance_type=given.instance_type,
        zone=given.zone,
    )
    where = region or boto3.session.Session().region_name or WHAT_IF_REGION
    ondemand = OnDemandPrices(_pricing(aws), where, offline_first=True)
    return _priced(lambda: aws("ec2"), ondemand, [attempt], given)


def refresh_prices(aws: Clients, region: str | None) -> int:
    """Re-fetch the offline table's prices of the region from the Price List API; return count."""
    return refresh_offline_table(_pricing(aws), region or aws("ec2").meta.region_name)


def _priced(
    ec2: Callable[[], Any], ondemand: OnDemandPrices, attempts: list[Attempt], given: Given
) -> CostReport:
    if given.ondemand_per_hour is not None:
        fixed = given.ondemand_per_hour
        costs = price_attempts(ec2, lambda _: fixed, attempts, given.spot_per_hour)
        return CostReport(costs, "given")
    costs = price_attempts(ec2, ondemand, attempts, given.spot_per_hour)
    return CostReport(costs, ondemand.source)
