"""text/plain (content format 0; legacy 1541): one value as text, TS Core 1.1 Appendix C.

Only a single-instance resource (``/3/0/9``) or one resource instance (``/3/0/7/1``) can be
carried; any other path raises NotAcceptable naming format and path. Encodings:

* String, Corelnk: the text itself (UTF-8);
* Integer, Unsigned Integer, Time: decimal (Time is seconds since the epoch);
* Float: decimal, optionally with exponent (``56.4``, ``1e-05``); Python's shortest
  round-trip representation on output, so floats survive encode/decode exactly; NaN and
  infinities have no text form and are refused;
* Boolean: ``0`` / ``1``;
* Objlnk: ``OBJECT:INSTANCE`` (``3:0``);
* Opaque: base64 (standard alphabet, padded on output; base64url accepted on input).

A resource the registry does not know is carried as raw bytes both ways: decode returns the
payload as ``bytes``; encode writes a ``bytes`` value as is and any other value in the text
form of its Python type. Leading/trailing whitespace is not stripped from numbers.
"""

from __future__ import annotations

import math
import re
from typing import Callable, Mapping

from lwm2m.codecs._common import (
    b64decode,
    b64encode,
    check_value,
    error,
    not_acceptable,
    parse_objlnk,
    resource_model,
    single_item,
)
from lwm2m.model import ObjectRegistry, ResourceType
from lwm2m.numbers.content_formats import ContentFormat
from lwm2m.path import Path, RawString, Value, string_value

FMT = ContentFormat.TEXT

_INTEGER = re.compile(r"[+-]?\d+", re.ASCII)
_UNSIGNED = re.compile(r"\+?\d+", re.ASCII)
_FLOAT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)

Encoder = Callable[[Path, Value], str]
Decoder = Callable[[Path, str], Value]


def _enc_float(path: Path, value: Value) -> str:
    assert isinstance(value, float)
    if not math.isfinite(value):
        raise error(FMT, path, f"Float {value} has no text representation")
    return repr(value)


def _dec_pattern(pattern: re.Pattern[str], convert: Callable[[str], Value], what: str) -> Decoder:
    def decode(path: Path, text: str) -> Value:
        if not pattern.fullmatch(text):
            raise error(FMT, path, f"invalid {what} {text!r:.40}")
        try:
            return convert(text)
        except ValueError:  # more digits than int() accepts (sys.get_int_max_str_digits)
            raise error(FMT, path, f"{what} {text[:20]!r}... is out of range") from None

    return decode


def _dec_bool(path: Path, text: str) -> Value:
    if text not in ("0", "1"):
        raise error(FMT, path, f"invalid Boolean {text!r:.40}: expected 0 or 1")
    return text == "1"


def _dec_float(path: Path, text: str) -> Value:
    if not _FLOAT.fullmatch(text):
        raise error(FMT, path, f"invalid Float {text!r:.40}")
    value = float(text)
    if not math.isfinite(value):
        raise error(FMT, path, f"Float {text!r:.40} is out of range")
    return value


# ResourceType -> (encode value to text, decode text to value)
_TABLE: dict[ResourceType, tuple[Encoder, Decoder]] = {
    ResourceType.STRING: (lambda p, v: str(v), lambda p, t: t),
    ResourceType.CORELNK: (lambda p, v: str(v), lambda p, t: t),
    ResourceType.INTEGER: (lambda p, v: str(v), _dec_pattern(_INTEGER, int, "Integer")),
    ResourceType.TIME: (lambda p, v: str(v), _dec_pattern(_INTEGER, int, "Time")),
    ResourceType.UNSIGNED_INTEGER: (lambda p, v: str(v), _dec_pattern(_UNSIGNED, int, "Unsigned Integer")),
    ResourceType.FLOAT: (_enc_float, _dec_float),
    ResourceType.BOOLEAN: (lambda p, v: "1" if v else "0", _dec_bool),
    ResourceType.OBJLNK: (lambda p, v: str(v), lambda p, t: parse_objlnk(FMT, p, t)),
    ResourceType.OPAQUE: (lambda p, v: b64encode(v), lambda p, t: b64decode(FMT, p, t)),  # type: ignore[arg-type]
}


def single_value_path(fmt: ContentFormat, path: Path, registry: ObjectRegistry) -> str | None:
    """Why ``path`` cannot be carried by a one-value format, or None if it can."""
    if path.depth not in (3, 4):
        return "only a single resource or a resource instance fits in one value"
    model = resource_model(registry, path)
    if model is not None and model.multiple and path.depth == 3:
        return f"resource {model.name!r} is multiple-instance; address one resource instance"
    if model is not None and not model.multiple and path.depth == 4:
        return f"resource {model.name!r} is single-instance and has no resource instances"
    if model is not None and model.type is ResourceType.NONE:
        return f"resource {model.name!r} is executable and has no value"
    return None


class TextCodec:
    content_format = FMT

    def supports(self, path: Path, registry: ObjectRegistry) -> bool:
        return single_value_path(FMT, path, registry) is None

    def _require(self, path: Path, registry: ObjectRegistry) -> None:
        why = single_value_path(FMT, path, registry)
        if why is not None:
            raise not_acceptable(FMT, path, why)

    def encode(self, path: Path, content: Mapping[Path, Value], registry: ObjectRegistry) -> bytes:
        self._require(path, registry)
        item = single_item(FMT, path, content, registry)
        if item.model is None and isinstance(item.value, bytes):
            return item.value
        encode_value, _ = _TABLE[item.type]
        try:
            return encode_value(path, item.value).encode("utf-8")
        except UnicodeEncodeError as e:
            raise error(FMT, path, f"value is not encodable as UTF-8: {e.reason}") from None

    def decode(self, path: Path, payload: bytes, registry: ObjectRegistry) -> dict[Path, Value]:
        self._require(path, registry)
        model = resource_model(registry, path)
        if model is None:
            return {path: bytes(payload)}
        if model.type in (ResourceType.STRING, ResourceType.CORELNK):
            value = string_value(bytes(payload))  # not clean text: a RawString, flagged, not an error
            if isinstance(value, RawString):
                return {path: value}
        try:
            text = bytes(payload).decode("utf-8")
        except UnicodeDecodeError as e:
            raise error(FMT, path, f"payload is not UTF-8 text: {e.reason}") from None
        _, decode_value = _TABLE[model.type]
        return {path: check_value(FMT, path, model.type, decode_value(path, text))}


CODEC = TextCodec()

__all__ = ["CODEC", "TextCodec", "single_value_path"]
