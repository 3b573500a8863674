"""application/senml+cbor (content format 112): RFC 8428 section 6 as profiled by TS Core 1.1.

A CBOR array of maps with the RFC 8428 integer labels (bn -2, bt -3, n 0, u 1, v 2, vs 3,
vb 4, s 5, t 6, ut 7, vd 8) and the text label ``"vlo"`` for Objlnk (TS Core 1.1 7.4.5);
naming and typing rules are in ``_senml``. Opaque is a byte string, Objlnk ``"3:0"``, Time
an integer in ``v``; floats are CBOR doubles (exact). Labels keep the order bn, n, value,
which reproduces the spec's example bytes.

On input any CBOR number is accepted for ``v`` (integers, half/single/double floats,
tag 4 decimal fractions), definite or indefinite lengths, and an empty payload decodes to
no content. Trailing bytes after the array, unknown integer labels, labels that are
neither integers nor text, and text labels ending in ``_`` are refused; other unknown text
labels are ignored.
"""

from __future__ import annotations

import io
from typing import Any, Mapping

import cbor2

from lwm2m.codecs import _senml
from lwm2m.codecs._common import error
from lwm2m.model import ObjectRegistry
from lwm2m.numbers.content_formats import ContentFormat
from lwm2m.path import Path, Value

FMT = ContentFormat.SENML_CBOR

# RFC 8428 Table 6 (CBOR labels), plus TS Core 1.1's "vlo".
LABELS: dict[str, int | str] = {
    "bver": -1,
    "bn": -2,
    "bt": -3,
    "bu": -4,
    "bv": -5,
    "bs": -6,
    "n": 0,
    "u": 1,
    "v": 2,
    "vs": 3,
    "vb": 4,
    "s": 5,
    "t": 6,
    "ut": 7,
    "vd": 8,
    "vlo": "vlo",
}
NAMES: dict[int | str, str] = {label: name for name, label in LABELS.items()}


def loads(fmt: ContentFormat, path: Path, payload: bytes) -> Any:
    """Decode exactly one CBOR item; CodecError for malformed input or trailing bytes. A text
    string that is not UTF-8 is kept with ``surrogateescape`` (a ``RawString`` where it is a value)."""
    data = bytes(payload)
    stream = io.BytesIO(data)
    try:
        item = cbor2.CBORDecoder(stream, str_errors="surrogateescape").decode()
    except Exception as e:  # cbor2 raises many types (and RecursionError) on hostile input
        raise error(fmt, path, f"invalid CBOR: {type(e).__name__}: {e}") from None
    if stream.tell() != len(data):
        raise error(fmt, path, f"{len(data) - stream.tell()} trailing bytes after the CBOR item")
    return item


def dumps(fmt: ContentFormat, path: Path, document: Any) -> bytes:
    try:
        return cbor2.dumps(document)
    except (cbor2.CBOREncodeError, ValueError, TypeError) as e:
        raise error(fmt, path, f"not encodable as CBOR: {e}") from None


class SenmlCborCodec:
    content_format = FMT

    def supports(self, path: Path, registry: ObjectRegistry) -> bool:
        return True

    def encode(self, path: Path, content: Mapping[Path, Value], registry: ObjectRegistry) -> bytes:
        records = _senml.to_records(FMT, path, content, registry)
        return dumps(FMT, path, [{LABELS[name]: value for name, value in record.items()} for record in records])

    def decode(self, path: Path, payload: bytes, registry: ObjectRegistry) -> dict[Path, Value]:
        if not payload:
            return {}
        document = loads(FMT, path, payload)
        if not isinstance(document, list):
            raise error(FMT, path, "a SenML CBOR pack must be an array of records")
        records = []
        for index, item in enumerate(document):
            if not isinstance(item, Mapping):
                raise error(FMT, path, f"record {index} is not a map")
            record: dict[str, Any] = {}
            for label, value in item.items():
                name = NAMES.get(label) if isinstance(label, (int, str)) and not isinstance(label, bool) else None
                if name is None:
                    if isinstance(label, str) and not label.endswith("_"):
                        continue  # unknown text label: ignored, as RFC 8428 allows
                    raise error(FMT, path, f"record {index} has unknown label {label!r:.20}")
                record[name] = value
            records.append(record)
        return _senml.from_records(FMT, path, records, registry)


CODEC = SenmlCborCodec()

__all__ = ["CODEC", "SenmlCborCodec", "LABELS", "loads", "dumps"]
