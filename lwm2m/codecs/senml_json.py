"""application/senml+json (content format 110): RFC 8428 as profiled by TS Core 1.1 7.4.4.

A JSON array of records (see ``_senml`` for naming and typing rules). On output the
records are compact JSON (no spaces), ``bn`` in the first record only, Opaque in ``vd`` as
base64url without padding (RFC 8428 section 4.3), Objlnk in ``vlo`` as ``"3:0"``, Time in
``v`` as integer seconds. Floats are written in Python's shortest round-trip form, so they
decode to the same value; NaN and infinities have no JSON form and are refused.

On input ``vd`` may be base64url or standard base64, padded or not; an empty payload
decodes to no content (Leshan and Wakaama send that for an empty multiple resource).
JSON ``NaN``/``Infinity`` literals and duplicate keys in a record are refused. Timestamps
are only used to pick the latest of repeated records; they are not returned.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from lwm2m.codecs import _senml
from lwm2m.codecs._common import b64decode, b64encode, error
from lwm2m.model import ObjectRegistry
from lwm2m.numbers.content_formats import ContentFormat
from lwm2m.path import Path, Value

FMT = ContentFormat.SENML_JSON


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def loads(fmt: ContentFormat, path: Path, payload: bytes) -> Any:
    """Strict JSON parse (no NaN/Infinity, no duplicate keys); CodecError otherwise. Bytes that
    are not UTF-8 are kept as lone surrogates (``surrogateescape``): inside a string value they
    make that one value a ``RawString``, anywhere else the payload fails."""
    try:
        return json.loads(bytes(payload).decode("utf-8", "surrogateescape"), parse_constant=_no_constant,
                          object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as e:
        raise error(fmt, path, f"invalid JSON: {e}") from None


def dumps(fmt: ContentFormat, path: Path, document: Any) -> bytes:
    try:
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    except ValueError as e:
        raise error(fmt, path, f"not representable in JSON: {e}") from None
    except UnicodeEncodeError as e:
        raise error(fmt, path, f"string is not encodable as UTF-8: {e.reason}") from None


class SenmlJsonCodec:
    content_format = FMT

    def supports(self, path: Path, registry: ObjectRegistry) -> bool:
        return True

    def encode(self, path: Path, content: Mapping[Path, Value], registry: ObjectRegistry) -> bytes:
        records = _senml.to_records(FMT, path, content, registry)
        for record in records:
            if "vd" in record:
                record["vd"] = b64encode(record["vd"], url=True)
        return dumps(FMT, path, records)

    def decode(self, path: Path, payload: bytes, registry: ObjectRegistry) -> dict[Path, Value]:
        if not bytes(payload).strip():
            return {}
        document = loads(FMT, path, payload)
        if not isinstance(document, list):
            raise error(FMT, path, "a SenML JSON pack must be an array of records")
        for record in document:
            if isinstance(record, dict) and "vd" in record:
                record["vd"] = b64decode(FMT, path, record["vd"])
        return _senml.from_records(FMT, path, document, registry)


CODEC = SenmlJsonCodec()

__all__ = ["CODEC", "SenmlJsonCodec", "loads", "dumps"]
