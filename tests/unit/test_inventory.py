"""Seeding from an S3 Inventory: the manifest, its checksum, the three formats, the keys.

The manifests below are the examples of the S3 User Guide, "Locating your inventory list"
(https://docs.aws.amazon.com/AmazonS3/latest/userguide/storage-inventory-location.html), whose
``manifest.checksum`` "is the MD5 hash of the content of the manifest.json file". The Key field
of a CSV inventory "is URL-encoded and must be decoded" (User Guide, "Amazon S3 Inventory
list"), spaces as ``+`` (cloud-custodian/cloud-custodian#1997, read from real deliveries).
"""

import hashlib
import io
import json

import pyarrow as pa
import pyarrow.parquet as parquet
import pytest

from batchspot.errors import sentence
from batchspot.inventory import (
    InventoryError,
    InventoryFile,
    Manifest,
    inventory_sources,
    parse_manifest,
    read_manifest,
)
from batchspot.seed import seed
from batchspot_support.inventory_files import write_inventory
from tests.unit.in_memory_s3 import in_memory_bucket
from worker.keys import derive_output_key

DOCUMENTED_CSV = {
    "sourceBucket": "amzn-s3-demo-source-bucket",
    "destinationBucket": "arn:aws:s3:::example-inventory-destination-bucket",
    "version": "2016-11-30",
    "creationTimestamp": "1514944800000",
    "fileFormat": "CSV",
    "fileSchema": "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, "
    "ETag, StorageClass, IsMultipartUploaded, ReplicationStatus, EncryptionStatus, "
    "ObjectLockRetainUntilDate, ObjectLockMode, ObjectLockLegalHoldStatus, "
    "IntelligentTieringAccessTier, BucketKeyStatus, ChecksumAlgorithm, ObjectAccessControlList, "
    "ObjectOwner",
    "files": [
        {
            "key": "Inventory/amzn-s3-demo-source-bucket/2016-11-06T21-32Z/files/"
            "939c6d46-85a9-4ba8-87bd-9db705a579ce.csv.gz",
            "size": 2147483647,
            "MD5checksum": "f11166069f1990abeb9c97ace9cdfabc",
        }
    ],
}
DOCUMENTED_ORC = {
    "sourceBucket": "amzn-s3-demo-source-bucket",
    "destinationBucket": "arn:aws:s3:::example-destination-bucket",
    "version": "2016-11-30",
    "creationTimestamp": "1514944800000",
    "fileFormat": "ORC",
    "fileSchema": "struct<bucket:string,key:string,version_id:string,is_latest:boolean,"
    "is_delete_marker:boolean,size:bigint,last_modified_date:timestamp,e_tag:string,"
    "storage_class:string,is_multipart_uploaded:boolean,replication_status:string,"
    "encryption_status:string,object_lock_retain_until_date:timestamp,object_lock_mode:string,"
    "object_lock_legal_hold_status:string,intelligent_tiering_access_tier:string,"
    "bucket_key_status:string,checksum_algorithm:string,object_access_control_list:string,"
    "object_owner:string>",
    "files": [
        {
            "key": "inventory/amzn-s3-demo-source-bucket/data/"
            "d794c570-95bb-4271-9128-26023c8b4900.orc",
            "size": 56291,
            "MD5checksum": "5925f4e78e1695c2d020b9f6eexample",
        }
    ],
}
DOCUMENTED_PARQUET = {
    **DOCUMENTED_ORC,
    "fileFormat": "Parquet",
    "fileSchema": "message s3.inventory { required binary bucket (UTF8); required binary key "
    "(UTF8); optional binary version_id (UTF8); optional boolean is_latest; optional boolean "
    "is_delete_marker; optional int64 size; optional int64 last_modified_date "
    "(TIMESTAMP_MILLIS); optional binary e_tag (UTF8); optional binary storage_class (UTF8);}",
    "files": [
        {
            "key": "inventory/amzn-s3-demo-source-bucket/data/"
            "d754c470-85bb-4255-9218-47023c8b4910.parquet",
            "size": 56291,
            "MD5checksum": "5825f2e18e1695c2d030b9f6eexample",
        }
    ],
}
# Keys S3 allows that URL-encoding changes: space, +, unicode, %, and a literal "%2B".
AWKWARD_KEYS = [
    "in/a file with spaces.csv",
    "in/c++ and a+b=c.csv",
    "in/ünïcødé 日本.csv",
    "in/100% done %2B.csv",
]


