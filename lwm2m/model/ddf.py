"""Parse OMA LwM2M object definitions (DDF XML, the ``LWM2M.xsd`` format of the OMA registry).

A DDF file is ``<LWM2M>`` holding one or more ``<Object ObjectType="MODefinition">``, each
with ``Name``, ``ObjectID``, ``ObjectURN``, ``LWM2MVersion``, ``ObjectVersion``,
``MultipleInstances``, ``Mandatory`` and ``<Resources>`` of ``<Item ID="n">`` elements
(``Name``, ``Operations``, ``MultipleInstances``, ``Mandatory``, ``Type``,
``RangeEnumeration``, ``Units``, ``Description``).

The parser accepts what the registry's files really contain (``Type`` spelled ``Unsigned
Integer``/``Objlnk``/``Corelnk``, empty or ``none`` for executables, empty ``Operations``
for bootstrap-only resources, no ``LWM2MVersion`` in 1.0-era files) and rejects anything
else with a ``DdfError`` naming the file, the object id, the resource id and the element.
Files with a DOCTYPE, entity declarations or external references are refused outright: the
XML is parsed by ``defusedxml`` (``forbid_dtd``), which sees the declarations after the parser
decoded the document, whatever its encoding (a byte search would miss a UTF-16 DOCTYPE).
"""

from __future__ import annotations

import difflib
import os
import re
import xml.etree.ElementTree as ET

import defusedxml
import defusedxml.ElementTree as SafeET

from lwm2m.errors import BadRequest
from lwm2m.model import ObjectModel, Operations, ResourceModel, ResourceType
from lwm2m.path import MAX_ID

__all__ = ["DdfError", "parse_ddf", "split_ddf", "load_ddf_file"]


class DdfError(BadRequest):
    """A DDF file that cannot be used; the message says where and what."""


# Spellings seen in the OMA registry, normalised to lower case without repeated spaces.
_TYPES: dict[str, ResourceType] = {
    "string": ResourceType.STRING,
    "integer": ResourceType.INTEGER,
    "unsigned integer": ResourceType.UNSIGNED_INTEGER,
    "unsignedinteger": ResourceType.UNSIGNED_INTEGER,
    "float": ResourceType.FLOAT,
    "boolean": ResourceType.BOOLEAN,
    "opaque": ResourceType.OPAQUE,
    "time": ResourceType.TIME,
    "objlnk": ResourceType.OBJLNK,
    "corelnk": ResourceType.CORELNK,
    "none": ResourceType.NONE,
    "": ResourceType.NONE,
}
_OPERATIONS = {"": Operations.NONE, "R": Operations.R, "W": Operations.W, "RW": Operations.RW, "E": Operations.E}
_VERSION = re.compile(r"\d+\.\d+(\.\d+)?")


class _Where:
    """Builds error messages that name the file, object and resource being parsed."""

    def __init__(self, source: str) -> None:
        self.source = source or "<DDF>"
        self.object_id: str | None = None
        self.resource_id: str | None = None

    def error(self, element: str, problem: str) -> DdfError:
        parts = [self.source]
        if self.object_id is not None:
            parts.append(f"object {self.object_id}")
        if self.resource_id is not None:
            parts.append(f"resource {self.resource_id}")
        parts.append(f"<{element}>")
        return DdfError(": ".join(parts) + ": " + problem)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(parent: ET.Element, name: str) -> ET.Element | None:
    for el in parent:
        if isinstance(el.tag, str) and _local(el.tag) == name:
            return el
    return None


def _text(parent: ET.Element, name: str, where: _Where, *, required: bool = False) -> str:
    el = _child(parent, name)
    if el is None:
        if required:
            raise where.error(name, "missing element")
        return ""
    return (el.text or "").strip()


def _int_id(text: str, element: str, where: _Where) -> int:
    if not re.fullmatch(r"[0-9]+", text):
        raise where.error(element, f"id {text!r} is not a non-negative integer")
    value = int(text) if len(text) <= 20 else MAX_ID + 1
    if value > MAX_ID:
        raise where.error(element, f"id {value} is out of range 0..{MAX_ID}")
    return value


def _choice(parent: ET.Element, name: str, where: _Where, yes: str, no: str) -> bool:
    text = _text(parent, name, where, required=True)
    if text.lower() == yes.lower():
        return True
    if text.lower() == no.lower():
        return False
    raise where.error(name, f"expected {yes!r} or {no!r}, got {text!r}")


