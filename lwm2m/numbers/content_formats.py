"""CoAP content-format numbers used by LwM2M (IANA CoAP Content-Formats registry).

The 15xx values are the pre-registration numbers that LwM2M 1.0 TS and some older clients
(early Wakaama, some Leshan 1.0 builds) still send; they alias the registered ones.
"""

from enum import IntEnum


class ContentFormat(IntEnum):
    TEXT = 0
    LINK = 40
    OPAQUE = 42
    SENML_JSON = 110
    SENML_CBOR = 112
    TLV = 11542
    LWM2M_JSON = 11543
    LWM2M_CBOR = 11544
    # legacy (LwM2M 1.0 drafts)
    LEGACY_TEXT = 1541
    LEGACY_TLV = 1542
    LEGACY_JSON = 1543
    LEGACY_OPAQUE = 1544


# Legacy number -> the registered format whose codec handles it.
CANONICAL: dict[ContentFormat, ContentFormat] = {
    ContentFormat.LEGACY_TEXT: ContentFormat.TEXT,
    ContentFormat.LEGACY_TLV: ContentFormat.TLV,
    ContentFormat.LEGACY_JSON: ContentFormat.LWM2M_JSON,
    ContentFormat.LEGACY_OPAQUE: ContentFormat.OPAQUE,
}


def canonical(fmt: int) -> ContentFormat:
    """The registered content format for ``fmt`` (a legacy number maps to its successor).

    Raises ValueError for a number that is not an LwM2M content format.
    """
    cf = ContentFormat(fmt)
    return CANONICAL.get(cf, cf)