def md5(body: bytes) -> str:
    return hashlib.md5(body).hexdigest()


@pytest.mark.parametrize("document", [DOCUMENTED_CSV, DOCUMENTED_ORC, DOCUMENTED_PARQUET])
def test_the_documented_manifests_parse(document):
    body = json.dumps(document, indent=4).encode()
    manifest = parse_manifest(body, md5(body) + "\n", "s3://dest/manifest.json")
    assert manifest.source_bucket == "amzn-s3-demo-source-bucket"
    assert manifest.file_format == document["fileFormat"]
    assert [f.key for f in manifest.files] == [document["files"][0]["key"]]
    if document["fileFormat"] == "CSV":
        assert manifest.csv_columns[:2] == ("Bucket", "Key")
        assert manifest.csv_columns[7] == "ETag"


def test_a_manifest_that_does_not_match_its_checksum_is_refused_in_one_sentence():
    body = json.dumps(DOCUMENTED_CSV).encode()
    with pytest.raises(InventoryError, match=r"does not match its manifest\.checksum") as refused:
        parse_manifest(body, md5(body + b" "), "s3://dest/manifest.json")
    assert sentence(refused.value) == str(refused.value)  # what the task prints


@pytest.mark.parametrize("checksum", ["", "not-a-checksum", "f11166069f1990abeb9c97ace9cdfab"])
def test_a_malformed_checksum_is_refused(checksum):
    body = json.dumps(DOCUMENTED_CSV).encode()
    with pytest.raises(InventoryError, match="is not an MD5 in hex"):
        parse_manifest(body, checksum, "s3://dest/manifest.json")


def test_a_csv_inventory_without_etags_is_refused_saying_which_field_to_add():
    document = {**DOCUMENTED_CSV, "fileSchema": "Bucket, Key, Size"}
    body = json.dumps(document).encode()
    with pytest.raises(InventoryError, match="add the ETag field"):
        parse_manifest(body, md5(body), "s3://dest/manifest.json")


def test_a_json_that_is_no_manifest_is_refused_in_one_sentence():
    body = b'{"files": []}'
    with pytest.raises(InventoryError, match="is not an S3 Inventory manifest"):
        parse_manifest(body, md5(body), "s3://dest/manifest.json")


def rows_of(keys, **extra):
    return [
        {"bucket": "src", "key": key, "size": 10, "e_tag": f"etag{i}", "is_latest": True, **extra}
        for i, key in enumerate(keys)
    ]


@pytest.mark.parametrize("file_format", ["CSV", "Parquet", "ORC"])
def test_every_format_yields_the_keys_exactly_and_etags_as_listings_quote_them(file_format):
    with in_memory_bucket("dest") as s3:
        url = write_inventory(s3, "dest", "src", rows_of(AWKWARD_KEYS), file_format, 3)
        bucket, manifest = read_manifest(s3, url)
        sources = sorted(inventory_sources(s3, bucket, manifest), key=lambda s: s.key)
    assert [(s.bucket, s.key) for s in sources] == [("src", k) for k in sorted(AWKWARD_KEYS)]
    assert {s.etag for s in sources} == {f'"etag{i}"' for i in range(len(AWKWARD_KEYS))}


def test_seed_keeps_current_objects_under_the_prefix_with_the_suffix():
    rows = [
        *rows_of(["in/keep 1.csv", "in/keep+2.csv", "in/skip.json", "out/skip.csv"]),
        {"bucket": "src", "key": "in/", "size": 0, "e_tag": "d41d8", "is_latest": True},
        {"bucket": "src", "key": "in/old.csv", "size": 5, "e_tag": "a", "is_latest": False},
        {"bucket": "src", "key": "in/gone.csv", "is_latest": True, "is_delete_marker": True},
    ]
    with in_memory_bucket("dest") as s3:
        url = write_inventory(s3, "dest", "src", rows, "CSV", 2)
        report = seed(
            s3,
            None,
            queue_url="",
            bucket="src",
            prefix="in/",
            suffix=".csv",
            inventory=url,
            dry_run=True,
        )
    assert (report.listed, report.sent) == (2, 2)
    assert sorted(json.loads(body)["key"] for body in report.samples) == [
        "in/keep 1.csv",
        "in/keep+2.csv",
    ]


