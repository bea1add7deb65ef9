"""Stream an S3 object's records: ranged GETs, decompression on the fly, CSV / JSON parsing.

Nothing here holds more than one fetched range plus the parsers' small buffers, so memory stays
flat whatever the object's size, and a consumer that stops early (``LIMIT``) stops the fetching:
ranges are fetched only when the parser asks for more bytes, and each range is twice the last
(up to a cap), so the bytes fetched never exceed twice the bytes used plus the first range.
"""

from __future__ import annotations

import bz2
import contextlib
import csv
import gzip
import io
import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import ijson
from botocore.exceptions import ClientError

from worker.errors import error_code, is_throttling
from worker.messages import InputFormat
from worker.query import QueryError, QueryThrottled

FIRST_RANGE = 1 << 20
MAX_RANGE = 8 << 20
# S3 Select refuses records over 1 MiB; the csv module's default field cap is 128 KiB.
MAX_RECORD_CHARS = 1 << 20
# S3 Select's CSV ``Comments`` setting defaults to '#': records starting with it are skipped.
COMMENT = "#"
_CONTENT_RANGE = re.compile(r"bytes \d+-\d+/(\d+)")

csv.field_size_limit(max(csv.field_size_limit(), MAX_RECORD_CHARS))


class RangedObject(io.RawIOBase):
    """An S3 object as a readable stream, fetched in growing ranges only as it is read.

    ``bytes_fetched`` counts what S3 sent. Every range after the first carries ``If-Match`` on
    the first one's ETag, so an object overwritten mid-read fails instead of mixing versions.
    """

    def __init__(
        self,
        s3: Any,
        bucket: str,
        key: str,
        first_range: int = FIRST_RANGE,
        max_range: int = MAX_RANGE,
    ) -> None:
        super().__init__()
        self._s3, self._bucket, self._key = s3, bucket, key
        self._next_range, self._max_range = first_range, max_range
        self._offset = 0
        self._size: int | None = None
        self._pending = memoryview(b"")
        self.bytes_fetched = 0
        self.etag: str | None = None

    def readable(self) -> bool:
        """Say yes: this is a read-only stream."""
        return True

    def readinto(self, target: Any) -> int:
        """Copy buffered bytes into ``target``, fetching the next range when none are left."""
        if not self._pending and not self._fetch():
            return 0
        count = min(len(target), len(self._pending))
        target[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def _fetch(self) -> bool:
        if self._size is not None and self._offset >= self._size:
            return False
        last = self._offset + self._next_range - 1
        request = {"Bucket": self._bucket, "Key": self._key}
        request["Range"] = f"bytes={self._offset}-{last}"
        if self.etag:
            request["IfMatch"] = self.etag
        try:
            response = self._s3.get_object(**request)
            body = response["Body"].read()
        except ClientError as error:
            if self._offset == 0 and error_code(error) == "InvalidRange":
                self._size = 0  # S3 answers a range on an empty object with 416
                return False
            if is_throttling(error):
                raise QueryThrottled(self._describe(error)) from None
            raise QueryError(self._describe(error)) from None
        match = _CONTENT_RANGE.fullmatch(response.get("ContentRange") or "")
        self._size = int(match.group(1)) if match else len(body)  # no range: the whole object
        self.etag = self.etag or response.get("ETag")
        self.bytes_fetched += len(body)
        self._offset += len(body)
        self._next_range = min(self._next_range * 2, self._max_range)
        self._pending = memoryview(body)
        return bool(body)

    def _describe(self, error: ClientError) -> str:
        source = f"s3://{self._bucket}/{self._key}"
        code = error_code(error)
        message = error.response.get("Error", {}).get("Message", "")
        if code in ("NoSuchKey", "404"):
            return f"{source} does not exist (NoSuchKey)"
        if code == "NoSuchBucket":
            return f"bucket {self._bucket} does not exist (NoSuchBucket)"
        if code in ("AccessDenied", "403"):
            return f"access denied reading {source}: the role needs s3:GetObject on it"
        if code in ("PreconditionFailed", "412"):
            return f"{source} was overwritten while it was being read; the retry reads it anew"
        return f"GetObject {source} failed: {code}: {message}"


@dataclass
class Records:
    """An object's records: CSV rows (lists of strings) or JSON records (dicts).

    ``header`` holds the CSV header names when ``FileHeaderInfo`` is USE, else None.
    """

    kind: str
    header: list[str] | None
    rows: Iterator[Any]


@contextlib.contextmanager
def open_records(source: RangedObject, fmt: InputFormat) -> Iterator[Records]:
    """Open ``source`` as records in format ``fmt``; decoding errors become QueryErrors."""
    binary = _decompressed(io.BufferedReader(source, buffer_size=1 << 16), fmt.compression)
    try:
        if fmt.kind == "CSV":
            text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
            yield _guarded(_csv_records(text, fmt), fmt)
        elif fmt.json_type == "LINES":
            text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="\n")
            yield _guarded(Records("JSON", None, _json_lines(text)), fmt)
        else:
            yield _guarded(Records("JSON", None, _json_document(binary)), fmt)
    finally:
        binary.close()


def _decompressed(raw: io.BufferedReader, compression: str) -> io.BufferedIOBase:
    if compression == "GZIP":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if compression == "BZIP2":
        return bz2.BZ2File(raw, mode="rb")
    return raw


def _guarded(records: Records, fmt: InputFormat) -> Records:
    """Wrap the row iterator so that malformed input fails the item with a clear reason."""

    def rows() -> Iterator[Any]:
        with decoding_errors(fmt):
            yield from records.rows

    return Records(records.kind, records.header, rows())


@contextlib.contextmanager
def decoding_errors(fmt: InputFormat) -> Iterator[None]:
    """Turn the decoders' and parsers' exceptions into QueryErrors that say what is wrong."""
    try:
        yield
    except UnicodeDecodeError as error:
        raise QueryError(f"the object is not UTF-8 text ({error.reason})") from None
    except (EOFError, OSError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        if fmt.compression == "NONE":
            raise QueryError(f"reading the object failed: {error}") from None
        raise QueryError(f"the object is not valid {fmt.compression} data: {error}") from None
    except csv.Error as error:
        raise QueryError(f"the object is not valid CSV: {error}") from None


def _csv_records(text: io.TextIOWrapper, fmt: InputFormat) -> Records:
    reader = csv.reader(text, delimiter=fmt.delimiter, quotechar=fmt.quote, doublequote=True)
    rows = (row for row in reader if row and not row[0].startswith(COMMENT))
    header = None
    if fmt.csv_header in ("USE", "IGNORE"):
        with decoding_errors(fmt):
            first = next(rows, None)
        if fmt.csv_header == "USE":
            header = first or []
    return Records("CSV", header, rows)


def _json_lines(text: io.TextIOWrapper) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(text, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise QueryError(f"line {number} is not valid JSON: {error.msg}") from None
        yield value if isinstance(value, dict) else {"_1": value}


def _json_document(binary: io.BufferedIOBase) -> Iterator[dict[str, Any]]:
    """Each root-level value of a JSON document is a record, as S3 Select's S3Object[*]."""
    try:
        for value in ijson.items(binary, "", multiple_values=True, use_float=True):
            yield value if isinstance(value, dict) else {"_1": value}
    except ijson.JSONError as error:
        raise QueryError(f"the object is not a valid JSON document: {error}") from None
