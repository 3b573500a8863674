"""OMA TLV (content format 11542; legacy 1542), TS Core 1.1 section 7.4.3.

Each TLV starts with a type byte: bits 7-6 the identifier type (00 object instance,
01 resource instance, 10 multiple resource, 11 resource with value), bit 5 the identifier
length (8 or 16 bit), bits 4-3 the length type (0: length in bits 2-0, else a 1, 2 or
3 byte length field). Values:

* Integer, Time: two's complement big-endian in the smallest of 1/2/4/8 bytes;
  Unsigned Integer likewise but unsigned (LwM2M 1.1);
* Float: IEEE 754 big-endian, 4 bytes when the value is exact in float32, else 8
  (both accepted on input);
* Boolean: one byte 0 or 1; Objlnk: 2 + 2 bytes; Opaque: raw; String, Corelnk: UTF-8.

Nesting follows the request path: ``/3`` -> object-instance TLVs, ``/3/0`` -> resource TLVs
(multiple resources as multiple-resource TLVs), ``/3/0/7`` -> one multiple-resource TLV (or
a resource TLV for a single resource), ``/3/0/7/1`` -> one resource-instance TLV. The root
path has no TLV form (NotAcceptable). On input every TLV is placed by its kind below the
request path, so the tolerated forms (device instance wrapped in an object-instance TLV,
bare resource-instance TLVs for ``/3/0/7``) decode as well; a TLV whose path falls outside
the request path raises CodecError naming that path.

TLV carries no types: decoding needs the registry. A resource the registry does not know
is decoded as ``bytes`` (Opaque); on encode its value is written in the TLV form of its
Python type. An empty multiple-resource TLV decodes to no entries.
"""

from __future__ import annotations

import enum
import itertools
import struct
from dataclasses import dataclass, field
from typing import Callable, Mapping

from lwm2m.codecs._common import (
    Collector,
    Item,
    content_items,
    error,
    not_acceptable,
    path_from_ids,
    resource_model,
)
from lwm2m.model import ObjectRegistry, ResourceType
from lwm2m.numbers.content_formats import ContentFormat
from lwm2m.path import ObjLink, Path, Value, string_value

FMT = ContentFormat.TLV
MAX_LENGTH = 2**24 - 1


class Kind(enum.IntEnum):
    OBJECT_INSTANCE = 0b00
    RESOURCE_INSTANCE = 0b01
    MULTIPLE_RESOURCE = 0b10
    RESOURCE = 0b11


# The path level a TLV's identifier fills (2 instance, 3 resource, 4 resource instance).
LEVEL: dict[Kind, int] = {
    Kind.OBJECT_INSTANCE: 2,
    Kind.MULTIPLE_RESOURCE: 3,
    Kind.RESOURCE: 3,
    Kind.RESOURCE_INSTANCE: 4,
}
# What a container TLV may hold; value TLVs hold bytes.
CHILDREN: dict[Kind, tuple[Kind, ...]] = {
    Kind.OBJECT_INSTANCE: (Kind.RESOURCE, Kind.MULTIPLE_RESOURCE),
    Kind.MULTIPLE_RESOURCE: (Kind.RESOURCE_INSTANCE,),
}


@dataclass(slots=True)
class Tlv:
    kind: Kind
    id: int
    value: bytes = b""
    children: list["Tlv"] = field(default_factory=list)


# --- framing -----------------------------------------------------------------------------


def header(kind: Kind, ident: int, length: int) -> bytes:
    if length > MAX_LENGTH:
        raise error(FMT, None, f"TLV value of {length} bytes exceeds {MAX_LENGTH}")
    wide = ident > 0xFF
    type_byte = kind << 6 | (0x20 if wide else 0)
    ident_bytes = ident.to_bytes(2 if wide else 1, "big")
    if length < 8:
        return bytes([type_byte | length]) + ident_bytes
    size = 1 if length <= 0xFF else 2 if length <= 0xFFFF else 3
    return bytes([type_byte | size << 3]) + ident_bytes + length.to_bytes(size, "big")


def frame(kind: Kind, ident: int, body: bytes) -> bytes:
    return header(kind, ident, len(body)) + body


