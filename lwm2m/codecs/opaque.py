"""application/octet-stream (content format 42; legacy 1544): one Opaque value, raw bytes.

Only a single-instance resource or one resource instance can be carried, and only when it
is of type Opaque; anything else raises NotAcceptable naming format and path. A resource
the registry does not know is accepted and its value is the payload as ``bytes``; on
encode its value must then be ``bytes``.

Nothing is base64-encoded here (that is text/plain's job for Opaque).
"""

from __future__ import annotations

from typing import Mapping

from lwm2m.codecs._common import error, not_acceptable, resource_model, single_item
from lwm2m.codecs.text import single_value_path
from lwm2m.model import ObjectRegistry, ResourceType
from lwm2m.numbers.content_formats import ContentFormat
from lwm2m.path import Path, Value

FMT = ContentFormat.OPAQUE


def _why_not(path: Path, registry: ObjectRegistry) -> str | None:
    why = single_value_path(FMT, path, registry)
    if why is not None:
        return why
    model = resource_model(registry, path)
    if model is not None and model.type is not ResourceType.OPAQUE:
        return f"resource {model.name!r} is of type {model.type.value}, not Opaque"
    return None


class OpaqueCodec:
    content_format = FMT

    def supports(self, path: Path, registry: ObjectRegistry) -> bool:
        return _why_not(path, registry) is None

    def _require(self, path: Path, registry: ObjectRegistry) -> None:
        why = _why_not(path, registry)
        if why is not None:
            raise not_acceptable(FMT, path, why)

    def encode(self, path: Path, content: Mapping[Path, Value], registry: ObjectRegistry) -> bytes:
        self._require(path, registry)
        value = single_item(FMT, path, content, registry).value
        if not isinstance(value, bytes):
            raise error(FMT, path, f"Opaque value expected, got {type(value).__name__}")
        return value

    def decode(self, path: Path, payload: bytes, registry: ObjectRegistry) -> dict[Path, Value]:
        self._require(path, registry)
        return {path: bytes(payload)}


CODEC = OpaqueCodec()

__all__ = ["CODEC", "OpaqueCodec"]
