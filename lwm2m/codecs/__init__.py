"""LwM2M content-format codecs: ``Content`` (flat ``Path -> Value``) to bytes and back.

One module per format, each exposing one ``CODEC`` object:

=========  ===============================  ============================================
number     media type                       module
=========  ===============================  ============================================
0 (1541)   text/plain                       ``text`` (single resource / instance only)
42 (1544)  application/octet-stream         ``opaque`` (Opaque single resource / instance)
110        application/senml+json           ``senml_json``
112        application/senml+cbor           ``senml_cbor``
11542      application/vnd.oma.lwm2m+tlv    ``tlv`` (legacy 1542)
11543      application/vnd.oma.lwm2m+json   ``lwm2m_json`` (LwM2M 1.0 JSON, legacy 1543)
11544      application/vnd.oma.lwm2m+cbor   ``lwm2m_cbor``
=========  ===============================  ============================================

``encode``/``decode`` take the request path: it decides nesting (TLV, LwM2M CBOR) and base
names (SenML, LwM2M JSON), and decoded paths must lie under it. Content keys are resource
paths for single resources and resource-instance paths for multiple ones. The registry
gives each resource's type and whether it is multiple; what a codec does with a resource
the registry does not know is in its module docstring.

Errors: an unknown content-format number raises UnsupportedContentFormat; a path the
format cannot carry (text/opaque beyond one value, TLV at the root) raises NotAcceptable;
anything wrong with a payload or with content to encode raises CodecError naming format
and path. Decoders raise nothing else, whatever the input.

Link format (40) is not here: see ``lwm2m.link_format``. Timestamped SenML/JSON
data is flattened (the latest value per path wins); Read-Composite path lists are not
decoded here.
"""

from __future__ import annotations

from typing import Mapping, Protocol

from lwm2m.codecs import lwm2m_cbor, lwm2m_json, opaque, senml_cbor, senml_json, text, tlv
from lwm2m.codecs._common import format_name
from lwm2m.errors import UnsupportedContentFormat
from lwm2m.model import ObjectRegistry
from lwm2m.numbers.content_formats import ContentFormat, canonical
from lwm2m.path import Path, Value


class Codec(Protocol):
    """One content format. ``encode``/``decode`` raise CodecError or NotAcceptable only."""

    content_format: ContentFormat

    def supports(self, path: Path, registry: ObjectRegistry) -> bool:
        """Whether this format can carry the data at ``path`` at all."""
        ...

    def encode(self, path: Path, content: Mapping[Path, Value], registry: ObjectRegistry) -> bytes: ...

    def decode(self, path: Path, payload: bytes, registry: ObjectRegistry) -> dict[Path, Value]: ...


CODECS: dict[ContentFormat, Codec] = {
    codec.content_format: codec
    for codec in (
        text.CODEC,
        opaque.CODEC,
        senml_json.CODEC,
        senml_cbor.CODEC,
        tlv.CODEC,
        lwm2m_json.CODEC,
        lwm2m_cbor.CODEC,
    )
}


def codec_for(fmt: int) -> Codec:
    """The codec for a content-format number (legacy numbers map to their successor).

    Raises UnsupportedContentFormat naming the number for anything without a codec.
    """
    try:
        cf = canonical(fmt)
    except ValueError:
        raise UnsupportedContentFormat(f"content format {fmt} is not an LwM2M data format") from None
    codec = CODECS.get(cf)
    if codec is None:
        raise UnsupportedContentFormat(f"content format {format_name(cf)} is not an LwM2M data format")
    return codec


def supports(fmt: int, path: Path, registry: ObjectRegistry | None = None) -> bool:
    """Whether ``fmt`` can carry the data at ``path`` (False for unknown formats).

    With a registry, text/plain and opaque also check the resource is single-valued (and,
    for opaque, of type Opaque).
    """
    try:
        codec = codec_for(fmt)
    except UnsupportedContentFormat:
        return False
    return codec.supports(path, registry if registry is not None else ObjectRegistry())


def encode(fmt: int, path: Path, content: Mapping[Path, Value], registry: ObjectRegistry) -> bytes:
    """Encode ``content`` (under request path ``path``) in content format ``fmt``."""
    return codec_for(fmt).encode(path, content, registry)


def decode(fmt: int, path: Path, payload: bytes, registry: ObjectRegistry) -> dict[Path, Value]:
    """Decode a ``fmt`` payload for request path ``path`` into flat content."""
    return codec_for(fmt).decode(path, payload, registry)


__all__ = ["CODECS", "Codec", "codec_for", "supports", "encode", "decode"]
