"""Device-management operations, one class per operation (as Leshan's ``request`` package).

Each operation is a frozen dataclass that knows how to become a CoAP request (method,
options, payload) and how to read the device's response (expected success code, decoded
result). It does not know where the device is or how requests are sent: ``device_client``
adds the destination, the Accept choice, queue mode and timeouts.

TS Core 1.1/1.2 section 6.3 (Device Management and Service Enablement interface) and
TS Transport 6.4 for the CoAP mapping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from aiocoap import Code, Message

from lwm2m import codecs
from lwm2m.errors import BadRequest, LwM2MError
from lwm2m.jsonvalues import content_from_json, content_to_json
from lwm2m.link_format import Link, parse_links
from lwm2m.model import ObjectRegistry
from lwm2m.numbers import ContentFormat
from lwm2m.path import Content, Path, Value

# Write-Attributes names (TS Core 1.1 5.1.2 / 1.2 5.1.1): numeric, or none to unset.
ATTRIBUTES = frozenset({"pmin", "pmax", "gt", "lt", "st", "epmin", "epmax", "edge", "con", "hqmax", "dim"})


class DeviceError(LwM2MError):
    """The device answered an operation with an error code; ``code`` is the device's code."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Operation:
    """Base: ``path`` is the target; subclasses set ``method`` and ``success``."""

    path: Path
    method: ClassVar[Code] = Code.GET
    success: ClassVar[frozenset[Code]] = frozenset({Code.CONTENT})
    name: ClassVar[str] = "operation"
    # Device answers that mean "not in that content format": the next acceptable one is tried
    # (only when the caller did not name a format). Empty: the format is not negotiable.
    refusals: ClassVar[frozenset[Code]] = frozenset()

    def request(self, fmt: ContentFormat, registry: ObjectRegistry) -> Message:
        return Message(code=self.method)

    def result(self, response: Message, registry: ObjectRegistry) -> Any:
        return None

    def check(self, response: Message) -> None:
        if response.code not in self.success:
            diag = response.payload.decode("utf-8", "replace")[:200] if response.payload else ""
            raise DeviceError(response.code, f"{self.name} {self.path} failed on the device: "
                              f"{response.code.dotted} {response.code.name_printable}" + (f" ({diag})" if diag else ""))


def decode_response(response: Message, path: Path, registry: ObjectRegistry) -> dict[Path, Value]:
    cf = response.opt.content_format
    if cf is None:
        if not response.payload:
            return {}
        raise BadRequest(f"response for {path} has a payload but no content format")
    return codecs.decode(int(cf), path, response.payload, registry)


FORMAT_REFUSED = frozenset({Code.NOT_ACCEPTABLE, Code.UNSUPPORTED_CONTENT_FORMAT})


@dataclass(frozen=True)
class Read(Operation):
    name: ClassVar[str] = "Read"
    refusals: ClassVar[frozenset[Code]] = FORMAT_REFUSED

    def request(self, fmt: ContentFormat, registry: ObjectRegistry) -> Message:
        return Message(code=Code.GET, accept=int(fmt))

    def result(self, response: Message, registry: ObjectRegistry) -> dict[Path, Value]:
        return decode_response(response, self.path, registry)


@dataclass(frozen=True)
class Observe(Read):
    """Read plus Observe=0; notifications are decoded the same way (see ``observation``)."""

    name: ClassVar[str] = "Observe"

    def request(self, fmt: ContentFormat, registry: ObjectRegistry) -> Message:
        return Message(code=Code.GET, accept=int(fmt), observe=0)


@dataclass(frozen=True)
class Discover(Operation):
    name: ClassVar[str] = "Discover"

    def request(self, fmt: ContentFormat, registry: ObjectRegistry) -> Message:
        return Message(code=Code.GET, accept=int(ContentFormat.LINK))

    def result(self, response: Message, registry: ObjectRegistry) -> tuple[Link, ...]:
        return parse_links(response.payload.decode("utf-8", "replace"))


@dataclass(frozen=True)
class Write(Operation):
    """Write: ``replace`` -> PUT (replace), else POST (partial update, instances only)."""

    content: Content = field(default_factory=dict)
    replace: bool = True
    name: ClassVar[str] = "Write"
    success: ClassVar[frozenset[Code]] = frozenset({Code.CHANGED})
    refusals: ClassVar[frozenset[Code]] = FORMAT_REFUSED

    def __post_init__(self) -> None:
        if not self.replace and not self.path.is_instance:
            raise BadRequest(f"partial-update Write needs an object-instance path, got {self.path}")
        if not self.content:
            raise BadRequest(f"Write to {self.path} without values")
        for p in self.content:
            if not p.startswith(self.path) or p.depth < 3:
                raise BadRequest(f"Write to {self.path}: value path {p} is not a resource under it")

    def request(self, fmt: ContentFormat, registry: ObjectRegistry) -> Message:
        payload = codecs.encode(int(fmt), self.path, self.content, registry)
        return Message(code=Code.PUT if self.replace else Code.POST, content_format=int(fmt), payload=payload)

    def single_opaque(self, registry: ObjectRegistry) -> bool:
        """One Opaque value written to its own resource (a Package): carried as CF 42, raw bytes."""
        value = self.content.get(self.path)
        return (len(self.content) == 1 and isinstance(value, bytes)
                and codecs.supports(int(ContentFormat.OPAQUE), self.path, registry))


