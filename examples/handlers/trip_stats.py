"""Summarise taxi trips: the Python way to plug custom code into the worker.

    HANDLER=examples.handlers.trip_stats:summarise

The worker calls ``summarise`` with one object's rows as S3 Select writes them by default
(``ROWS_FORMAT=json``): one JSON object per line, keyed by the CSV header, every value a
string. ``examples/command/trip_stats.sh`` computes the same summary from CSV rows, to show
the same job as a non-Python command; the two must agree to the cent.
"""

from __future__ import annotations

import json
from typing import Any


def _hundredths(value: str) -> int:
    """Read a two-decimal amount as an integer, so sums are exact and match the awk script."""
    return round(float(value) * 100)


def summarise(rows: str) -> dict[str, Any]:
    """Count trips and passengers and add up distances and fares of ``SELECT *`` rows."""
    trips = passengers = miles = fare = total = 0
    for line in rows.splitlines():
        trip = json.loads(line) if line.strip() else {}
        if not any(trip.values()):  # a blank source line: S3 Select makes it {"VendorID": ""}
            continue
        trips += 1
        passengers += int(trip["passenger_count"])
        miles += _hundredths(trip["trip_distance"])
        fare += _hundredths(trip["fare_amount"])
        total += _hundredths(trip["total_amount"])
    return {
        "trips": trips,
        "passengers": passengers,
        "total_distance": miles / 100,
        "mean_distance": float(f"{miles / trips / 100:.3f}") if trips else None,
        "total_fare": fare / 100,
        "total_amount": total / 100,
    }
