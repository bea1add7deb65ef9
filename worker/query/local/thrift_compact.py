"""Thrift's compact protocol, the encoding of Parquet's footer and page index: read and write.

pyarrow parses the footer but does not expose where a column chunk's page index lies
(parquet.thrift's ``ColumnChunk`` fields 4-7), nor the index itself; the ``thrift`` package
is not a dependency. This reader decodes any compact-protocol struct into plain values, so
that the page index can be read and a footer rewritten (:mod:`.parquet_pages`). It reads
untrusted bytes: every length is checked against the bytes left, nesting is bounded, and any
fault is one :class:`ThriftInvalid` naming it.

A struct decodes to ``{field id: (type, value)}``; a list to :class:`ThriftList`; integers,
doubles, binaries and booleans to ``int``, ``float``, ``bytes`` and ``bool``. The writer takes
the same shapes back, so a decoded struct, edited, encodes again; a struct given as bytes is
taken as encoded already (a part that many structs share is encoded once). :class:`Reader`
also walks a struct a field at a time, so that a large footer is checked without holding it
decoded whole.
"""

from __future__ import annotations

import dataclasses
import gc
import struct
from collections.abc import Iterator
from typing import Any

# Types as the compact protocol numbers them (in a field header; in a list, TRUE is BOOL).
TRUE, FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(1, 13)
# Parquet's deepest struct (a LogicalType's TimeUnit inside a SchemaElement) nests ~5 deep.
MAX_DEPTH = 16
_VARINT_BYTES = 10  # a 64-bit varint never needs more

Struct = dict[int, tuple[int, Any]]


class ThriftInvalid(ValueError):
    """The bytes are not the compact-protocol struct they claim to be."""


@dataclasses.dataclass
class ThriftList:
    """A list (or set): its elements' type and the elements."""

    element_type: int
    items: list[Any]


def read_struct(data: bytes | memoryview, start: int = 0) -> tuple[Struct, int]:
    """Decode the struct at ``start``; return it and the offset just past it.

    The cyclic garbage collector is paused meanwhile: a footer decodes to ~40 containers per
    KiB, none of them in a cycle, and the collections their number set off found nothing but
    took a third of a 286 KiB footer's decoding (0.097 s, 0.064 s without them).
    """
    reader = Reader(data, start)
    collecting = gc.isenabled()
    gc.disable()
    try:
        return reader.struct(0), reader.position
    finally:
        if collecting:
            gc.enable()


def write_struct(fields: Struct) -> bytes:
    """Encode ``fields`` (ascending ids) as a compact-protocol struct."""
    out = bytearray()
    _write_struct(out, fields)
    return bytes(out)


