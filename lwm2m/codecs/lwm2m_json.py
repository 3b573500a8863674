"""application/vnd.oma.lwm2m+json (content format 11543; legacy 1543): LwM2M 1.0 JSON.

TS Core 1.0 section 6.4.4: one JSON object with a base name ``bn``, an optional base
time ``bt`` and an array ``e`` of entries, each with a name ``n`` relative to ``bn`` and one
value field: ``v`` (Integer, Unsigned Integer, Float, Time), ``sv`` (String, Corelnk, and
Opaque as standard padded base64), ``bv`` (Boolean) or ``ov`` (Objlnk ``"3:0"``)::

    {"bn":"/3/0/","e":[{"n":"0","sv":"Open Mobile Alliance"},{"n":"6/0","v":1}]}

Naming follows the SenML rules in ``_senml`` (``bn`` with a trailing ``/`` and relative
names, or ``bn`` alone for the single value at the request path). On input ``bn`` is
optional, names may be absolute, an Opaque resource's ``sv`` may be base64 or base64url,
and an empty payload decodes to no content; a document without ``e`` is refused. For a
resource the registry does not know ``sv`` decodes to ``str`` (it cannot be told from
base64). Entry times (``t``) only pick the latest of repeated entries.
"""

from __future__ import annotations

from typing import Any, Mapping

from lwm2m.codecs import _senml
from lwm2m.codecs._common import b64decode, b64encode, error
from lwm2m.codecs.senml_json import dumps, loads
from lwm2m.model import ObjectRegistry
from lwm2m.numbers.content_formats import ContentFormat
from lwm2m.path import Path, Value

FMT = ContentFormat.LWM2M_JSON

# LwM2M JSON entry field -> SenML record field (sv also carries Opaque, see decode).
TO_SENML = {"n": "n", "t": "t", "v": "v", "sv": "vs", "bv": "vb", "ov": "vlo"}
FROM_SENML = {senml: own for own, senml in TO_SENML.items()}


class Lwm2mJsonCodec:
    content_format = FMT

    def supports(self, path: Path, registry: ObjectRegistry) -> bool:
        return True

    def encode(self, path: Path, content: Mapping[Path, Value], registry: ObjectRegistry) -> bytes:
        records = _senml.to_records(FMT, path, content, registry)
        base_name = records[0]["bn"] if records else str(path).rstrip("/") + "/"
        entries = []
        for record in records:
            entry: dict[str, Any] = {}
            for name, value in record.items():
                if name == "vd":
                    entry["sv"] = b64encode(value)
                elif name != "bn":
                    entry[FROM_SENML[name]] = value
            entries.append(entry)
        return dumps(FMT, path, {"bn": base_name, "e": entries})

    def decode(self, path: Path, payload: bytes, registry: ObjectRegistry) -> dict[Path, Value]:
        if not bytes(payload).strip():
            return {}
        document = loads(FMT, path, payload)
        if not isinstance(document, dict) or not isinstance(document.get("e"), list):
            raise error(FMT, path, 'an LwM2M JSON document must be an object with an "e" array')
        records: list[Any] = []
        for index, entry in enumerate(document["e"]):
            if not isinstance(entry, dict):
                raise error(FMT, path, f"entry {index} is not an object")
            records.append({TO_SENML[k]: v for k, v in entry.items() if k in TO_SENML})
        if records:
            if "bn" in document:
                records[0]["bn"] = document["bn"]
            if "bt" in document:
                records[0]["bt"] = document["bt"]
        return _senml.from_records(
            FMT, path, records, registry, opaque_as_base64_string=lambda p, raw: b64decode(FMT, p, raw)
        )


CODEC = Lwm2mJsonCodec()

__all__ = ["CODEC", "Lwm2mJsonCodec"]
