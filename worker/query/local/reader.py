"""Stream an S3 object's records: ranged GETs, decompression on the fly, CSV / JSON parsing.

Nothing here holds more than one fetched range, one record and the parsers' small buffers, so
memory stays flat whatever the object holds: a record is read a line at a time with a bound and
refused past 1 MiB (as S3 Select refuses it) before it is held whole, decompression stops at a
ratio, and JSON nesting is capped (see :mod:`.caps`). A consumer that stops early (``LIMIT``)
stops the fetching: ranges are fetched only when the parser asks for more bytes, and each range
is twice the last (up to a cap), so the bytes fetched never exceed twice the bytes used plus
the first range.
"""

from __future__ import annotations

import bz2
import contextlib
import csv
import gzip
import io
import json
import re
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import ijson
from botocore.exceptions import ClientError

from worker.errors import error_code, is_throttling
from worker.messages import InputFormat
from worker.query import (
    Deadline,
    QueryError,
    QueryLimitExceeded,
    QueryThrottled,
    QueryUnsupported,
)
from worker.query.local.caps import (
    DECOMPRESSION_FLOOR,
    DECOMPRESSION_RATIO,
    MAX_DECOMPRESSED_BYTES,
    MAX_JSON_DEPTH,
    MAX_RECORD_CHARS,
    over_max_record_size,
    too_deep,
)

FIRST_RANGE = 1 << 20
MAX_RANGE = 8 << 20
# S3 Select's CSV ``Comments`` setting defaults to '#': records starting with it are skipped.
COMMENT = "#"
# ijson's read size; a DOCUMENT record's length is known to within one such read.
JSON_BUFFER = 1 << 16
_CONTENT_RANGE = re.compile(r"bytes \d+-\d+/(\d+)")
_OPENING = frozenset({"start_map", "start_array"})
_CLOSING = frozenset({"end_map", "end_array"})
# UTF-8 continuation bytes: every other byte starts a character.
_CONTINUATION = bytes(range(0x80, 0xC0))
# A JSON escape of half a surrogate pair: \ud800-\udfff, in either case.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")

# The csv module's default field cap is 128 KiB; a field may be as long as a record.
csv.field_size_limit(max(csv.field_size_limit(), MAX_RECORD_CHARS))


class EmptyObject(Exception):
    """S3 refused a range because the object is empty (416 InvalidRange on the first GET)."""


_READ_CHUNK = 1 << 20


def _read_body(response: dict[str, Any]) -> bytes | bytearray:
    """Read a GET's body into one buffer of its ContentLength, a megabyte at a time.

    ``StreamingBody.read()`` joins the pieces it reads, so a large range (a Parquet row
    group's columns) would briefly take twice its size in memory.
    """
    stream, length = response["Body"], response.get("ContentLength")
    if not isinstance(length, int):
        return stream.read()
    buffer = bytearray(length)
    view = memoryview(buffer)
    filled = 0
    while filled < length:
        piece = stream.read(min(_READ_CHUNK, length - filled))
        if not piece:
            raise QueryError(f"the object's body ended after {filled} of {length} bytes")
        view[filled : filled + len(piece)] = piece
        filled += len(piece)
    return buffer