class Reader:
    """Compact-protocol values read one at a time from ``position`` on.

    The hot steps (a field header, a varint, an integer value) index the bytes inline rather
    than through :meth:`byte`: a footer is tens of thousands of them, and the method calls
    were most of the time. Reading past the end is an IndexError, turned into ThriftInvalid.
    """

    def __init__(self, data: bytes | memoryview, position: int = 0) -> None:
        """Read ``data`` from ``position``."""
        self.data = bytes(data)  # indexing bytes is faster than indexing a memoryview
        self.position = position

    def _ended(self) -> ThriftInvalid:
        return ThriftInvalid(f"it ends at byte {len(self.data)}, inside a value")

    def byte(self) -> int:
        try:
            value = self.data[self.position]
        except IndexError:
            raise self._ended() from None
        self.position += 1
        return value

    def take(self, count: int) -> bytes:
        if count < 0 or count > len(self.data) - self.position:
            raise ThriftInvalid(
                f"a value at byte {self.position} claims {count} bytes, past the "
                f"{len(self.data) - self.position} left"
            )
        value = self.data[self.position : self.position + count]
        self.position += count
        return value

    def varint(self) -> int:
        data, position = self.data, self.position
        try:
            byte = data[position]
            value, shift = byte & 0x7F, 7
            while byte & 0x80:
                if shift >= 7 * _VARINT_BYTES:
                    raise ThriftInvalid(f"a varint before byte {position + 1} runs past 10 bytes")
                position += 1
                byte = data[position]
                value |= (byte & 0x7F) << shift
                shift += 7
        except IndexError:
            raise self._ended() from None
        self.position = position + 1
        return value

    def zigzag(self) -> int:
        value = self.varint()
        return (value >> 1) ^ -(value & 1)

    def count(self, value: int) -> int:
        # Each element takes a byte at least: a count past the bytes left is a lie.
        if value > len(self.data) - self.position:
            raise ThriftInvalid(
                f"a list at byte {self.position} claims {value} elements, more than the "
                f"{len(self.data) - self.position} bytes left"
            )
        return value

    def value(self, kind: int, depth: int) -> Any:
        """Decode the value of type ``kind``, ``depth`` structs or lists deep."""
        if I16 <= kind <= I64:  # the commonest: tested first
            value = self.varint()
            return (value >> 1) ^ -(value & 1)
        if kind == BINARY:
            return self.take(self.varint())
        if kind in (TRUE, FALSE):
            return kind == TRUE
        if kind == BYTE:
            return self.byte()
        if kind == DOUBLE:
            return struct.unpack("<d", self.take(8))[0]
        if depth >= MAX_DEPTH:
            raise ThriftInvalid(f"it nests more than {MAX_DEPTH} deep at byte {self.position}")
        if kind in (LIST, SET):
            element, size = self.list_header()
            if element in (TRUE, FALSE):  # in a list, each boolean is a byte of its own
                return ThriftList(TRUE, [self.byte() == 1 for _ in range(size)])
            if I16 <= element <= I64:
                return ThriftList(element, [self.zigzag() for _ in range(size)])
            return ThriftList(element, [self.value(element, depth + 1) for _ in range(size)])
        if kind == STRUCT:
            return self.struct(depth + 1)
        raise ThriftInvalid(f"type {kind} at byte {self.position} is not one Parquet uses")

    def list_header(self) -> tuple[int, int]:
        """Read a list's header; return its elements' type and their count, checked."""
        header = self.byte()
        size = header >> 4 if header >> 4 != 15 else self.varint()
        return header & 0x0F, self.count(size)

    def fields(self) -> Iterator[tuple[int, int]]:
        """Yield a struct's field ids and types; read or decode each value before the next."""
        field = 0
        data = self.data
        while True:
            try:
                header = data[self.position]
            except IndexError:
                raise self._ended() from None
            self.position += 1
            kind = header & 0x0F
            if kind == 0:
                return
            delta = header >> 4
            field = field + delta if delta else self.zigzag()
            yield field, kind

    def skip(self, kind: int, depth: int) -> None:
        """Read past a value of type ``kind``, holding at most one element of it decoded."""
        if kind in (LIST, SET) and depth < MAX_DEPTH:
            element, size = self.list_header()
            for _ in range(size):
                self.skip(BYTE if element in (TRUE, FALSE) else element, depth + 1)
        elif kind == STRUCT and depth < MAX_DEPTH:
            for _, field_kind in self.fields():
                self.skip(field_kind, depth + 1)
        else:
            self.value(kind, depth)  # a plain value, or a container past MAX_DEPTH: refused

    def struct(self, depth: int) -> Struct:
        """Decode the struct at the position, ``depth`` structs or lists deep."""
        decoded: Struct = {}
        for field, kind in self.fields():
            if I16 <= kind <= I64:  # most fields: decoded here, one call fewer each
                value = self.varint()
                decoded[field] = (kind, (value >> 1) ^ -(value & 1))
            else:
                decoded[field] = (kind, self.value(kind, depth))
        return decoded


def _varint(out: bytearray, value: int) -> None:
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _zigzag(out: bytearray, value: int) -> None:
    _varint(out, (value << 1) ^ (value >> 63))


def _write_value(out: bytearray, kind: int, value: Any) -> None:
    if kind == BYTE:
        out.append(value)
    elif kind in (I16, I32, I64):
        _zigzag(out, value)
    elif kind == DOUBLE:
        out += struct.pack("<d", value)
    elif kind == BINARY:
        _varint(out, len(value))
        out += value
    elif kind in (LIST, SET):
        size = len(value.items)
        out.append((min(size, 15) << 4) | value.element_type)
        if size >= 15:
            _varint(out, size)
        for item in value.items:
            if value.element_type == TRUE:
                out.append(1 if item else 2)
            else:
                _write_value(out, value.element_type, item)
    elif kind == STRUCT and isinstance(value, bytes):
        out += value  # encoded already
    elif kind == STRUCT:
        _write_struct(out, value)
    elif kind not in (TRUE, FALSE):
        raise ThriftInvalid(f"type {kind} is not one Parquet uses")


def _write_struct(out: bytearray, fields: Struct) -> None:
    last = 0
    for field in sorted(fields):
        kind, value = fields[field]
        if kind in (TRUE, FALSE):
            kind = TRUE if value else FALSE
        if 0 < field - last <= 15:
            out.append(((field - last) << 4) | kind)
        else:
            out.append(kind)
            _zigzag(out, field)
        _write_value(out, kind, value)
        last = field
    out.append(0)