def test_an_inventory_of_another_bucket_is_refused_before_sending():
    with in_memory_bucket("dest") as s3:
        url = write_inventory(s3, "dest", "other", rows_of(["a.csv"]), "CSV")
        with pytest.raises(ValueError, match="lists bucket other, not src"):
            seed(s3, None, queue_url="", bucket="src", inventory=url, dry_run=True)


def test_a_data_file_that_does_not_match_its_md5_is_refused():
    with in_memory_bucket("dest") as s3:
        url = write_inventory(s3, "dest", "src", rows_of(["a.csv"]), "Parquet")
        bucket, manifest = read_manifest(s3, url)
        s3.put_object(Bucket=bucket, Key=manifest.files[0].key, Body=b"truncated")
        with pytest.raises(InventoryError, match="incomplete or was altered"):
            list(inventory_sources(s3, bucket, manifest))


def test_a_missing_checksum_is_named_with_what_seeding_needs():
    with in_memory_bucket("dest") as s3:
        url = write_inventory(s3, "dest", "src", rows_of(["a.csv"]), "CSV")
        checksum = url.replace("manifest.json", "manifest.checksum")
        s3.delete_object(Bucket="dest", Key=checksum.removeprefix("s3://dest/"))
        with pytest.raises(InventoryError) as refused:
            read_manifest(s3, url)
    assert str(refused.value).startswith(f"cannot read {checksum} (NoSuchKey): ")
    assert "s3:GetObject on the inventory's destination" in str(refused.value)


def test_skip_done_recognises_results_of_sources_seeded_from_a_listing():
    """An inventory's ETag is bare hex where ListObjectsV2 quotes it: both must key alike."""
    keys = ["in/done one.csv", "in/todo+two.csv"]
    with in_memory_bucket("src", dict.fromkeys(keys, b"id\n1\n")) as s3:
        s3.create_bucket(Bucket="dst")
        listed = {k: s3.head_object(Bucket="src", Key=k)["ETag"] for k in keys}
        s3.put_object(
            Bucket="dst",
            Key=derive_output_key("results/", "src", keys[0], listed[keys[0]]),
            Body=b"{}",
        )
        rows = [
            {"bucket": "src", "key": k, "size": 5, "e_tag": e.strip('"')} for k, e in listed.items()
        ]
        url = write_inventory(s3, "dst", "src", rows, "Parquet")
        report = seed(
            s3,
            None,
            queue_url="",
            bucket="src",
            inventory=url,
            skip_done=True,
            output_bucket="dst",
            output_prefix="results/",
            dry_run=True,
        )
    assert (report.listed, report.skipped_done, report.sent) == (2, 1, 1)
    assert json.loads(report.samples[0]) == {
        "version": 1,
        "bucket": "src",
        "key": keys[1],
        "etag": listed[keys[1]],
    }


def test_a_parquet_inventory_without_an_e_tag_column_is_refused_saying_which_field_to_add():
    sink = io.BytesIO()
    parquet.write_table(pa.table({"bucket": ["src"], "key": ["a.csv"], "size": [1]}), sink)
    with in_memory_bucket("dest") as s3:
        s3.put_object(Bucket="dest", Key="data/no-etag.parquet", Body=sink.getvalue())
        manifest = Manifest("src", "Parquet", (), (InventoryFile("data/no-etag.parquet", ""),))
        with pytest.raises(InventoryError, match="no key or e_tag column; add the ETag field"):
            list(inventory_sources(s3, "dest", manifest))


def test_an_inventory_folder_seeds_its_newest_delivery():
    """S3 dates each delivery's folder YYYY-MM-DDTHH-MMZ (User Guide, "Locating your inventory
    list"); the data/ and hive/ folders beside them are not deliveries."""
    with in_memory_bucket("dest") as s3:
        write_inventory(
            s3, "dest", "src", rows_of(["old.csv"]), "CSV", delivered="2026-12-05T00-00Z"
        )
        newest = write_inventory(
            s3, "dest", "src", rows_of(["new.csv"]), "CSV", delivered="2026-12-06T00-00Z"
        )
        s3.put_object(
            Bucket="dest", Key="inventory/src/config/hive/dt=2026-12-07-00-00/symlink.txt", Body=b""
        )
        folder = newest.removesuffix("2026-12-06T00-00Z/manifest.json")
        bucket, manifest = read_manifest(s3, folder)
        assert [s.key for s in inventory_sources(s3, bucket, manifest)] == ["new.csv"]
        with pytest.raises(InventoryError, match="no inventory delivery under s3://dest/none/ yet"):
            read_manifest(s3, "s3://dest/none/")