class RangedObject(io.RawIOBase):
    """An S3 object as a readable stream, fetched in growing ranges only as it is read.

    ``bytes_fetched`` counts what S3 sent, ``bytes_read`` what the reader took of it (the
    measure of the decompression ratio). Every range after the first carries ``If-Match`` on
    the first one's ETag, so an object overwritten mid-read fails instead of mixing versions.
    """

    def __init__(
        self,
        s3: Any,
        bucket: str,
        key: str,
        first_range: int = FIRST_RANGE,
        max_range: int = MAX_RANGE,
        etag: str | None = None,
    ) -> None:
        """Read ``bucket``/``key``; given ``etag``, every range carries If-Match on it."""
        super().__init__()
        self._s3, self._bucket, self._key = s3, bucket, key
        self._next_range, self._max_range = first_range, max_range
        self._offset = 0
        self._size: int | None = None
        self._pending = memoryview(b"")
        self.bytes_fetched = 0
        self.bytes_read = 0
        self.gets = 0
        self.etag = etag

    def readable(self) -> bool:
        """Say yes: this is a read-only stream."""
        return True

    def fetch_first(self) -> None:
        """Fetch the first range now, so that ``etag`` names the version read before any row."""
        if self._size is None:
            self._fetch()

    def readinto(self, target: Any) -> int:
        """Copy buffered bytes into ``target``, fetching the next range when none are left."""
        if not self._pending and not self._fetch():
            return 0
        count = min(len(target), len(self._pending))
        target[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        self.bytes_read += count
        return count

    def _fetch(self) -> bool:
        if self._size is not None and self._offset >= self._size:
            return False
        try:
            body = self.fetch_range(f"bytes={self._offset}-{self._offset + self._next_range - 1}")
        except EmptyObject:
            self._size = 0
            return False
        self._offset += len(body)
        self._next_range = min(self._next_range * 2, self._max_range)
        self._pending = memoryview(body)
        return bool(body)

    def fetch_range(self, byte_range: str) -> bytes | bytearray:
        """One GET of ``byte_range`` (``bytes=first-last`` or ``bytes=-suffix``), pinned.

        The first GET learns the object's size and ETag; every later one carries If-Match on
        that ETag. ``gets`` and ``bytes_fetched`` count what S3 was asked for and sent.
        """
        request = {"Bucket": self._bucket, "Key": self._key, "Range": byte_range}
        if self.etag:
            request["IfMatch"] = self.etag
        self.gets += 1
        try:
            response = self._s3.get_object(**request)
            body = _read_body(response)
        except ClientError as error:
            if self._size is None and error_code(error) == "InvalidRange":
                self._size = 0  # S3 answers a range on an empty object with 416
                raise EmptyObject from None
            if is_throttling(error):
                raise QueryThrottled(self._describe(error)) from None
            raise QueryError(self._describe(error)) from None
        match = _CONTENT_RANGE.fullmatch(response.get("ContentRange") or "")
        self._size = int(match.group(1)) if match else len(body)  # no range: the whole object
        self.etag = self.etag or response.get("ETag")
        self.bytes_fetched += len(body)
        return body

    @property
    def size(self) -> int | None:
        """The object's size in bytes, known once a range has been fetched."""
        return self._size

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
def open_records(source: RangedObject, fmt: InputFormat, deadline: Deadline) -> Iterator[Records]:
    """Open ``source`` as records in format ``fmt``; decoding errors become QueryErrors.

    ``deadline`` is checked between lines and JSON records, and counts the records read.
    """
    check_format(fmt)
    binary = decompressed(io.BufferedReader(source, buffer_size=1 << 16), fmt.compression, source)
    try:
        if fmt.kind == "CSV":
            text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
            records = _csv_records(_Lines(text, deadline), fmt)
        elif fmt.json_type == "LINES":
            text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="\n")
            records = Records("JSON", None, _json_lines(_Lines(text, deadline)))
        else:
            records = Records("JSON", None, _json_document(_DocumentSource(binary), deadline))
        yield _guarded(records, fmt, deadline)
    finally:
        binary.close()


def check_format(fmt: InputFormat) -> None:
    """Refuse CSV settings whose records cannot be told apart (before any byte is read)."""
    if fmt.kind != "CSV":
        return
    for name, char in (("delimiter", fmt.delimiter), ("quote", fmt.quote)):
        if char in "\r\n":
            raise QueryUnsupported(
                f"a CSV {name} of {char!r} is the record delimiter; records could not be told "
                f"apart (the local engine reads records ending in \\n or \\r\\n)"
            )
    if fmt.quote == fmt.delimiter:
        raise QueryUnsupported(
            f"the CSV quote and delimiter are the same character ({fmt.quote!r}); quoted fields "
            f"could not be told from separators"
        )


def decompressed(
    raw: io.BufferedReader, compression: str, source: RangedObject
) -> io.BufferedIOBase:
    if compression == "NONE":
        return raw
    if compression == "GZIP":
        inflating: io.BufferedIOBase = gzip.GzipFile(fileobj=raw, mode="rb")
    else:
        inflating = bz2.BZ2File(raw, mode="rb")
    return io.BufferedReader(_Inflated(inflating, compression, source), buffer_size=1 << 16)


