"""application/vnd.oma.lwm2m+cbor (content format 11544), TS Core 1.2 section 7.4.6.

Nested CBOR maps keyed by path ids, from the root: ``{3: {0: {0: "OMA", 7: {0: 3800}}}}``.
A key may be an array of ids standing for several levels at once (``{[3, 0]: {...}}``,
``{[3, 0, 9]: 100}``); a path has at most 4 ids in total.

Encode writes the simplest form nesting from the request path: the request path's ids as
one key (a plain integer for an object, an array for deeper paths, nothing for the root),
then one map level per id below it; definite lengths. Values: String/Corelnk text string,
Integer/Unsigned/Time integer, Float double (exact), Boolean, Opaque byte string, Objlnk
text string ``"3:0"`` (TS Core 1.2 Table 7.4.5-1). Empty content is an empty map.

Decode accepts integer and array keys at every level, definite and indefinite lengths,
any float width and tag 4 decimal fractions for Float, and for Time an integer, tag 1
(epoch seconds, integer or float) or tag 0 (RFC 3339 text); an empty payload decodes to no
content. Every value's path must lie under the request path (CodecError naming it).
``null`` values (Write-Composite deletes) are refused: content has no "absent" value. For
a resource the registry does not know, the CBOR type decides (integer -> int, float ->
float, text -> str, bytes -> bytes, bool -> bool).
"""

from __future__ import annotations

import datetime
import math
from typing import Any, Mapping

from lwm2m.codecs._common import (
    Collector,
    Converter,
    content_items,
    error,
    expect,
    integral,
    is_int,
    number,
    parse_objlnk,
    path_from_ids,
    text,
)
from lwm2m.codecs.senml_cbor import dumps, loads
from lwm2m.model import ObjectRegistry, ResourceModel, ResourceType
from lwm2m.numbers.content_formats import ContentFormat
from lwm2m.path import ObjLink, Path, Value, string_from_decoded

FMT = ContentFormat.LWM2M_CBOR


def _time(fmt: ContentFormat, path: Path, raw: Any) -> Value:
    if isinstance(raw, datetime.datetime):  # tags 0 and 1, as cbor2 decodes them
        try:
            return math.floor(raw.timestamp())
        except (OverflowError, ValueError, OSError):
            raise error(fmt, path, f"Time {raw!r} out of range") from None
    return integral(fmt, path, raw, "Time")


# ResourceType -> converter from the decoded CBOR item.
VALUES: dict[ResourceType, Converter] = {
    ResourceType.STRING: text("String"),
    ResourceType.CORELNK: text("Corelnk"),
    ResourceType.INTEGER: expect(int, "Integer"),
    ResourceType.UNSIGNED_INTEGER: expect(int, "Unsigned Integer"),
    ResourceType.TIME: _time,
    ResourceType.FLOAT: lambda f, p, raw: number(f, p, raw, "Float"),  # made float by check_value
    ResourceType.BOOLEAN: expect(bool, "Boolean"),
    ResourceType.OPAQUE: expect(bytes, "Opaque"),
    ResourceType.OBJLNK: parse_objlnk,
}


def _unknown(fmt: ContentFormat, path: Path, raw: Any) -> Value:
    if isinstance(raw, str):
        return string_from_decoded(raw)
    if isinstance(raw, (bytes, bool)) or is_int(raw):
        return raw  # type: ignore[no-any-return]
    if isinstance(raw, datetime.datetime):
        return _time(fmt, path, raw)
    return number(fmt, path, raw, "LwM2M")


def _key_ids(fmt: ContentFormat, prefix: tuple[int, ...], key: Any) -> tuple[int, ...]:
    if is_int(key):
        ids: tuple[Any, ...] = (key,)
    elif isinstance(key, (tuple, list)) and key:
        ids = tuple(key)
    else:
        raise error(fmt, "/" + "/".join(map(str, prefix)), f"map key {key!r:.30} is not a path id or array of ids")
    return path_from_ids(fmt, (*prefix, *ids), "/" + "/".join(map(str, prefix))).ids


class Lwm2mCborCodec:
    content_format = FMT

    def supports(self, path: Path, registry: ObjectRegistry) -> bool:
        return True

    def encode(self, path: Path, content: Mapping[Path, Value], registry: ObjectRegistry) -> bytes:
        items = content_items(FMT, path, content, registry)
        if not items:
            return dumps(FMT, path, {})
        below: Any = {}
        for it in items:
            value = str(it.value) if isinstance(it.value, ObjLink) else it.value
            rel = it.path.ids[path.depth :]
            if not rel:
                below = value
                continue
            node = below
            for i in rel[:-1]:
                node = node.setdefault(i, {})
            node[rel[-1]] = value
        if path.depth == 0:
            document = below
        elif path.depth == 1:
            document = {path.ids[0]: below}
        else:
            document = {path.ids: below}
        return dumps(FMT, path, document)

    def decode(self, path: Path, payload: bytes, registry: ObjectRegistry) -> dict[Path, Value]:
        if not payload:
            return {}
        document = loads(FMT, path, payload)
        if not isinstance(document, Mapping):
            raise error(FMT, path, "an LwM2M CBOR document must be a map")
        collector = Collector(FMT, path, registry)
        self._walk(document, (), collector)
        return collector.values

    def _walk(self, node: Mapping[Any, Any], prefix: tuple[int, ...], collector: Collector) -> None:
        request = collector.request
        for key, item in node.items():
            ids = _key_ids(FMT, prefix, key)
            here = Path(*ids)
            if not (here.startswith(request) or request.startswith(here)):
                raise error(FMT, here, f"path {here} is outside the request path {request}")
            if isinstance(item, Mapping):
                if len(ids) == 4:
                    raise error(FMT, here, "a map below a resource instance: path longer than 4 levels")
                self._walk(item, ids, collector)
                continue
            if item is None:
                raise error(FMT, here, "null values are not supported")
            model: ResourceModel | None = collector.check_path(here)
            if model is None:
                collector.add(here, _unknown(FMT, here, item))
            elif model.type not in VALUES:
                raise error(FMT, here, f"resource {model.name!r} is of type {model.type.value} and carries no value")
            else:
                collector.add(here, VALUES[model.type](FMT, here, item))


CODEC = Lwm2mCborCodec()

__all__ = ["CODEC", "Lwm2mCborCodec"]
