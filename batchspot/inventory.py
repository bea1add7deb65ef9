"""Seed from an S3 Inventory: the sources of a bucket without listing it.

S3 Inventory delivers, daily or weekly, a ``manifest.json`` naming data files that list every
object of a bucket (CSV-gzip, ORC or Parquet), with a ``manifest.checksum`` beside it holding
the MD5 of the manifest (S3 User Guide, "Locating your inventory list":
https://docs.aws.amazon.com/AmazonS3/latest/userguide/storage-inventory-location.html).
Reading those files costs a few GETs where listing ten million keys costs ten thousand
sequential ListObjectsV2 calls.

What is read, and why:

* the manifest is refused unless its MD5 matches ``manifest.checksum``: a manifest read
  while being replaced, or altered, would silently seed a part of the bucket;
* each data file's MD5 is checked against the manifest's ``MD5checksum`` as it downloads,
  when that is a plain MD5 (32 hex digits);
* CSV files have no header: their columns are the manifest's ``fileSchema`` in order, and
  their keys are URL-encoded with spaces as ``+`` (User Guide, "Amazon S3 Inventory list",
  Key: "When using the CSV file format, the key name is URL-encoded and must be decoded");
  ORC and Parquet files name their columns (``key``, ``e_tag``...) and hold plain keys;
* rows of delete markers or of versions that are not the latest (an inventory of all
  versions) are not sources; neither are folder markers, as when listing;
* a file is downloaded to a temporary file (its MD5 checked on the way) and read from disk
  in chunks, ``readers`` files at a time, so memory does not grow with the number of keys.

The ETag needs to be in the inventory (an optional field, ``ETag``): the messages carry it and
``--skip-done`` keys results by it.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import IO, Any
from urllib.parse import unquote_plus

from botocore.exceptions import ClientError

from batchspot.errors import OperatorError
from batchspot.sources import Group, Source, interleave_streams, wanted

FORMATS = ("CSV", "ORC", "Parquet")
# CSV's fileSchema names (as the manifest spells them) -> ORC's and Parquet's column names.
CSV_COLUMNS = {
    "Bucket": "bucket",
    "Key": "key",
    "Size": "size",
    "ETag": "e_tag",
    "IsLatest": "is_latest",
    "IsDeleteMarker": "is_delete_marker",
}
ROWS_PER_BATCH = 10_000  # rows converted from ORC/Parquet at a time
DOWNLOAD_CHUNK = 1024 * 1024
PLAIN_MD5 = re.compile(r"[0-9a-f]{32}")
DELIVERY_FOLDER = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}-\d{2}Z/")  # YYYY-MM-DDTHH-MMZ/
# ORC and Parquet are decoded a row group (or stripe) at a time, tens of MiB each, under the
# GIL: decoding several files at once adds memory, not speed (one decoder outpaces the sender;
# measured: 8 at once peaked at 252 MiB (Parquet) and 342 MiB (ORC), one at 168 and 148).
# Downloads still run ``readers`` at once.
COLUMNAR_DECODER = threading.Lock()


class InventoryError(OperatorError):
    """An inventory that cannot be seeded from; the message says why in one sentence."""


@dataclass(frozen=True)
class InventoryFile:
    """One data file of an inventory, as its manifest names it."""

    key: str
    md5: str


@dataclass(frozen=True)
class Manifest:
    """The parts of a ``manifest.json`` seeding needs."""

    source_bucket: str
    file_format: str
    csv_columns: tuple[str, ...]  # the fileSchema's names, used for CSV files only
    files: tuple[InventoryFile, ...]


def split_s3_url(url: str) -> tuple[str, str]:
    """Return (bucket, key) of ``s3://bucket/key``."""
    match = re.fullmatch(r"s3://([^/]+)/(.+)", url)
    if not match:
        raise InventoryError(f"{url!r} is not an S3 URL of the form s3://bucket/key")
    return match[1], match[2]