class _Inflated(io.RawIOBase):
    """A decompressing stream that stops at the caps of :mod:`.caps` (a decompression bomb).

    The ratio is measured against the compressed bytes the decompressor has taken so far, so
    a bomb is stopped after about DECOMPRESSION_FLOOR bytes, whatever it would expand to.
    """

    def __init__(
        self, inflating: io.BufferedIOBase, compression: str, source: RangedObject
    ) -> None:
        super().__init__()
        self._inflating, self._compression, self._source = inflating, compression, source
        self._inflated = 0

    def readable(self) -> bool:
        """Say yes: this is a read-only stream."""
        return True

    def readinto(self, target: Any) -> int:
        """Decompress into ``target``; raise QueryError once past a cap."""
        count = self._inflating.readinto(target)
        self._inflated += count
        compressed = self._source.bytes_read
        allowed = max(DECOMPRESSION_FLOOR, DECOMPRESSION_RATIO * compressed)
        if self._inflated > min(allowed, MAX_DECOMPRESSED_BYTES):
            if self._inflated > MAX_DECOMPRESSED_BYTES:
                cap = f"{MAX_DECOMPRESSED_BYTES >> 30} GiB in all"
            else:
                cap = (
                    f"{DECOMPRESSION_RATIO}x the {compressed} compressed bytes read "
                    f"(and over {DECOMPRESSION_FLOOR >> 20} MiB)"
                )
            raise QueryLimitExceeded(
                f"the {self._compression} data decompresses to more than {cap}: refused as a "
                f"decompression bomb"
            )
        return count

    def close(self) -> None:
        """Close the decompressor too."""
        self._inflating.close()
        super().close()


class _Lines:
    """The decoded text's lines, each read with a bound, so no record over 1 MiB is ever held.

    ``for line in text`` would read a line whole however long it is (a 64 MiB line inside a
    small gzip is 64 MiB of memory); here a line stops at MAX_RECORD_CHARS plus its
    terminator. A record (a CSV record may span lines) is counted from one ``end_record`` call
    to the next and refused as S3 Select refuses it once it passes MAX_RECORD_CHARS.
    """

    def __init__(self, text: io.TextIOWrapper, deadline: Deadline) -> None:
        self._text, self._deadline = text, deadline
        self.number = 0
        self._record_chars = 0

    def __iter__(self) -> Iterator[str]:
        """Yield each line, its terminator included; refuse an over-long record."""
        read, check = self._text.readline, self._deadline.check
        while True:
            check()
            line = read(MAX_RECORD_CHARS + 2)
            if not line:
                return
            self.number += 1
            self._record_chars += len(line)
            # The terminator of the record's last line is not part of the record.
            if self._record_chars > MAX_RECORD_CHARS and (
                self._record_chars - (len(line) - len(line.rstrip("\r\n"))) > MAX_RECORD_CHARS
            ):
                raise over_max_record_size(f"input line {self.number}")
            yield line

    def end_record(self) -> None:
        """Start counting the next record's characters."""
        self._record_chars = 0


def _guarded(records: Records, fmt: InputFormat, deadline: Deadline) -> Records:
    """Wrap the row iterator: malformed input fails the item with a clear reason.

    Each record is counted for the deadline's message.
    """

    def rows() -> Iterator[Any]:
        with decoding_errors(fmt):
            for row in records.rows:
                deadline.records += 1
                yield row

    return Records(records.kind, records.header, rows())