def _resource_type(text: str, where: _Where) -> ResourceType:
    key = " ".join(text.lower().split())
    found = _TYPES.get(key)
    if found is None:
        names = sorted({t.value for t in ResourceType if t is not ResourceType.NONE})
        close = difflib.get_close_matches(text, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise where.error("Type", f"unknown type {text!r}{hint}; expected one of {', '.join(names)} "
                                  "or empty/'none' for an executable resource")
    return found


def _resource(item: ET.Element, where: _Where) -> ResourceModel:
    if "ID" not in item.attrib:
        where.resource_id = "?"
        raise where.error("Item", "missing ID attribute")
    where.resource_id = item.attrib["ID"].strip()
    rid = _int_id(where.resource_id, "Item ID", where)
    name = _text(item, "Name", where, required=True)
    if not name:
        raise where.error("Name", "empty resource name")
    ops_text = _text(item, "Operations", where, required=True).upper()
    if ops_text not in _OPERATIONS:
        raise where.error("Operations", f"expected R, W, RW, E or empty, got {ops_text!r}")
    operations = _OPERATIONS[ops_text]
    multiple = _choice(item, "MultipleInstances", where, "Multiple", "Single")
    mandatory = _choice(item, "Mandatory", where, "Mandatory", "Optional")
    rtype = _resource_type(_text(item, "Type", where, required=True), where)
    if rtype is ResourceType.NONE and not operations.executable:
        raise where.error("Type", f"no type given, but only an executable (E) resource may have none "
                                  f"(Operations is {ops_text or 'empty'!r})")
    return ResourceModel(
        id=rid,
        name=name,
        operations=operations,
        multiple=multiple,
        mandatory=mandatory,
        type=rtype,
        range=_text(item, "RangeEnumeration", where),
        units=_text(item, "Units", where),
        description=_text(item, "Description", where),
    )


def _object(obj: ET.Element, where: _Where) -> ObjectModel:
    where.object_id, where.resource_id = None, None
    object_type = obj.attrib.get("ObjectType", "MODefinition").strip()
    if object_type != "MODefinition":
        raise where.error("Object", f"ObjectType is {object_type!r}, expected 'MODefinition'")
    id_text = _text(obj, "ObjectID", where, required=True)
    where.object_id = id_text or "?"
    oid = _int_id(id_text, "ObjectID", where)
    name = _text(obj, "Name", where, required=True)
    if not name:
        raise where.error("Name", "empty object name")
    versions: dict[str, str] = {}
    for element in ("LWM2MVersion", "ObjectVersion"):
        text = _text(obj, element, where) or "1.0"
        if not _VERSION.fullmatch(text):
            raise where.error(element, f"expected a version like '1.1', got {text!r}")
        versions[element] = text
    multiple = _choice(obj, "MultipleInstances", where, "Multiple", "Single")
    mandatory = _choice(obj, "Mandatory", where, "Mandatory", "Optional")
    container = _child(obj, "Resources")
    if container is None:
        raise where.error("Resources", "missing element")
    resources: dict[int, ResourceModel] = {}
    for item in container:
        if not isinstance(item.tag, str):
            continue  # comments, processing instructions
        if _local(item.tag) != "Item":
            raise where.error(_local(item.tag), "unexpected element inside <Resources>, expected <Item>")
        res = _resource(item, where)
        if res.id in resources:
            raise where.error("Item ID", f"duplicate resource id {res.id} "
                                         f"({resources[res.id].name!r} and {res.name!r})")
        resources[res.id] = res
    where.resource_id = None
    return ObjectModel(
        id=oid,
        name=name,
        multiple=multiple,
        mandatory=mandatory,
        resources=dict(sorted(resources.items())),
        version=versions["ObjectVersion"],
        lwm2m_version=versions["LWM2MVersion"],
        urn=_text(obj, "ObjectURN", where),
        description=_text(obj, "Description1", where),
    )


def _objects(data: bytes | str, where: _Where) -> list[ET.Element]:
    # Text is parsed as text (its XML declaration's encoding no longer applies); bytes as bytes.
    document: str | bytes = data if isinstance(data, str) else bytes(data)
    try:
        root = SafeET.fromstring(document, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DefusedXmlException as exc:
        raise where.error("!DOCTYPE", f"DOCTYPE and ENTITY declarations are not allowed in DDF files ({exc})") from None
    except ET.ParseError as exc:
        line, col = exc.position
        raise where.error("LWM2M", f"not well-formed XML at line {line}, column {col + 1}: {exc}") from None
    except (UnicodeError, ValueError) as exc:
        raise where.error("LWM2M", f"cannot decode the XML text: {exc}") from None
    if _local(root.tag) != "LWM2M":
        raise where.error(_local(root.tag), "root element must be <LWM2M>")
    objects = [el for el in root if isinstance(el.tag, str) and _local(el.tag) == "Object"]
    if not objects:
        raise where.error("Object", "no <Object> element in <LWM2M>")
    return objects


def split_ddf(data: bytes | str, source: str = "") -> list[tuple[ObjectModel, str]]:
    """Parse DDF XML into (object model, that object's own DDF document), in file order.

    The document is the ``<Object>`` element alone in an ``<LWM2M>`` root: what to store to
    load one object again without the rest of the file it came in. Errors as ``parse_ddf``.
    """
    where = _Where(source)
    elements = _objects(data, where)
    pairs = [(_object(el, where), f"<LWM2M>{ET.tostring(el, encoding='unicode')}</LWM2M>") for el in elements]
    seen: set[int] = set()
    for model, _ in pairs:
        if model.id in seen:
            where.object_id, where.resource_id = str(model.id), None
            raise where.error("ObjectID", f"object {model.id} is defined twice in this file")
        seen.add(model.id)
    return pairs


def parse_ddf(data: bytes | str, source: str = "") -> list[ObjectModel]:
    """Parse DDF XML (bytes or text) into object models, in file order.

    ``source`` (a file name) is used in error messages. Raises DdfError on anything that is
    not a well-formed, complete object definition, and on DOCTYPE/ENTITY declarations.
    """
    return [model for model, _ in split_ddf(data, source)]


def load_ddf_file(path: str | os.PathLike[str]) -> list[ObjectModel]:
    """Read and parse one DDF XML file; errors name the file."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise DdfError(f"{name}: cannot read DDF file: {exc.strerror or exc}") from None
    return parse_ddf(data, source=name)