def parse_manifest(body: bytes, checksum: str, where: str) -> Manifest:
    """Check ``body`` against ``checksum`` (manifest.checksum's text) and parse it.

    ``where`` names the manifest in errors.
    """
    expected = checksum.strip().lower()
    if not PLAIN_MD5.fullmatch(expected):
        raise InventoryError(
            f"the manifest.checksum beside {where} is not an MD5 in hex ({checksum[:60]!r})"
        )
    actual = hashlib.md5(body, usedforsecurity=False).hexdigest()
    if actual != expected:
        raise InventoryError(
            f"{where} does not match its manifest.checksum (MD5 {actual}, expected {expected}): "
            "it is incomplete or was altered; use a complete delivery"
        )
    try:
        document = json.loads(body)
        file_format = document["fileFormat"]
        files = tuple(
            InventoryFile(entry["key"], str(entry.get("MD5checksum", "")).lower())
            for entry in document["files"]
        )
        manifest = Manifest(
            source_bucket=document["sourceBucket"],
            file_format=file_format,
            csv_columns=tuple(name.strip() for name in document["fileSchema"].split(","))
            if file_format == "CSV"
            else (),
            files=files,
        )
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise InventoryError(
            f"{where} is not an S3 Inventory manifest (sourceBucket, fileFormat, fileSchema "
            f"and files of key): {error!r}"
        ) from None
    if file_format not in FORMATS:
        raise InventoryError(
            f"{where} has fileFormat {file_format!r}; seeding reads {', '.join(FORMATS)}"
        )
    if file_format == "CSV" and not {"Key", "ETag"} <= set(manifest.csv_columns):
        raise InventoryError(
            f"{where} lists no ETag (fileSchema {document['fileSchema']!r}); add the ETag "
            "field to the inventory configuration: messages carry it and results are keyed by it"
        )
    return manifest


def latest_manifest(s3: Any, folder: str) -> str:
    """Return the URL of the newest delivery's ``manifest.json`` in an inventory's ``folder``.

    S3 writes each delivery's manifests under ``<prefix>/<source bucket>/<config id>/`` in a
    folder named for when it began (``YYYY-MM-DDTHH-MMZ``), so the newest sorts last.
    """
    bucket, prefix = split_s3_url(folder)
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, Delimiter="/"
    )
    deliveries = [
        common["Prefix"]
        for page in pages
        for common in page.get("CommonPrefixes", [])
        if DELIVERY_FOLDER.fullmatch(common["Prefix"].removeprefix(prefix))
    ]
    if not deliveries:
        raise InventoryError(
            f"no inventory delivery under {folder} yet (S3 delivers the first within 48 hours "
            "of configuring it); name a manifest.json instead"
        )
    return f"s3://{bucket}/{max(deliveries)}manifest.json"


def read_manifest(s3: Any, url: str) -> tuple[str, Manifest]:
    """Fetch and check the manifest at ``url``; return the bucket holding its files, and it.

    A ``url`` ending in ``/`` names an inventory's folder: its newest delivery is read.
    The data files are read from the bucket the manifest was found in: S3 delivers both to
    the inventory's destination, and a copied inventory keeps working.
    """
    if url.endswith("/"):
        url = latest_manifest(s3, url)
    bucket, key = split_s3_url(url)
    checksum_key = (
        key.rsplit("/", 1)[0] + "/manifest.checksum" if "/" in key else "manifest.checksum"
    )
    body = _read(s3, bucket, key)
    checksum = _read(s3, bucket, checksum_key)
    return bucket, parse_manifest(body, checksum.decode("ascii", "replace"), url)


def _read(s3: Any, bucket: str, key: str) -> bytes:
    """Return a small object of the inventory (the manifest, its checksum), or say why not."""
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        raise InventoryError(
            f"cannot read s3://{bucket}/{key} ({code}): name a delivery's manifest.json, with "
            "its manifest.checksum beside it, and have s3:GetObject on the inventory's destination"
        ) from None


def _download(s3: Any, bucket: str, file: InventoryFile, handle: IO[bytes]) -> None:
    """Copy a data file into ``handle``, checking its MD5 when the manifest gives a plain one."""
    digest = hashlib.md5(usedforsecurity=False)
    for chunk in s3.get_object(Bucket=bucket, Key=file.key)["Body"].iter_chunks(DOWNLOAD_CHUNK):
        digest.update(chunk)
        handle.write(chunk)
    handle.flush()
    handle.seek(0)
    if PLAIN_MD5.fullmatch(file.md5) and digest.hexdigest() != file.md5:
        raise InventoryError(
            f"inventory file s3://{bucket}/{file.key} has MD5 {digest.hexdigest()}, its "
            f"manifest says {file.md5}: it is incomplete or was altered"
        )