@contextlib.contextmanager
def decoding_errors(fmt: InputFormat) -> Iterator[None]:
    """Turn the decoders' and parsers' exceptions into QueryErrors that say what is wrong.

    The messages carry no bytes of the object (gzip's "Not a gzipped file" quotes two).
    """
    try:
        yield
    except UnicodeDecodeError as error:
        raise QueryError(f"the object is not UTF-8 text ({error.reason})") from None
    except (EOFError, OSError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        reason = str(error).partition(" (b")[0]
        if fmt.compression == "NONE":
            raise QueryError(f"reading the object failed: {reason}") from None
        raise QueryError(f"the object is not valid {fmt.compression} data: {reason}") from None
    except csv.Error as error:
        raise QueryError(f"the object is not valid CSV: {error}") from None


def _csv_records(lines: _Lines, fmt: InputFormat) -> Records:
    reader = csv.reader(lines, delimiter=fmt.delimiter, quotechar=fmt.quote, doublequote=True)
    rows = _csv_rows(reader, lines)
    header = None
    if fmt.csv_header in ("USE", "IGNORE"):
        with decoding_errors(fmt):
            first = next(rows, None)
        if fmt.csv_header == "USE":
            header = first or []
    return Records("CSV", header, rows)


def _csv_rows(reader: Any, lines: _Lines) -> Iterator[list[str]]:
    for row in reader:
        lines.end_record()
        if row and not row[0].startswith(COMMENT):
            yield row


def _json_lines(lines: _Lines) -> Iterator[dict[str, Any]]:
    for line in lines:
        lines.end_record()
        if line.isspace():
            continue
        value = _json_line(line, lines.number)
        yield value if isinstance(value, dict) else {"_1": value}


def _json_line(line: str, number: int) -> Any:
    """Parse one JSON line; refuse it, naming only the line, if it is invalid or too deep."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as error:
        raise QueryError(f"line {number} is not valid JSON: {error.msg}") from None
    except RecursionError:  # far deeper than MAX_JSON_DEPTH: json's C parser recurses
        raise too_deep(f"line {number}") from None
    except ValueError:  # int() refuses longer digit strings (quadratic to convert)
        raise QueryError(
            f"line {number} holds an integer longer than {sys.get_int_max_str_digits()} digits"
        ) from None
    # Depth never exceeds the number of brackets: only bracket-heavy lines need walking.
    if line.count("[") + line.count("{") > MAX_JSON_DEPTH and _deeper_than(value, MAX_JSON_DEPTH):
        raise too_deep(f"line {number}")
    # JSON can escape half of a surrogate pair alone ("\ud800"), which json.loads keeps but no
    # UTF-8 output can hold: refused here, naming the line, not as an encoding error later.
    # Only a line with such an escape can hold one (the object was decoded as UTF-8).
    if "\\u" in line and _SURROGATE_ESCAPE.search(line) and _not_unicode(value):
        raise QueryError(
            f"line {number} holds a lone surrogate escape (\\ud800-\\udfff without its pair): "
            f"JSON, but not Unicode text"
        )
    return value


def _not_unicode(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests objects and arrays more than ``limit`` deep (no recursion)."""
    stack = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        item, depth = stack.pop()
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, (dict, list)):
                if depth == limit:
                    return True
                stack.append((child, depth + 1))
    return False


class _DocumentSource:
    """The binary stream ijson parses a DOCUMENT from, refusing an over-long record.

    ijson holds a record (and a string token) whole, so the characters read since the last
    record ended are counted as they are read, and reading stops once they pass
    MAX_RECORD_CHARS by more than one read: past that the record is surely over the cap.
    """

    def __init__(self, binary: io.BufferedIOBase) -> None:
        self._binary = binary
        self._chars = 0
        self._record_start = 0
        self.records = 0
        self.blank = True  # nothing but whitespace read so far

    def read(self, size: int) -> bytes:
        """Read for ijson, counting characters (bytes that do not continue a character)."""
        data = self._binary.read(size)
        self._chars += len(data.translate(None, _CONTINUATION))
        self.blank = self.blank and not data.strip()
        if self._chars - self._record_start > MAX_RECORD_CHARS + JSON_BUFFER:
            raise over_max_record_size(f"DOCUMENT record {self.records + 1}")
        return data

    def end_record(self) -> None:
        """Start counting the next record's characters."""
        self.records += 1
        self._record_start = self._chars


def _json_document(source: _DocumentSource, deadline: Deadline) -> Iterator[dict[str, Any]]:
    """Each root-level value of a JSON document is a record, as S3 Select's S3Object[*].

    Built here from ijson's basic events, whose cost is linear in the nesting (``ijson.items``
    builds a dotted prefix per event, quadratic in depth); the stack of open containers is the
    depth, so a record nested past MAX_JSON_DEPTH is refused at that level, before more is read.
    """
    events = ijson.basic_parse(source, buf_size=JSON_BUFFER, multiple_values=True, use_float=True)
    stack: list[Any] = []  # the containers open in the current record, outermost first
    key = None
    try:
        for event, value in events:
            if event == "map_key":
                key = value
                continue
            if event in _CLOSING:
                record = stack.pop()
                if stack:
                    continue
            else:
                if event in _OPENING:
                    value = {} if event == "start_map" else []
                if stack:
                    parent = stack[-1]
                    if isinstance(parent, dict):
                        parent[key] = value
                    else:
                        parent.append(value)
                if event in _OPENING:
                    stack.append(value)
                    if len(stack) > MAX_JSON_DEPTH:
                        raise too_deep(f"DOCUMENT record {source.records + 1}")
                    continue
                if stack:
                    continue
                record = value
            source.end_record()
            deadline.check()
            yield record if isinstance(record, dict) else {"_1": record}
    except ijson.JSONError as error:
        if source.blank:  # ijson calls an empty document a premature end; it has no records
            return
        # ijson's message quotes the text around the error; its first line does not.
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise QueryError(f"the object is not a valid JSON document: {reason}") from None
