"""The examples: a reproducible stand-in for the taxi data, and two ways to summarise it."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from batchspot.sample_data import COLUMNS, main, month_csv, month_key, upload_dataset
from examples.handlers.trip_stats import summarise

ROOT = Path(__file__).resolve().parents[2]
COMMAND = ROOT / "examples" / "command" / "trip_stats.sh"

# The 2018 yellow-taxi header, as in the TLC's files.
HEADER_2018 = (
    "VendorID,tpep_pickup_datetime,tpep_dropoff_datetime,passenger_count,trip_distance,"
    "RatecodeID,store_and_fwd_flag,PULocationID,DOLocationID,payment_type,fare_amount,extra,"
    "mta_tax,tip_amount,tolls_amount,improvement_surcharge,total_amount"
)
CHARGES = ("fare_amount", "extra", "mta_tax", "tip_amount", "tolls_amount", "improvement_surcharge")


def cents(amount: str) -> int:
    return round(float(amount) * 100)


def as_json_lines(text: str) -> str:
    """Rows as S3 Select returns them with ROWS_FORMAT=json: header-keyed string values."""
    return "\n".join(json.dumps(row) for row in csv.DictReader(io.StringIO(text))) + "\n"


def as_headerless_csv(text: str) -> str:
    """Rows as S3 Select returns them with ROWS_FORMAT=csv: no header line."""
    return text.split("\n", 1)[1]


def run_command(stdin: str) -> dict:
    done = subprocess.run(
        ["sh", str(COMMAND)], input=stdin, capture_output=True, text=True, check=True, timeout=30
    )
    return json.loads(done.stdout)


def test_files_have_the_2018_header_and_consistent_rows():
    text = month_csv(3, rows=50)
    rows = list(csv.reader(io.StringIO(text)))
    assert ",".join(COLUMNS) == HEADER_2018 == ",".join(rows[0])
    assert len(rows) == 51
    assert all(len(row) == 17 for row in rows)
    for row in rows[1:]:
        trip = dict(zip(COLUMNS, row, strict=True))
        assert trip["tpep_pickup_datetime"].startswith("2018-03-")
        assert trip["tpep_pickup_datetime"] < trip["tpep_dropoff_datetime"]
        charges = sum(cents(trip[column]) for column in CHARGES)
        assert charges == cents(trip["total_amount"])


def test_generation_is_deterministic_and_seeded():
    assert month_csv(1, rows=100) == month_csv(1, rows=100)
    assert month_csv(1, rows=100) != month_csv(2, rows=100)
    assert month_csv(1, rows=100, seed=1) != month_csv(1, rows=100, seed=2)


def test_keys_match_the_public_data_sets_names():
    assert month_key(1) == "trip data/yellow_tripdata_2018-01.csv"
    assert month_key(12, prefix="nyc/") == "nyc/trip data/yellow_tripdata_2018-12.csv"
    with pytest.raises(ValueError):
        month_key(13)


def test_cli_writes_twelve_monthly_files(tmp_path, capsys):
    main(["--out", str(tmp_path), "--rows", "3"])
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.csv"))
    assert files == [month_key(m) for m in range(1, 13)]
    assert (tmp_path / month_key(7)).read_text() == month_csv(7, rows=3)


def test_cli_writes_the_same_trips_as_typed_parquet(tmp_path):
    """``--format parquet``: the CSV's trips, typed as the TLC's own Parquet files are."""
    import pyarrow.parquet as pq

    main(["--out", str(tmp_path), "--rows", "5", "--format", "parquet"])
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet"))
    assert files == [month_key(m, fmt="parquet") for m in range(1, 13)]
    table = pq.read_table(tmp_path / month_key(7, fmt="parquet"))
    assert table.column_names == list(COLUMNS)
    assert str(table.schema.field("tpep_pickup_datetime").type) == "timestamp[us]"
    rows = list(csv.reader(io.StringIO(month_csv(7, rows=5))))[1:]
    typed = table.to_pylist()
    assert [str(t["VendorID"]) for t in typed] == [r[0] for r in rows]
    assert [f"{t['tpep_pickup_datetime']:%Y-%m-%d %H:%M:%S}" for t in typed] == [r[1] for r in rows]
    assert [t["trip_distance"] for t in typed] == [float(r[4]) for r in rows]


@mock_aws
def test_upload_puts_the_twelve_keys_under_a_prefix():
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="taxi")
    keys = upload_dataset(s3, "taxi", prefix="raw/", rows=2)
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket="taxi")["Contents"]]
    assert sorted(listed) == keys == [month_key(m, "raw/") for m in range(1, 13)]
    body = s3.get_object(Bucket="taxi", Key=keys[0])["Body"].read().decode()
    assert body == month_csv(1, rows=2)


def test_summary_of_known_trips():
    text = (
        HEADER_2018 + "\n"
        "1,2018-01-01 00:21:05,2018-01-01 00:24:23,1,.50,1,N,41,24,2,4.5,0.5,0.5,0,0,0.3,5.8\n"
        "1,2018-01-01 00:44:55,2018-01-01 01:03:05,2,2.70,1,N,239,140,2,14,0.5,0.5,0,0,0.3,15.3\n"
    )
    expected = {
        "trips": 2,
        "passengers": 3,
        "total_distance": 3.2,
        "mean_distance": 1.6,
        "total_fare": 18.5,
        "total_amount": 21.1,
    }
    assert summarise(as_json_lines(text)) == expected
    assert run_command(as_headerless_csv(text)) == expected


@pytest.mark.parametrize("month", [1, 6, 12])
def test_python_handler_and_awk_command_agree(month):
    text = month_csv(month, rows=2000)
    from_python = summarise(as_json_lines(text))
    assert from_python["trips"] == 2000
    assert run_command(as_headerless_csv(text)) == from_python


def test_blank_source_lines_are_not_counted_as_trips():
    # S3 Select turns a blank line into an empty record: {"VendorID": ""} or an empty CSV line.
    text = month_csv(1, rows=3)
    json_rows = as_json_lines(text) + '{"VendorID": ""}\n'
    assert summarise(json_rows) == run_command(as_headerless_csv(text) + "\n")
    assert summarise(json_rows)["trips"] == 3


def test_both_summarise_no_rows_the_same_way():
    assert (
        summarise("")
        == run_command("")
        == {
            "trips": 0,
            "passengers": 0,
            "total_distance": 0,
            "mean_distance": None,
            "total_fare": 0,
            "total_amount": 0,
        }
    )
