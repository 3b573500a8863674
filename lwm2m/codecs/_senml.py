"""SenML-style records, shared by SenML JSON, SenML CBOR and the LwM2M 1.0 JSON format.

A record here is a dict keyed by the SenML JSON labels (``bn``, ``bt``, ``n``, ``t``, ``v``,
``vs``, ``vb``, ``vd``, ``vlo``) with ``vd`` already as ``bytes``; each wire format maps its
own labels and base64 to and from this form.

* ``to_records`` (encode): ``bn`` is the request path - alone when the content is the one
  value at the request path, else with a trailing ``/`` and each record's ``n`` relative to
  it (``"6/0"``). Type -> field: String/Corelnk ``vs``, Integer/Unsigned/Time/Float ``v``,
  Boolean ``vb``, Opaque ``vd``, Objlnk ``vlo`` (``"3:0"``).
* ``from_records`` (decode): name = current ``bn`` + ``n`` (plain string concatenation, as
  RFC 8428 says), parsed as an absolute LwM2M path that must lie under the request path.
  The value field must match the registry's type for the resource (``v`` may carry an
  integral float such as ``1.638435E9`` for Integer/Time); for a resource the registry does
  not know, the field decides (``v`` int -> int, ``v`` float -> float, ``vs`` -> str,
  ``vb`` -> bool, ``vd`` -> bytes, ``vlo`` -> ObjLink).

Times (``bt`` + ``t``) are not returned: content is flat. When a path occurs more than once
the record with the latest time wins; the same path twice at the same time is an error.
Labels ending in ``_`` (RFC 8428 must-understand) are refused; other unknown labels and
``u``/``bu``/``bver``/``s`` are ignored. Records without a value (Read-Composite path lists)
are refused.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from lwm2m.codecs._common import (
    Collector,
    Converter,
    content_items,
    error,
    expect,
    integral,
    number,
    parse_objlnk,
    parse_path,
    text,
)
from lwm2m.model import ObjectRegistry, ResourceType
from lwm2m.numbers.content_formats import ContentFormat
from lwm2m.path import Path, Value

Record = dict[str, Any]

VALUE_FIELDS = ("v", "vs", "vb", "vd", "vlo")

# ResourceType -> the record field that carries it.
FIELD_FOR_TYPE: dict[ResourceType, str] = {
    ResourceType.STRING: "vs",
    ResourceType.CORELNK: "vs",
    ResourceType.INTEGER: "v",
    ResourceType.UNSIGNED_INTEGER: "v",
    ResourceType.TIME: "v",
    ResourceType.FLOAT: "v",
    ResourceType.BOOLEAN: "vb",
    ResourceType.OPAQUE: "vd",
    ResourceType.OBJLNK: "vlo",
}


def to_records(fmt: ContentFormat, request: Path, content: Mapping[Path, Value],
               registry: ObjectRegistry) -> list[Record]:
    items = content_items(fmt, request, content, registry)
    if len(items) == 1 and items[0].path == request:
        it = items[0]
        return [{"bn": str(request), FIELD_FOR_TYPE[it.type]: _out(it.value)}]
    base = str(request).rstrip("/") + "/"
    records: list[Record] = []
    for it in items:
        record: Record = {"bn": base} if not records else {}
        record["n"] = "/".join(str(x) for x in it.path.ids[request.depth :])
        record[FIELD_FOR_TYPE[it.type]] = _out(it.value)
        records.append(record)
    return records


def _out(value: Value) -> Any:
    return value if isinstance(value, (str, int, float, bytes)) else str(value)


# ResourceType -> converter from the raw value of its field (FIELD_FOR_TYPE).
_FROM_FIELD: dict[ResourceType, Converter] = {
    ResourceType.STRING: text("String"),
    ResourceType.CORELNK: text("Corelnk"),
    ResourceType.INTEGER: lambda f, p, raw: integral(f, p, raw, "Integer"),
    ResourceType.UNSIGNED_INTEGER: lambda f, p, raw: integral(f, p, raw, "Unsigned Integer"),
    ResourceType.TIME: lambda f, p, raw: integral(f, p, raw, "Time"),
    ResourceType.FLOAT: lambda f, p, raw: number(f, p, raw, "Float"),  # made float by check_value
    ResourceType.BOOLEAN: expect(bool, "Boolean"),
    ResourceType.OPAQUE: expect(bytes, "Opaque"),
    ResourceType.OBJLNK: lambda f, p, raw: parse_objlnk(f, p, raw),
}

# Field -> how an unknown resource's value is read from it.
_UNKNOWN: dict[str, Converter] = {
    "v": lambda f, p, raw: number(f, p, raw),
    "vs": text("String"),
    "vb": expect(bool, "Boolean"),
    "vd": expect(bytes, "Opaque"),
    "vlo": lambda f, p, raw: parse_objlnk(f, p, raw),
}


def from_records(
    fmt: ContentFormat,
    request: Path,
    records: Iterable[Any],
    registry: ObjectRegistry,
    *,
    opaque_as_base64_string: Callable[[Path, Any], bytes] | None = None,
) -> dict[Path, Value]:
    """Resolve records to content under ``request``; CodecError naming the path on any fault.

    ``opaque_as_base64_string`` (LwM2M JSON) decodes an Opaque resource's ``vs`` field.
    """
    collector = Collector(fmt, request, registry)
    base_name, base_time = "", 0.0
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise error(fmt, request, f"record {index} is not a map")
        for label in record:
            if isinstance(label, str) and label.endswith("_"):
                raise error(fmt, request, f"record {index} has must-understand label {label!r}")
        if "bn" in record:
            base_name = _text(fmt, request, record["bn"], "bn")
        if "bt" in record:
            base_time = _seconds(fmt, request, record["bt"], "bt")
        name = base_name + _text(fmt, request, record.get("n", ""), "n")
        path = parse_path(fmt, name)
        time = base_time + _seconds(fmt, path, record.get("t", 0), "t")
        present = [f for f in VALUE_FIELDS if f in record]
        if len(present) != 1:
            raise error(fmt, path, f"record {index} must carry exactly one value field, has {present or 'none'}")
        (field,) = present
        model = collector.check_path(path)
        raw = record[field]
        if model is None:
            value = _UNKNOWN[field](fmt, path, raw)
        elif model.type is ResourceType.OPAQUE and field == "vs" and opaque_as_base64_string:
            value = opaque_as_base64_string(path, raw)
        elif model.type not in FIELD_FOR_TYPE:
            raise error(fmt, path, f"resource {model.name!r} is of type {model.type.value} and carries no value")
        elif FIELD_FOR_TYPE[model.type] != field:
            raise error(fmt, path, f"resource {model.name!r} is {model.type.value}, "
                                   f"carried in {FIELD_FOR_TYPE[model.type]!r}, not {field!r}")
        else:
            value = _FROM_FIELD[model.type](fmt, path, raw)
        collector.add(path, value, time)
    return collector.values


def _text(fmt: ContentFormat, where: Path, raw: Any, label: str) -> str:
    if not isinstance(raw, str):
        raise error(fmt, where, f"{label!r} must be a string, got {type(raw).__name__}")
    return raw


def _seconds(fmt: ContentFormat, where: Path, raw: Any, label: str) -> float:
    try:
        return float(number(fmt, where, raw, label))
    except OverflowError:
        raise error(fmt, where, f"{label!r} value out of range") from None
