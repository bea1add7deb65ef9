"""Hourly prices for an attempt: Spot from the zone's history, On-Demand from the API or table.

On-Demand prices come from the Price List API, or the bundled offline table where that API is
unreachable (or first, for a what-if, so it needs no credentials).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from batchspot.cost.attempts import Attempt

PRICE_TABLE = Path(__file__).resolve().parent.parent / "data" / "ondemand_prices.json"
PRODUCT_DESCRIPTIONS = ["Linux/UNIX", "Linux/UNIX (Amazon VPC)"]
PRICING_API = "pricing-api"
OFFLINE_TABLE = "offline table"


def run_cost(seconds: float, per_hour: float | None) -> float | None:
    """Price of ``seconds`` of an instance at ``per_hour`` (per-second billing)."""
    return None if per_hour is None else seconds / 3600 * per_hour


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
    return json.loads(PRICE_TABLE.read_text())


class OnDemandPrices:
    """On-Demand prices from the Price List API and the offline table; remembers answers.

    A job's prices ask the API first (the table ages); a what-if asks the table first, so a
    hypothetical needs no AWS call, nor credentials, unless the table lacks the type.
    """

    def __init__(self, pricing: Any, region: str, *, offline_first: bool = False) -> None:
        """Use ``pricing`` (a client in a Price List API region) for prices in ``region``."""
        self.pricing = pricing
        self.region = region
        self.offline_first = offline_first
        self._api_reachable = True
        self._used: set[str] = set()
        self._known: dict[str, float | None] = {}

    @property
    def source(self) -> str:
        """Where the prices given so far came from."""
        if not self._used:
            return OFFLINE_TABLE if self.offline_first else PRICING_API
        return " + ".join(sorted(self._used))

    def __call__(self, instance_type: str) -> float | None:
        """Return the hourly On-Demand price of ``instance_type``."""
        if instance_type not in self._known:
            self._known[instance_type] = self._lookup(instance_type)
        return self._known[instance_type]

    def _from_table(self, instance_type: str) -> float | None:
        price = offline_table()["regions"].get(self.region, {}).get(instance_type)
        if price is not None:
            self._used.add(OFFLINE_TABLE)
        return price

    def _from_api(self, instance_type: str) -> float | None:
        if not self._api_reachable:
            return None
        try:
            price = ondemand_from_api(self.pricing, instance_type, self.region)
        except (ClientError, BotoCoreError):
            self._api_reachable = False  # unreachable here: do not ask again
            return None
        if price is not None:
            self._used.add(PRICING_API)
        return price

    def _lookup(self, instance_type: str) -> float | None:
        order = (self._from_table, self._from_api)
        for source in order if self.offline_first else reversed(order):
            price = source(instance_type)
            if price is not None:
                return price
        return None


def refresh_offline_table(pricing: Any, region: str, path: Path = PRICE_TABLE) -> int:
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
    ec2: Callable[[], Any],
    ondemand: Callable[[str], float | None],
    attempts: list[Attempt],
    spot_per_hour: float | None = None,
) -> list[AttemptCost]:
    """Attach the Spot and On-Demand hourly prices to each attempt.

    ``ec2`` makes the EC2 client, called only when a Spot price must be looked up.
    """
    spot_cache: dict[tuple[str, str, datetime, datetime], float | None] = {}
    costs = []
    for attempt in attempts:
        spot = spot_per_hour
        if spot is None and attempt.instance_type and attempt.zone:
            key = (attempt.instance_type, attempt.zone, attempt.started, attempt.stopped)
            if key not in spot_cache:
                spot_cache[key] = spot_price(ec2(), *key)
            spot = spot_cache[key]
        per_hour = ondemand(attempt.instance_type) if attempt.instance_type else None
        costs.append(AttemptCost(attempt, spot, per_hour))
    return costs