@dataclass(frozen=True)
class WriteAttributes(Operation):
    attributes: tuple[tuple[str, float | None], ...] = ()
    name: ClassVar[str] = "Write-Attributes"
    success: ClassVar[frozenset[Code]] = frozenset({Code.CHANGED})

    def __post_init__(self) -> None:
        if not self.attributes:
            raise BadRequest(f"Write-Attributes to {self.path} without attributes")
        for key, _ in self.attributes:
            if key not in ATTRIBUTES:
                raise BadRequest(f"unknown attribute {key!r}: expected one of {', '.join(sorted(ATTRIBUTES))}")

    def request(self, fmt: ContentFormat, registry: ObjectRegistry) -> Message:
        query = tuple(k if v is None else f"{k}={_num(v)}" for k, v in self.attributes)
        return Message(code=Code.PUT, uri_query=query)


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


@dataclass(frozen=True)
class Execute(Operation):
    arguments: str = ""
    name: ClassVar[str] = "Execute"
    success: ClassVar[frozenset[Code]] = frozenset({Code.CHANGED})

    def __post_init__(self) -> None:
        if not self.path.is_resource:
            raise BadRequest(f"Execute needs a resource path, got {self.path}")

    def request(self, fmt: ContentFormat, registry: ObjectRegistry) -> Message:
        if self.arguments:
            return Message(code=Code.POST, content_format=int(ContentFormat.TEXT), payload=self.arguments.encode())
        return Message(code=Code.POST)


@dataclass(frozen=True)
class Create(Operation):
    """Create an object instance: ``content`` keys are under ``/object/instance``."""

    content: Content = field(default_factory=dict)
    name: ClassVar[str] = "Create"
    success: ClassVar[frozenset[Code]] = frozenset({Code.CREATED})
    refusals: ClassVar[frozenset[Code]] = FORMAT_REFUSED

    def __post_init__(self) -> None:
        if not self.path.is_object:
            raise BadRequest(f"Create needs an object path, got {self.path}")
        if not self.content or any(not p.startswith(self.path) or p.depth < 3 for p in self.content):
            raise BadRequest(f"Create on {self.path}: values must be resources under {self.path}/<instance>")

    def request(self, fmt: ContentFormat, registry: ObjectRegistry) -> Message:
        payload = codecs.encode(int(fmt), self.path, self.content, registry)
        return Message(code=Code.POST, content_format=int(fmt), payload=payload)

    def result(self, response: Message, registry: ObjectRegistry) -> str | None:
        return "/" + "/".join(response.opt.location_path) if response.opt.location_path else None


@dataclass(frozen=True)
class Delete(Operation):
    name: ClassVar[str] = "Delete"
    success: ClassVar[frozenset[Code]] = frozenset({Code.DELETED})

    def __post_init__(self) -> None:
        if not self.path.is_instance:
            raise BadRequest(f"Delete needs an object-instance path, got {self.path}")

    def request(self, fmt: ContentFormat, registry: ObjectRegistry) -> Message:
        return Message(code=Code.DELETE)


# -- operations as JSON (held requests are stored this way) --------------------------------

def to_json(op: Operation) -> dict[str, Any]:
    """An operation as JSON: its name, path and arguments (values as ``lwm2m.jsonvalues``)."""
    out: dict[str, Any] = {"op": op.name, "path": str(op.path)}
    if isinstance(op, (Write, Create)):
        out["content"] = content_to_json(op.content)
    if isinstance(op, Write):
        out["replace"] = op.replace
    if isinstance(op, Execute) and op.arguments:
        out["arguments"] = op.arguments
    if isinstance(op, WriteAttributes):
        out["attributes"] = dict(op.attributes)
    return out


def from_json(data: dict[str, Any]) -> Operation:
    """The operation ``to_json`` wrote; BadRequest naming what is wrong."""
    kind = OPERATIONS.get(str(data.get("op")))
    if kind is None:
        raise BadRequest(f"unknown operation {data.get('op')!r}: expected one of {', '.join(OPERATIONS)}")
    path = Path.parse(str(data.get("path", "")))
    if kind in (Write, Create):
        content = content_from_json(data.get("content") or {})
        return Write(path, content, bool(data.get("replace", True))) if kind is Write else Create(path, content)
    if kind is Execute:
        return Execute(path, str(data.get("arguments", "")))
    if kind is WriteAttributes:
        return WriteAttributes(path, tuple((str(k), v) for k, v in (data.get("attributes") or {}).items()))
    return kind(path)


OPERATIONS: dict[str, type[Operation]] = {
    cls.name: cls for cls in (Read, Observe, Discover, Write, WriteAttributes, Execute, Create, Delete)}
