"""Content <-> JSON-safe dicts, for the admin API, the CLI's ``--json`` and the store.

Paths become strings ("/3/0/0"); str, int, float and bool stay as they are; Opaque becomes
``{"opaque": "<hex>"}`` and Objlnk ``{"objlnk": "3:0"}``; a string the device sent that is not
clean text (``RawString``) becomes ``{"string_bytes": "<hex>", "text": ..., "problem": ...}``; a float
JSON cannot carry (a device may send NaN or infinity) becomes ``{"float": "nan"}`` / ``"inf"`` /
``"-inf"``. This is not an LwM2M content
format (see ``codecs`` for those); it is how tinymlaas shows values to people and scripts.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from lwm2m.errors import BadRequest
from lwm2m.path import Content, ObjLink, Path, RawString, Value


def value_to_json(value: Value) -> Any:
    if isinstance(value, bytes):
        return {"opaque": value.hex()}
    if isinstance(value, ObjLink):
        return {"objlnk": str(value)}
    if isinstance(value, RawString):
        return {"string_bytes": value.raw.hex(), "text": value.text, "problem": value.problem}
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": str(value)}
    return value


def value_from_json(data: Any) -> Value:
    if isinstance(data, dict):
        if set(data) == {"opaque"}:
            try:
                return bytes.fromhex(data["opaque"])
            except (TypeError, ValueError):
                raise BadRequest(f"invalid opaque value {data!r}: expected hex") from None
        if set(data) == {"objlnk"}:
            return ObjLink.parse(str(data["objlnk"]))
        if "string_bytes" in data and set(data) <= {"string_bytes", "text", "problem"}:
            try:
                return RawString(bytes.fromhex(data["string_bytes"]), str(data.get("problem") or "as stored"))
            except (TypeError, ValueError):
                raise BadRequest(f"invalid string_bytes value {data!r}: expected hex") from None
        raise BadRequest(f"invalid value {data!r}: expected a scalar, {{'opaque': hex}} or {{'objlnk': 'O:I'}}")
    if isinstance(data, (str, int, float, bool)):
        return data
    raise BadRequest(f"invalid value {data!r}: expected a scalar, {{'opaque': hex}} or {{'objlnk': 'O:I'}}")


def content_to_json(content: Content) -> dict[str, Any]:
    return {str(p): value_to_json(v) for p, v in sorted(content.items())}


def content_from_json(data: Mapping[str, Any]) -> dict[Path, Value]:
    return {Path.parse(k): value_from_json(v) for k, v in data.items()}
