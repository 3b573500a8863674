"""Tables only: content-format numbers, LwM2M versions and the like (aiocoap's ``numbers``)."""

from lwm2m.numbers.content_formats import ContentFormat
from lwm2m.numbers.versions import SUPPORTED_VERSIONS, DEFAULT_LIFETIME

__all__ = ["ContentFormat", "SUPPORTED_VERSIONS", "DEFAULT_LIFETIME"]
