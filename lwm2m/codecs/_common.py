"""Helpers every codec shares: error messages, value checking, content walking, base64.

Codecs see ``Content`` (flat ``Path -> Value``) on one side and bytes on the other. This
module holds what is the same for all of them:

* ``error`` / ``not_acceptable``: exceptions whose message names the format and the path;
* ``check_value``: a value's Python type and range against a ``ResourceType`` (or, for a
  resource the registry does not know, against the value types LwM2M has at all);
* ``content_items``: validate content for encoding and list it in path order with the type
  each value is encoded as;
* ``Collector``: gather decoded values, refusing paths outside the request path, duplicates
  and single/multiple mismatches with the object model;
* base64 (standard on output, any alphabet, padded or not, on input) and Objlnk text.

It does not know any wire format.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any, Callable, Iterable, Mapping, SupportsInt, cast

from lwm2m.errors import BadRequest, CodecError, NotAcceptable
from lwm2m.model import ObjectRegistry, ResourceModel, ResourceType
from lwm2m.numbers.content_formats import ContentFormat
from lwm2m.path import MAX_ID, ObjLink, Path, RawString, Value, string_from_decoded

FORMAT_NAMES: dict[ContentFormat, str] = {
    ContentFormat.TEXT: "text/plain",
    ContentFormat.LINK: "application/link-format",
    ContentFormat.OPAQUE: "application/octet-stream",
    ContentFormat.SENML_JSON: "application/senml+json",
    ContentFormat.SENML_CBOR: "application/senml+cbor",
    ContentFormat.TLV: "application/vnd.oma.lwm2m+tlv",
    ContentFormat.LWM2M_JSON: "application/vnd.oma.lwm2m+json",
    ContentFormat.LWM2M_CBOR: "application/vnd.oma.lwm2m+cbor",
}

INT64 = (-(2**63), 2**63 - 1)
UINT64 = (0, 2**64 - 1)


def format_name(fmt: ContentFormat) -> str:
    return f"{FORMAT_NAMES.get(fmt, 'content format')} ({int(fmt)})"


def error(fmt: ContentFormat, path: Path | str | None, message: str) -> CodecError:
    """A CodecError whose message names the content format and, when known, the path."""
    where = f" at {path}" if path is not None else ""
    return CodecError(f"{format_name(fmt)}{where}: {message}")


def not_acceptable(fmt: ContentFormat, path: Path, why: str) -> NotAcceptable:
    return NotAcceptable(f"{format_name(fmt)} cannot carry {path}: {why}")


def resource_model(registry: ObjectRegistry, path: Path) -> ResourceModel | None:
    """The model of the resource ``path`` (depth >= 3) points into, if the registry has it."""
    if path.object_id is None or path.resource_id is None:
        return None
    return registry.resource(path.object_id, path.resource_id)


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


Converter = Callable[[ContentFormat, Path, Any], Value]


def expect(pytype: type, what: str) -> Converter:
    """A converter that passes a decoded item of ``pytype`` through (bool is not an int)."""

    def convert(fmt: ContentFormat, path: Path, raw: Any) -> Value:
        if not isinstance(raw, pytype) or (pytype is not bool and isinstance(raw, bool)):
            raise error(fmt, path, f"{what} value expected, got {type(raw).__name__}")
        return raw  # type: ignore[return-value]

    return convert


def text(what: str) -> Converter:
    """A converter for a String/Corelnk item from a JSON or CBOR parser run with
    ``surrogateescape``: clean text passes, anything else becomes a ``RawString`` (lenient per value)."""

    def convert(fmt: ContentFormat, path: Path, raw: Any) -> Value:
        if not isinstance(raw, str):
            raise error(fmt, path, f"{what} value expected, got {type(raw).__name__}")
        return string_from_decoded(raw)

    return convert


LENIENT_TYPES = frozenset({ResourceType.STRING, ResourceType.CORELNK})


def _check_int(fmt: ContentFormat, path: Path, value: object, bounds: tuple[int, int], what: str) -> int:
    if not is_int(value):
        raise error(fmt, path, f"{what} value expected, got {type(value).__name__}")
    assert isinstance(value, int)
    if not bounds[0] <= value <= bounds[1]:
        raise error(fmt, path, f"{what} value {value} outside {bounds[0]}..{bounds[1]}")
    return value


def _check_objlnk(fmt: ContentFormat, path: Path, value: object) -> ObjLink:
    if not isinstance(value, ObjLink):
        raise error(fmt, path, f"Objlnk value expected, got {type(value).__name__}")
    for x in (value.object_id, value.instance_id):
        if not is_int(x) or not 0 <= x <= MAX_ID:
            raise error(fmt, path, f"Objlnk {value} has an id outside 0..{MAX_ID}")
    return value


def _check_float(fmt: ContentFormat, path: Path, value: object) -> float:
    if isinstance(value, float):
        return value
    if is_int(value):
        assert isinstance(value, int)
        try:
            return float(value)
        except OverflowError:
            raise error(fmt, path, f"Float value {value} is too large") from None
    raise error(fmt, path, f"Float value expected, got {type(value).__name__}")


def _check_type(fmt: ContentFormat, path: Path, value: object, types: tuple[type, ...], what: str) -> Value:
    if isinstance(value, (bytearray, memoryview)) and bytes in types:
        return bytes(value)
    if not isinstance(value, types):
        raise error(fmt, path, f"{what} value expected, got {type(value).__name__}")
    return value  # type: ignore[return-value]


def check_value(fmt: ContentFormat, path: Path, rtype: ResourceType | None, value: object) -> Value:
    """Check ``value`` fits ``rtype`` (None: a resource the registry does not know).

    Returns the value, normalised (an int given for a Float becomes a float, a bytearray
    becomes bytes). Raises CodecError naming format and path otherwise.
    """
    if rtype is None:
        rtype = infer_type(fmt, path, value)
        if rtype in (ResourceType.INTEGER, ResourceType.UNSIGNED_INTEGER):
            return _check_int(fmt, path, value, (INT64[0], UINT64[1]), "Integer")
    checker = _CHECKS.get(rtype)
    if checker is None:
        raise error(fmt, path, f"resource type {rtype.value!r} carries no value")
    return checker(fmt, path, value)


def _check_string(fmt: ContentFormat, path: Path, value: object, what: str) -> str:
    text_value = _check_type(fmt, path, value, (str,), what)
    assert isinstance(text_value, str)
    if "\0" in text_value:
        raise error(fmt, path, f"{what} contains a NUL character at {text_value.index(chr(0))}: "
                               "C clients end the string there")
    return text_value


_CHECKS = {
    ResourceType.STRING: lambda f, p, v: _check_string(f, p, v, "String"),
    ResourceType.CORELNK: lambda f, p, v: _check_string(f, p, v, "Corelnk"),
    ResourceType.OPAQUE: lambda f, p, v: _check_type(f, p, v, (bytes,), "Opaque"),
    ResourceType.BOOLEAN: lambda f, p, v: _check_type(f, p, v, (bool,), "Boolean"),
    ResourceType.INTEGER: lambda f, p, v: _check_int(f, p, v, INT64, "Integer"),
    ResourceType.TIME: lambda f, p, v: _check_int(f, p, v, INT64, "Time"),
    ResourceType.UNSIGNED_INTEGER: lambda f, p, v: _check_int(f, p, v, UINT64, "Unsigned Integer"),
    ResourceType.FLOAT: _check_float,
    ResourceType.OBJLNK: _check_objlnk,
}

# Python value type -> the LwM2M type it is encoded as when the registry does not know the
# resource. Order matters: bool is a subclass of int.
_INFERRED: tuple[tuple[type, ResourceType], ...] = (
    (bool, ResourceType.BOOLEAN),
    (int, ResourceType.INTEGER),
    (float, ResourceType.FLOAT),
    (str, ResourceType.STRING),
    (bytes, ResourceType.OPAQUE),
    (bytearray, ResourceType.OPAQUE),
    (ObjLink, ResourceType.OBJLNK),
)


def infer_type(fmt: ContentFormat, path: Path, value: object) -> ResourceType:
    """The LwM2M type a value of an unknown resource is carried as."""
    for pytype, rtype in _INFERRED:
        if isinstance(value, pytype):
            if rtype is ResourceType.INTEGER and isinstance(value, int) and value > INT64[1]:
                return ResourceType.UNSIGNED_INTEGER
            return rtype
    raise error(fmt, path, f"{type(value).__name__} is not an LwM2M value type")


def check_shape(fmt: ContentFormat, path: Path, model: ResourceModel | None) -> None:
    """A content key must be a resource path (single) or resource-instance path (multiple)."""
    if path.depth not in (3, 4):
        raise error(fmt, path, "a value needs a resource or resource-instance path")
    if model is None:
        return
    if model.multiple and path.depth == 3:
        raise error(fmt, path, f"resource {model.name!r} is multiple-instance: its values need resource-instance paths")
    if not model.multiple and path.depth == 4:
        raise error(fmt, path, f"resource {model.name!r} is single-instance: it has no resource instances")


def check_under(fmt: ContentFormat, request: Path, path: Path) -> None:
    if not path.startswith(request):
        raise error(fmt, path, f"path {path} is outside the request path {request}")


@dataclass(frozen=True, slots=True)
class Item:
    """One value to encode: its path, the type it is encoded as, the checked value."""

    path: Path
    type: ResourceType
    value: Value
    model: ResourceModel | None


def content_items(fmt: ContentFormat, request: Path, content: Mapping[Path, Value],
                  registry: ObjectRegistry) -> list[Item]:
    """Validate ``content`` for encoding under ``request``; items in path order.

    Every key must lie under the request path, be a resource path for a single resource or
    a resource-instance path for a multiple one, and its value must fit the resource's type
    (a resource unknown to the registry is encoded as the type of its Python value).
    """
    items: list[Item] = []
    for path, value in content.items():
        if not isinstance(path, Path):
            raise error(fmt, None, f"content key {path!r} is not a Path")
        check_under(fmt, request, path)
        model = resource_model(registry, path)
        check_shape(fmt, path, model)
        if model is not None:
            rtype = model.type
            checked = check_value(fmt, path, rtype, value)
        else:
            checked = check_value(fmt, path, None, value)
            rtype = infer_type(fmt, path, checked)
        items.append(Item(path, rtype, checked, model))
    items.sort(key=lambda it: it.path.ids)
    return items


class Collector:
    """Decoded values for one request path, checked as they arrive.

    ``add`` refuses a path outside the request path, a path that is not a resource or
    resource-instance path, a single/multiple mismatch with the registry and a path seen
    twice. With ``time`` given (SenML/JSON records), a repeated path keeps the most recent
    value instead; equal times are still an error.
    """

    def __init__(self, fmt: ContentFormat, request: Path, registry: ObjectRegistry) -> None:
        self.fmt = fmt
        self.request = request
        self.registry = registry
        self.values: dict[Path, Value] = {}
        self._times: dict[Path, float] = {}

    def model(self, path: Path) -> ResourceModel | None:
        return resource_model(self.registry, path)

    def check_path(self, path: Path) -> ResourceModel | None:
        check_under(self.fmt, self.request, path)
        model = self.model(path)
        check_shape(self.fmt, path, model)
        return model

    def add(self, path: Path, value: object, time: float | None = None) -> None:
        model = self.check_path(path)
        if isinstance(value, RawString) and (model is None or model.type in LENIENT_TYPES):
            checked: Value = value  # a string that is not clean text: kept as bytes, flagged
        else:
            checked = check_value(self.fmt, path, model.type if model else None, value)
        if path in self.values:
            previous = self._times.get(path)
            if time is None or previous is None or time == previous:
                raise error(self.fmt, path, "the payload holds this path twice")
            if time < previous:
                return
        self.values[path] = checked
        if time is not None:
            self._times[path] = time



def single_item(fmt: ContentFormat, request: Path, content: Mapping[Path, Value], registry: ObjectRegistry) -> Item:
    """The one value a single-value format (text, opaque) carries for ``request``."""
    items = content_items(fmt, request, content, registry)
    if len(items) != 1 or items[0].path != request:
        raise error(fmt, request, f"exactly one value for {request} expected, got {len(items)} entries")
    return items[0]

def path_from_ids(fmt: ContentFormat, ids: Iterable[int], where: str) -> Path:
    ids = tuple(ids)
    if len(ids) > 4:
        raise error(fmt, where, f"path {'/'.join(map(str, ids))} has more than 4 levels")
    for x in ids:
        if not is_int(x) or not 0 <= x <= MAX_ID:
            raise error(fmt, where, f"path id {x!r} outside 0..{MAX_ID}")
    return Path(*ids)


def parse_path(fmt: ContentFormat, text: str) -> Path:
    """``/3/0/1`` -> Path (``Path.parse``), with a CodecError naming the text instead."""
    try:
        return Path.parse(text)
    except BadRequest as e:
        raise error(fmt, repr(text), e.message) from None


def parse_objlnk(fmt: ContentFormat, path: Path, text: object) -> ObjLink:
    """``"3:0"`` -> ObjLink(3, 0) (``ObjLink.parse``, ids checked); CodecError naming the path."""
    if not isinstance(text, str):
        raise error(fmt, path, f"Objlnk text expected, got {type(text).__name__}")
    try:
        link = ObjLink.parse(text)
    except BadRequest as e:
        raise error(fmt, path, e.message) from None
    return _check_objlnk(fmt, path, link)


def b64encode(data: bytes, *, url: bool = False) -> str:
    """Standard padded base64, or (``url``) RFC 4648 base64url without padding (RFC 8428)."""
    if url:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
    return base64.b64encode(data).decode("ascii")


_B64 = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")


def b64decode(fmt: ContentFormat, path: Path, text: object) -> bytes:
    """Decode base64 or base64url, padded or not; CodecError on anything else."""
    if not isinstance(text, str) or not _B64.fullmatch(text):
        raise error(fmt, path, f"invalid base64 {text!r:.40}")
    body = text.rstrip("=")
    if len(body) % 4 == 1 or (len(text) != len(body) and len(text) % 4 != 0):
        raise error(fmt, path, f"invalid base64 length in {text!r:.40}")
    body = body.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except binascii.Error as e:
        raise error(fmt, path, f"invalid base64: {e}") from None


def integral(fmt: ContentFormat, path: Path, value: object, what: str) -> int:
    """An int, or a float/Decimal with an integral value (``1.638435E9``), as int."""
    if is_int(value):
        return value  # type: ignore[return-value]
    if isinstance(value, float) or _is_fraction(value):
        as_float = float(value)  # type: ignore[arg-type]
        if math.isfinite(as_float) and as_float.is_integer():
            return int(cast(SupportsInt, value))  # exact for a large Decimal, unlike int(as_float)
    raise error(fmt, path, f"{what} value expected, got {value!r:.40}")


def number(fmt: ContentFormat, path: Path, value: object, what: str = "numeric") -> float | int:
    """An int, float or CBOR decimal fraction (Decimal) as int or float; CodecError otherwise."""
    if is_int(value) or isinstance(value, float):
        return value  # type: ignore[return-value]
    if _is_fraction(value):
        try:
            return float(value)  # type: ignore[arg-type]
        except (OverflowError, ValueError):
            raise error(fmt, path, f"{what} value {value!r:.40} out of range") from None
    raise error(fmt, path, f"{what} value expected, got {type(value).__name__}")


def _is_fraction(value: object) -> bool:
    """Decimal (CBOR tag 4) or Fraction (tag 30), as cbor2 decodes them."""
    return isinstance(value, (Decimal, Fraction))
