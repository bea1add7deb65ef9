"""Generate twelve small monthly CSVs shaped like NYC TLC's 2018 yellow-taxi trip data.

The original batch job ran over ``trip data/yellow_tripdata_2018-MM.csv`` in a public bucket.
Downloading gigabytes is slow and the public copy may move, so demos and tests use this
stand-in instead: the same key names (space included), the same 17 columns in the same order,
the same value formats (``.50`` miles, ``4.5`` dollars), plausible values, and a seeded random
generator so every run produces byte-identical files. Only the real files' blank second line
is left out. ``--format parquet`` writes the same trips as Parquet, typed as the TLC has
published them since 2022 (integers, doubles, microsecond timestamps, text).

It lives in the control plane because ``invoke local`` uploads it, and must do so from an
installed package as well as from a checkout.

    python -m batchspot.sample_data --out /tmp/taxi --rows 2000 [--format parquet]
"""

from __future__ import annotations

import argparse
import calendar
import io
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

YEAR = 2018
DEFAULT_ROWS = 2000
DEFAULT_SEED = 2018
FOLDER = "trip data"
FORMATS = ("csv", "parquet")
Format = Literal["csv", "parquet"]

# The 2018 layout; congestion_surcharge only appeared in 2019.
COLUMNS = (
    "VendorID",
    "tpep_pickup_datetime",
    "tpep_dropoff_datetime",
    "passenger_count",
    "trip_distance",
    "RatecodeID",
    "store_and_fwd_flag",
    "PULocationID",
    "DOLocationID",
    "payment_type",
    "fare_amount",
    "extra",
    "mta_tax",
    "tip_amount",
    "tolls_amount",
    "improvement_surcharge",
    "total_amount",
)

_WHOLE_NUMBERS = frozenset(
    {"VendorID", "passenger_count", "RatecodeID", "PULocationID", "DOLocationID", "payment_type"}
)
_JFK_FLAT_FARE = 5200  # cents; rate code 2
_TOLL = 576  # cents; the most common toll in the 2018 data


def month_key(month: int, prefix: str = "", fmt: Format = "csv") -> str:
    """Return one month's object key, e.g. ``trip data/yellow_tripdata_2018-01.csv``."""
    if not 1 <= month <= 12:
        raise ValueError(f"month must be 1..12, got {month}")
    return f"{prefix}{FOLDER}/yellow_tripdata_{YEAR}-{month:02d}.{fmt}"


def _money(cents: int) -> str:
    """Format like the TLC files: ``4.5``, ``14``, ``0.3``, ``16.55``."""
    return f"{cents / 100:.2f}".rstrip("0").rstrip(".")


def _miles(hundredths: int) -> str:
    """Format like the TLC files: two decimals, no leading zero below a mile (``.50``)."""
    text = f"{hundredths / 100:.2f}"
    return text[1:] if text.startswith("0.") else text


def _trip(rng: random.Random, month: int) -> list[Any]:
    """One plausible trip starting in ``month``; money is computed in cents so totals add up."""
    days = calendar.monthrange(YEAR, month)[1]
    pickup = datetime(YEAR, month, 1) + timedelta(seconds=rng.randrange(days * 86400))
    hundredths = max(1, round(rng.lognormvariate(0.5, 0.9) * 100))
    minutes = hundredths / 100 / rng.uniform(6, 20) * 60 + rng.uniform(1, 4)
    dropoff = pickup + timedelta(seconds=round(minutes * 60))
    rate_code = 2 if rng.random() < 0.02 else 1
    # Standard rate: $2.50 flag drop, then 50 cents per fifth of a mile or per slow minute.
    metered = 250 + 50 * round(hundredths / 20 + minutes * 0.3)
    fare = _JFK_FLAT_FARE if rate_code == 2 else metered
    night, rush = pickup.hour >= 20 or pickup.hour < 6, 16 <= pickup.hour < 20
    extra = 50 if night else 100 if rush and pickup.weekday() < 5 else 0
    payment = rng.choices((1, 2, 3, 4), weights=(70, 28, 1, 1))[0]
    tip = round(fare * rng.uniform(0.1, 0.25)) if payment == 1 else 0
    tolls = _TOLL if rng.random() < 0.05 else 0
    mta_tax, improvement = 50, 30
    total = fare + extra + mta_tax + tip + tolls + improvement
    return [
        rng.choice((1, 2)),
        f"{pickup:%Y-%m-%d %H:%M:%S}",
        f"{dropoff:%Y-%m-%d %H:%M:%S}",
        rng.choices((1, 2, 3, 4, 5, 6), weights=(70, 15, 4, 2, 5, 4))[0],
        _miles(hundredths),
        rate_code,
        "Y" if rng.random() < 0.01 else "N",
        rng.randint(1, 265),
        rng.randint(1, 265),
        payment,
        *(_money(c) for c in (fare, extra, mta_tax, tip, tolls, improvement, total)),
    ]