def parse(data: bytes, where: Path, start: int = 0, end: int | None = None, inside: Kind | None = None) -> list[Tlv]:
    """Split ``data[start:end]`` into TLVs, recursing into containers; CodecError if malformed."""
    end = len(data) if end is None else end
    out: list[Tlv] = []
    pos = start
    while pos < end:
        type_byte = data[pos]
        kind = Kind(type_byte >> 6)
        if inside is not None and kind not in CHILDREN[inside]:
            raise error(FMT, where, f"{kind.name.lower()} TLV at byte {pos} cannot be inside a "
                                    f"{inside.name.lower()} TLV")
        id_size = 2 if type_byte & 0x20 else 1
        len_size = (type_byte >> 3) & 0x3
        pos += 1
        if pos + id_size + len_size > end:
            raise error(FMT, where, f"TLV header at byte {pos - 1} is truncated")
        ident = int.from_bytes(data[pos : pos + id_size], "big")
        pos += id_size
        length = int.from_bytes(data[pos : pos + len_size], "big") if len_size else type_byte & 0x7
        pos += len_size
        if pos + length > end:
            raise error(FMT, where, f"TLV {ident} claims {length} bytes, only {end - pos} left")
        tlv = Tlv(kind, ident)
        if kind in CHILDREN:
            tlv.children = parse(data, where, pos, pos + length, kind)
        else:
            tlv.value = bytes(data[pos : pos + length])
        out.append(tlv)
        pos += length
    return out


# --- values ------------------------------------------------------------------------------

Encoder = Callable[[Path, Value], bytes]
Decoder = Callable[[Path, bytes], Value]
_INT_SIZES = (1, 2, 4, 8)


def _enc_int(path: Path, value: Value) -> bytes:
    assert isinstance(value, int)
    size = next(n for n in _INT_SIZES if -(1 << (8 * n - 1)) <= value < 1 << (8 * n - 1))
    return value.to_bytes(size, "big", signed=True)


def _enc_uint(path: Path, value: Value) -> bytes:
    assert isinstance(value, int)
    size = next(n for n in _INT_SIZES if value < 1 << (8 * n))
    return value.to_bytes(size, "big")


def _enc_float(path: Path, value: Value) -> bytes:
    assert isinstance(value, float)
    try:
        short = struct.pack(">f", value)
        if struct.unpack(">f", short)[0] == value:
            return short
    except OverflowError:
        pass
    return struct.pack(">d", value)


def _enc_text(path: Path, value: Value) -> bytes:
    assert isinstance(value, str)
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise error(FMT, path, f"string is not encodable as UTF-8: {e.reason}") from None


def _dec_int(signed: bool, what: str) -> Decoder:
    def decode(path: Path, raw: bytes) -> Value:
        if len(raw) not in _INT_SIZES:
            raise error(FMT, path, f"{what} of {len(raw)} bytes: expected 1, 2, 4 or 8")
        return int.from_bytes(raw, "big", signed=signed)

    return decode


def _dec_float(path: Path, raw: bytes) -> Value:
    if len(raw) == 4:
        return float(struct.unpack(">f", raw)[0])
    if len(raw) == 8:
        return float(struct.unpack(">d", raw)[0])
    raise error(FMT, path, f"Float of {len(raw)} bytes: expected 4 or 8")


def _dec_bool(path: Path, raw: bytes) -> Value:
    if raw not in (b"\x00", b"\x01"):
        raise error(FMT, path, f"Boolean must be one byte 0 or 1, got {raw.hex()!r:.20}")
    return raw == b"\x01"


def _dec_objlnk(path: Path, raw: bytes) -> Value:
    if len(raw) != 4:
        raise error(FMT, path, f"Objlnk of {len(raw)} bytes: expected 4")
    return ObjLink(int.from_bytes(raw[:2], "big"), int.from_bytes(raw[2:], "big"))


def _dec_text(path: Path, raw: bytes) -> Value:
    return string_value(raw)  # not clean text: a RawString for this one value, flagged