def _csv_rows(handle: IO[bytes], columns: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """Yield a CSV-gzip file's rows as ORC/Parquet name them, keys URL-decoded."""
    positions = {
        CSV_COLUMNS[name]: index for index, name in enumerate(columns) if name in CSV_COLUMNS
    }
    text = io.TextIOWrapper(gzip.GzipFile(fileobj=handle), encoding="utf-8", newline="")
    for row in csv.reader(text):
        fields: dict[str, Any] = {name: row[index] for name, index in positions.items()}
        fields["key"] = unquote_plus(fields["key"])
        for flag in ("is_latest", "is_delete_marker"):
            if flag in fields:
                fields[flag] = {"true": True, "false": False}.get(fields[flag].lower())
        if fields.get("size"):
            fields["size"] = int(fields["size"])
        yield fields


def _columnar_rows(handle: IO[bytes], file_format: str, where: str) -> Iterator[dict[str, Any]]:
    """Yield an ORC or Parquet file's rows, a batch of columns at a time, one file at a time."""
    with COLUMNAR_DECODER:
        yield from _decoded_rows(handle, file_format, where)


def _decoded_rows(handle: IO[bytes], file_format: str, where: str) -> Iterator[dict[str, Any]]:
    """Yield the rows of one ORC or Parquet file (see :func:`_columnar_rows`)."""
    if file_format == "Parquet":
        import pyarrow.parquet as parquet

        table = parquet.ParquetFile(handle, pre_buffer=False, buffer_size=DOWNLOAD_CHUNK)
        names = table.schema_arrow.names
        wanted_columns = [name for name in CSV_COLUMNS.values() if name in names]
        batches = table.iter_batches(batch_size=ROWS_PER_BATCH, columns=wanted_columns)
    else:
        from pyarrow import orc

        stripes = orc.ORCFile(handle)
        names = stripes.schema.names
        wanted_columns = [name for name in CSV_COLUMNS.values() if name in names]
        batches = (
            stripes.read_stripe(index, columns=wanted_columns) for index in range(stripes.nstripes)
        )
    if not {"key", "e_tag"} <= set(names):
        raise InventoryError(
            f"{where} has no key or e_tag column; add the ETag field to the inventory "
            "configuration: messages carry it and results are keyed by it"
        )
    for batch in batches:
        for start in range(0, batch.num_rows, ROWS_PER_BATCH):
            yield from batch.slice(start, ROWS_PER_BATCH).to_pylist()


def file_sources(
    s3: Any, bucket: str, manifest: Manifest, file: InventoryFile, prefix: str, suffix: str
) -> Iterator[Source]:
    """Yield the current objects a data file lists under ``prefix``, ending in ``suffix``."""
    where = f"s3://{bucket}/{file.key}"
    with tempfile.TemporaryFile(prefix="batchspot-inventory-") as handle:
        _download(s3, bucket, file, handle)
        rows = (
            _csv_rows(handle, manifest.csv_columns)
            if manifest.file_format == "CSV"
            else _columnar_rows(handle, manifest.file_format, where)
        )
        for row in rows:
            if row.get("is_delete_marker") or row.get("is_latest") is False:
                continue
            key = row["key"]
            size = row.get("size")
            if not wanted(key, 1 if size is None else size, prefix, suffix):
                continue
            etag = (row.get("e_tag") or "").strip('"')
            yield Source(row.get("bucket") or manifest.source_bucket, key, f'"{etag}"')


def inventory_sources(
    s3: Any,
    bucket: str,
    manifest: Manifest,
    prefix: str = "",
    suffix: str = "",
    readers: int = 8,
    group: Group | None = None,
) -> Iterator[Any]:
    """Yield every source the inventory lists, reading ``readers`` files at once.

    ``group``, if given, is applied to each file's own stream and its groups yielded instead.
    """
    yield from interleave_streams(
        (
            partial(file_sources, s3, bucket, manifest, file, prefix, suffix)
            for file in manifest.files
        ),
        readers,
        group,
    )