def _month_trips(month: int, rows: int, seed: int) -> list[list[Any]]:
    """One month's trips in pickup order, as the CSV writes them."""
    rng = random.Random(seed * 100 + month)  # each month on its own, so any one can be rebuilt
    return sorted((_trip(rng, month) for _ in range(rows)), key=lambda trip: trip[1])


def month_csv(month: int, rows: int = DEFAULT_ROWS, seed: int = DEFAULT_SEED) -> str:
    """One month's file as text: a header line, then ``rows`` trips in pickup order."""
    out = io.StringIO()
    out.write(",".join(COLUMNS) + "\n")
    for trip in _month_trips(month, rows, seed):
        out.write(",".join(map(str, trip)) + "\n")
    return out.getvalue()


def month_parquet(month: int, rows: int = DEFAULT_ROWS, seed: int = DEFAULT_SEED) -> bytes:
    """Return the trips of :func:`month_csv` as a Parquet file, typed like the TLC's own.

    Identifiers and counts are int64, distances and money double, the two datetimes
    timestamp[us] (no time zone, as the TLC writes them), the flag text; Snappy-compressed.
    """
    import pyarrow as pa  # only this format needs it
    import pyarrow.parquet as pq

    columns = list(zip(*_month_trips(month, rows, seed), strict=True)) or [()] * len(COLUMNS)
    arrays = {}
    for name, values in zip(COLUMNS, columns, strict=True):
        if name.endswith("_datetime"):
            stamps = [datetime.strptime(v, "%Y-%m-%d %H:%M:%S") for v in values]
            arrays[name] = pa.array(stamps, pa.timestamp("us"))
        elif name == "store_and_fwd_flag":
            arrays[name] = pa.array(values, pa.string())
        elif name in _WHOLE_NUMBERS:
            arrays[name] = pa.array(values, pa.int64())
        else:
            arrays[name] = pa.array([float(v) for v in values], pa.float64())
    out = io.BytesIO()
    pq.write_table(pa.table(arrays), out, compression="snappy")
    return out.getvalue()


def month_file(month: int, rows: int, seed: int, fmt: Format) -> bytes:
    """One month's file in ``fmt``, as bytes."""
    return (
        month_parquet(month, rows, seed)
        if fmt == "parquet"
        else month_csv(month, rows, seed).encode()
    )


def write_dataset(
    out: Path, rows: int = DEFAULT_ROWS, seed: int = DEFAULT_SEED, fmt: Format = "csv"
) -> list[Path]:
    """Write the twelve files under ``out`` (as ``out/trip data/...``); return their paths."""
    paths = []
    for month in range(1, 13):
        path = out / month_key(month, fmt=fmt)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(month_file(month, rows, seed, fmt))
        paths.append(path)
    return paths


def upload_dataset(
    s3: Any,
    bucket: str,
    prefix: str = "",
    rows: int = DEFAULT_ROWS,
    seed: int = DEFAULT_SEED,
    fmt: Format = "csv",
) -> list[str]:
    """Put the twelve files into ``bucket`` with a boto3 S3 client; return their keys."""
    content_type = "application/vnd.apache.parquet" if fmt == "parquet" else "text/csv"
    keys = []
    for month in range(1, 13):
        key = month_key(month, prefix, fmt)
        body = month_file(month, rows, seed, fmt)
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
        keys.append(key)
    return keys


def main(argv: list[str] | None = None) -> None:
    """Command line: write the data set to a local directory."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to write into")
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="trips per monthly file")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="change for other data")
    parser.add_argument("--format", choices=FORMATS, default="csv", help="file format")
    args = parser.parse_args(argv)
    if args.rows < 0:
        parser.error("--rows must not be negative")
    for path in write_dataset(args.out, args.rows, args.seed, args.format):
        print(path)


if __name__ == "__main__":
    main()
