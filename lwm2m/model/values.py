"""Check values against the object model before they are sent to a device.

``check_value`` is for values that come from code or the API as Python objects: it accepts
exactly the Python type of the resource (see ``lwm2m.path.Value``) and converts
only where nothing can be lost (an int for a Float, bytearray for Opaque, an aware datetime
with whole seconds for Time). It never parses text: "true" is not a Boolean and "5" is not
an Integer. ``parse_cli_value`` is for what an operator typed: it turns the text into the
resource's type and then applies the same checks.

Errors name the path, the object and resource names, the expected type and what was given:
NotFound for an unknown object or resource, MethodNotAllowed for a resource that cannot be
written (or is executable), BadRequest for a wrong type or a value out of range.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import math
import re

from lwm2m.errors import BadRequest, MethodNotAllowed, NotFound
from lwm2m.model import ObjectModel, ObjectRegistry, Operations, ResourceModel, ResourceType
from lwm2m.path import MAX_ID, ObjLink, Path, Value

__all__ = ["check_value", "parse_cli_value", "numeric_range", "resolve_resource"]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1

_RANGE = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*(?:\.\.|-)\s*(-?\d+(?:\.\d+)?)\s*")
_INT_TEXT = re.compile(r"[+-]?(?:[0-9]+|0[xX][0-9a-fA-F]+)")
_FLOAT_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NUMERIC = (ResourceType.INTEGER, ResourceType.UNSIGNED_INTEGER, ResourceType.FLOAT)


def numeric_range(text: str) -> tuple[float, float] | None:
    """``"0..100"``, ``"0-255"``, ``"-10..10"`` -> (low, high); None for any other form."""
    m = _RANGE.fullmatch(text or "")
    if m is None:
        return None
    low, high = float(m.group(1)), float(m.group(2))
    return (low, high) if low <= high else None


def _label(path: Path, obj: ObjectModel, res: ResourceModel) -> str:
    return f"{path} ({obj.name} / {res.name})"


def _ops(ops: Operations) -> str:
    text = "".join(flag for flag in "RWE" if ops & Operations[flag])
    return text or "none (bootstrap only)"


def _given(value: object) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def resolve_resource(registry: ObjectRegistry, path: Path) -> tuple[ObjectModel, ResourceModel]:
    """The object and resource models for a resource or resource-instance path."""
    if path.depth not in (3, 4):
        raise BadRequest(f"{path}: a value belongs to a resource or resource instance path "
                         "like /3/0/13 or /3/0/6/0")
    assert path.object_id is not None and path.resource_id is not None
    obj = registry.get(path.object_id)
    if obj is None:
        raise NotFound(f"{path}: object {path.object_id} is not in the object model")
    res = obj.resources.get(path.resource_id)
    if res is None:
        raise NotFound(f"{path}: object {obj.id} ({obj.name}) has no resource {path.resource_id}")
    if path.depth == 4 and not res.multiple:
        raise BadRequest(f"{_label(path, obj, res)}: single-instance resource, it has no resource "
                         f"instances; use {path.parent}")
    return obj, res


def _check_writable(path: Path, obj: ObjectModel, res: ResourceModel, for_write: bool) -> None:
    if res.type is ResourceType.NONE or (res.operations.executable and not res.operations.writable):
        raise MethodNotAllowed(f"{_label(path, obj, res)}: executable resource (operations "
                               f"{_ops(res.operations)}); Execute it, it takes no value")
    if for_write and not res.operations.writable:
        raise MethodNotAllowed(f"{_label(path, obj, res)}: not writable (operations "
                               f"{_ops(res.operations)})")
    if res.multiple and path.depth == 3:
        raise BadRequest(f"{_label(path, obj, res)}: multiple-instance resource; give a value per "
                         f"resource instance, e.g. {path}/0")


def _bad(label: str, res: ResourceModel, expected: str, value: object) -> BadRequest:
    return BadRequest(f"{label}: expected {res.type.value} ({expected}), got {_given(value)}")


def _in_range(label: str, res: ResourceModel, value: int | float) -> None:
    if res.type not in _NUMERIC:
        return
    bounds = numeric_range(res.range)
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        raise BadRequest(f"{label}: {value!r} is outside the range {res.range.strip()} of the resource")


def _coerce(label: str, res: ResourceModel, value: object) -> Value:
    t = res.type
    if t in (ResourceType.STRING, ResourceType.CORELNK):
        if not isinstance(value, str):
            raise _bad(label, res, "str", value)
        if t is ResourceType.CORELNK:
            from lwm2m.link_format import LinkFormatError, parse_links

            try:
                parse_links(value)
            except LinkFormatError as exc:
                raise BadRequest(f"{label}: not a valid Corelnk value: {exc.message}") from None
        return value
    if t in (ResourceType.INTEGER, ResourceType.TIME):
        if t is ResourceType.TIME and isinstance(value, _dt.datetime):
            if value.tzinfo is None or value.microsecond:
                raise _bad(label, res, "int seconds since the epoch, or an aware datetime with whole seconds",
                           value)
            value = int(value.timestamp())
        if not isinstance(value, int) or isinstance(value, bool):
            raise _bad(label, res, "int" + (" seconds since the epoch" if t is ResourceType.TIME else ""), value)
        if not INT64_MIN <= value <= INT64_MAX:
            raise BadRequest(f"{label}: {value} does not fit a signed 64-bit {t.value}")
        _in_range(label, res, value)
        return value
    if t is ResourceType.UNSIGNED_INTEGER:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _bad(label, res, "int >= 0", value)
        if not 0 <= value <= UINT64_MAX:
            raise BadRequest(f"{label}: {value} is outside 0..2**64-1 of an Unsigned Integer")
        _in_range(label, res, value)
        return value
    if t is ResourceType.FLOAT:
        if isinstance(value, int) and not isinstance(value, bool):
            as_float = float(value) if abs(value) < 2**1024 else math.inf
            if math.isinf(as_float) or int(as_float) != value:
                raise BadRequest(f"{label}: {value} cannot be represented exactly as a Float")
            value = as_float
        if not isinstance(value, float):
            raise _bad(label, res, "float or int", value)
        if not math.isfinite(value):
            raise BadRequest(f"{label}: {value!r} is not a finite Float")
        _in_range(label, res, value)
        return value
    if t is ResourceType.BOOLEAN:
        if not isinstance(value, bool):
            raise _bad(label, res, "bool True or False", value)
        return value
    if t is ResourceType.OPAQUE:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise _bad(label, res, "bytes", value)
        return bytes(value)
    if t is ResourceType.OBJLNK:
        if not isinstance(value, ObjLink):
            raise _bad(label, res, "ObjLink", value)
        for part in (value.object_id, value.instance_id):
            if not isinstance(part, int) or isinstance(part, bool) or not 0 <= part <= MAX_ID:
                raise BadRequest(f"{label}: Objlnk {value} has an id outside 0..{MAX_ID}")
        return value
    raise _bad(label, res, "no value", value)  # pragma: no cover - NONE is refused earlier


def check_value(registry: ObjectRegistry, path: Path, value: Value, *, for_write: bool = True) -> Value:
    """Check (and losslessly normalise) a value for a Write or Create at ``path``.

    ``path`` is a resource path (single-instance resource) or a resource-instance path
    (multiple-instance resource). ``for_write`` checks that the resource is writable; in
    LwM2M a Create also sets writable resources only, so leave it True unless the value
    comes from a device (a Read result). Returns the value to send.
    """
    obj, res = resolve_resource(registry, path)
    _check_writable(path, obj, res, for_write)
    return _coerce(_label(path, obj, res), res, value)


def _parse_text(label: str, res: ResourceModel, text: str) -> Value:
    t = res.type
    if t in (ResourceType.STRING, ResourceType.CORELNK):
        return text
    s = text.strip()
    if t in (ResourceType.INTEGER, ResourceType.UNSIGNED_INTEGER, ResourceType.TIME):
        if _INT_TEXT.fullmatch(s) and len(s) <= 40:
            return int(s, 0) if "x" in s.lower() else int(s, 10)
        if t is ResourceType.TIME:
            try:
                when = _dt.datetime.fromisoformat(s)
            except ValueError:
                when = None
            if when is not None and when.tzinfo is not None and not when.microsecond:
                return int(when.timestamp())
            raise BadRequest(f"{label}: expected Time as integer seconds since the epoch or an ISO 8601 "
                             f"date-time with a UTC offset (2024-05-01T12:00:00Z), got {text!r}")
        kind = "an integer >= 0" if t is ResourceType.UNSIGNED_INTEGER else "an integer"
        raise BadRequest(f"{label}: expected {t.value} ({kind}, decimal or 0x hex), got {text!r}")
    if t is ResourceType.FLOAT:
        if _FLOAT_TEXT.fullmatch(s) and len(s) <= 400:
            return float(s)
        raise BadRequest(f"{label}: expected Float (a decimal number like 3.25 or 1e-3), got {text!r}")
    if t is ResourceType.BOOLEAN:
        lowered = s.lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
        raise BadRequest(f"{label}: expected Boolean (true, false, 1 or 0), got {text!r}")
    if t is ResourceType.OPAQUE:
        if s.lower().startswith("hex:"):
            digits = re.sub(r"[\s:]", "", s[4:])
            try:
                return bytes.fromhex(digits)
            except ValueError:
                raise BadRequest(f"{label}: expected Opaque as hex:<hex digits>, got {text!r}") from None
        if s.lower().startswith("base64:"):
            try:
                return base64.b64decode(s[7:].strip(), validate=True)
            except (binascii.Error, ValueError):
                raise BadRequest(f"{label}: expected Opaque as base64:<base64 text>, got {text!r}") from None
        raise BadRequest(f"{label}: expected Opaque written as hex:0a1b... or base64:..., got {text!r}")
    if t is ResourceType.OBJLNK:
        m = re.fullmatch(r"([0-9]+):([0-9]+)", s)
        if m is None:
            raise BadRequest(f"{label}: expected Objlnk as OBJECT:INSTANCE like 3:0, got {text!r}")
        return ObjLink(int(m.group(1)), int(m.group(2)))
    raise BadRequest(f"{label}: resource takes no value, got {text!r}")  # pragma: no cover


def parse_cli_value(registry: ObjectRegistry, path: Path, text: str, *, for_write: bool = True) -> Value:
    """Turn operator input into the type of the resource at ``path``, then ``check_value`` it.

    Integer/Unsigned/Time: decimal or 0x hex (Time also ISO 8601 with offset); Float:
    decimal; Boolean: true/false/1/0; Opaque: ``hex:...`` or ``base64:...``; Objlnk:
    ``3:0``; String and Corelnk: the text as typed.
    """
    obj, res = resolve_resource(registry, path)
    _check_writable(path, obj, res, for_write)
    value = _parse_text(_label(path, obj, res), res, text)
    return check_value(registry, path, value, for_write=for_write)