# ResourceType -> (value to bytes, bytes to value)
VALUES: dict[ResourceType, tuple[Encoder, Decoder]] = {
    ResourceType.STRING: (_enc_text, _dec_text),
    ResourceType.CORELNK: (_enc_text, _dec_text),
    ResourceType.INTEGER: (_enc_int, _dec_int(True, "Integer")),
    ResourceType.TIME: (_enc_int, _dec_int(True, "Time")),
    ResourceType.UNSIGNED_INTEGER: (_enc_uint, _dec_int(False, "Unsigned Integer")),
    ResourceType.FLOAT: (_enc_float, _dec_float),
    ResourceType.BOOLEAN: (lambda p, v: b"\x01" if v else b"\x00", _dec_bool),
    ResourceType.OBJLNK: (lambda p, v: struct.pack(">HH", v.object_id, v.instance_id), _dec_objlnk),  # type: ignore[union-attr]
    ResourceType.OPAQUE: (lambda p, v: bytes(v), lambda p, raw: raw),  # type: ignore[arg-type]
}


def _value_bytes(item: Item) -> bytes:
    return VALUES[item.type][0](item.path, item.value)


# --- codec -------------------------------------------------------------------------------


def _resources(items: list[Item]) -> bytes:
    """Resource / multiple-resource TLVs for items of one object instance."""
    out = []
    for rid, group in itertools.groupby(items, key=lambda it: it.path.resource_id):
        members = list(group)
        assert rid is not None
        if members[0].path.depth == 4:
            body = b"".join(frame(Kind.RESOURCE_INSTANCE, it.path.ids[3], _value_bytes(it)) for it in members)
            out.append(frame(Kind.MULTIPLE_RESOURCE, rid, body))
        else:
            out.append(frame(Kind.RESOURCE, rid, _value_bytes(members[0])))
    return b"".join(out)


class TlvCodec:
    content_format = FMT

    def supports(self, path: Path, registry: ObjectRegistry) -> bool:
        return path.depth >= 1

    def encode(self, path: Path, content: Mapping[Path, Value], registry: ObjectRegistry) -> bytes:
        if path.depth == 0:
            raise not_acceptable(FMT, path, "TLV has no form for the root path")
        items = content_items(FMT, path, content, registry)
        if path.depth == 1:
            return b"".join(
                frame(Kind.OBJECT_INSTANCE, iid, _resources(list(group)))
                for iid, group in itertools.groupby(items, key=lambda it: it.path.instance_id)
            )
        if path.depth == 4:
            return b"".join(frame(Kind.RESOURCE_INSTANCE, it.path.ids[3], _value_bytes(it)) for it in items)
        model = resource_model(registry, path)
        if path.depth == 3 and not items and model is not None and model.multiple:
            return frame(Kind.MULTIPLE_RESOURCE, path.ids[2], b"")
        return _resources(items)

    def decode(self, path: Path, payload: bytes, registry: ObjectRegistry) -> dict[Path, Value]:
        if path.depth == 0:
            raise not_acceptable(FMT, path, "TLV has no form for the root path")
        tlvs = parse(bytes(payload), path)
        collector = Collector(FMT, path, registry)
        for tlv in tlvs:
            level = LEVEL[tlv.kind]
            if path.depth < level - 1:
                raise error(FMT, path, f"a {tlv.kind.name.lower()} TLV needs a request path of at least "
                                       f"{level - 1} levels")
            self._place(tlv, path.ids[: level - 1], collector)
        return collector.values

    def _place(self, tlv: Tlv, base: tuple[int, ...], collector: Collector) -> None:
        path = path_from_ids(FMT, (*base, tlv.id), str(collector.request))
        request = collector.request
        if not (path.startswith(request) or request.startswith(path)):
            raise error(FMT, path, f"path {path} is outside the request path {request}")
        if tlv.kind is Kind.MULTIPLE_RESOURCE:
            model = collector.model(path)
            if model is not None and not model.multiple:
                raise error(FMT, path, f"multiple-resource TLV for single-instance resource {model.name!r}")
        if tlv.kind in CHILDREN:
            for child in tlv.children:
                self._place(child, path.ids, collector)
            return
        model = collector.check_path(path)
        if model is None:
            collector.add(path, tlv.value)
            return
        if model.type not in VALUES:
            raise error(FMT, path, f"resource {model.name!r} is of type {model.type.value} and carries no value")
        collector.add(path, VALUES[model.type][1](path, tlv.value))


CODEC = TlvCodec()

__all__ = ["CODEC", "TlvCodec", "Kind", "Tlv", "parse", "frame", "header"]
