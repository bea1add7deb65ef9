"""Write an S3 Inventory delivery as S3 does, for the tests and the seeding benchmark.

Emulators do not deliver inventories, so this writes one: data files in the chosen format
(CSV-gzip without a header and with URL-encoded keys, ORC or Parquet with S3's column names),
then ``manifest.json`` and ``manifest.checksum`` (its MD5 in hex), laid out as the S3 User Guide
shows them ("Locating your inventory list":
https://docs.aws.amazon.com/AmazonS3/latest/userguide/storage-inventory-location.html).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import itertools
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote_plus

# The fields written, in CSV's spelling and order; ORC and Parquet use the snake-case names.
FIELDS = {
    "Bucket": "bucket",
    "Key": "key",
    "VersionId": "version_id",
    "IsLatest": "is_latest",
    "IsDeleteMarker": "is_delete_marker",
    "Size": "size",
    "ETag": "e_tag",
}
EXTENSIONS = {"CSV": "csv.gz", "ORC": "orc", "Parquet": "parquet"}


def _csv_value(value: Any) -> str:
    """Write a field as S3's CSV does: booleans as ``true``/``false``, nothing as empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _csv_file(rows: list[dict[str, Any]]) -> bytes:
    """Return a CSV-gzip data file: no header, keys URL-encoded with spaces as ``+`` (``/`` too)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    for row in rows:
        fields = {**row, "key": quote_plus(row["key"], safe="")}
        writer.writerow([_csv_value(fields.get(name)) for name in FIELDS.values()])
    return gzip.compress(text.getvalue().encode("utf-8"), compresslevel=1)


def _columnar_file(rows: list[dict[str, Any]], file_format: str) -> bytes:
    """Return an ORC or Parquet data file with S3's column names and types."""
    import pyarrow as pa

    schema = pa.schema(
        [
            ("bucket", pa.string()),
            ("key", pa.string()),
            ("version_id", pa.string()),
            ("is_latest", pa.bool_()),
            ("is_delete_marker", pa.bool_()),
            ("size", pa.int64()),
            ("e_tag", pa.string()),
        ]
    )
    table = pa.Table.from_pylist(
        [{name: row.get(name) for name in schema.names} for row in rows], schema
    )
    sink = io.BytesIO()
    if file_format == "Parquet":
        import pyarrow.parquet as parquet

        parquet.write_table(table, sink)
    else:
        from pyarrow import orc

        orc.write_table(table, sink)
    return sink.getvalue()


def write_inventory(
    s3: Any,
    bucket: str,
    source_bucket: str,
    rows: Iterable[dict[str, Any]],
    file_format: str = "CSV",
    rows_per_file: int = 100_000,
    prefix: str = "inventory/",
    delivered: str = "2016-11-06T21-32Z",
) -> str:
    """Upload ``rows`` as an inventory of ``source_bucket`` in ``bucket``; return the manifest URL.

    ``delivered`` names the delivery's folder, as S3 dates it. Each row is a dict of
    ``bucket, key, size, e_tag, is_latest, is_delete_marker`` (missing ones empty), as ORC
    and Parquet name them.
    """
    base = f"{prefix}{source_bucket}/config"
    files = []
    rows = iter(rows)
    for number in itertools.count():
        chunk = list(itertools.islice(rows, rows_per_file))
        if not chunk:
            break
        body = _csv_file(chunk) if file_format == "CSV" else _columnar_file(chunk, file_format)
        key = f"{base}/data/{delivered}-part-{number:05d}.{EXTENSIONS[file_format]}"
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        files.append({"key": key, "size": len(body), "MD5checksum": hashlib.md5(body).hexdigest()})
    manifest = json.dumps(
        {
            "sourceBucket": source_bucket,
            "destinationBucket": f"arn:aws:s3:::{bucket}",
            "version": "2016-11-30",
            "creationTimestamp": "1514944800000",
            "fileFormat": file_format,
            "fileSchema": ", ".join(FIELDS)
            if file_format == "CSV"
            else "struct<" + ",".join(f"{name}:string" for name in FIELDS.values()) + ">",
            "files": files,
        }
    ).encode()
    manifest_key = f"{base}/{delivered}/manifest.json"
    s3.put_object(Bucket=bucket, Key=manifest_key, Body=manifest)
    s3.put_object(
        Bucket=bucket,
        Key=f"{base}/{delivered}/manifest.checksum",
        Body=hashlib.md5(manifest).hexdigest().encode(),
    )
    return f"s3://{bucket}/{manifest_key}"
