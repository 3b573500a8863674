"""LwM2M paths (``/3/0/1/2``) and the value types resources carry.

A ``Path`` addresses the root, an object, an object instance, a resource or a resource
instance. ``Content`` is how every codec and the server pass data around: a mapping from
resource paths (single-instance resources) or resource-instance paths (multiple-instance
resources) to Python values. It is flat on purpose: SenML is flat, and TLV and LwM2M CBOR
nest it again from the request path and the object model.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import total_ordering
from typing import Mapping, Union

from lwm2m.errors import BadRequest

MAX_ID = 65535


@total_ordering
@dataclass(frozen=True, slots=True)
class Path:
    """An LwM2M path. Unset trailing levels are None; ``Path()`` is the root ``/``.

    Paths order by their ids, so a parent sorts before its children (``/3/0/6 < /3/0/6/0``).
    """

    object_id: int | None = None
    instance_id: int | None = None
    resource_id: int | None = None
    resource_instance_id: int | None = None

    def __post_init__(self) -> None:
        ids = self.ids
        full = (self.object_id, self.instance_id, self.resource_id, self.resource_instance_id)
        if any(x is not None for x in full[len(ids):]):
            raise BadRequest(f"invalid LwM2M path {full}: a level is set below an unset one")
        for x in ids:
            if not 0 <= x <= MAX_ID:
                raise BadRequest(f"invalid LwM2M path {self}: id {x} outside 0..{MAX_ID}")

    @property
    def ids(self) -> tuple[int, ...]:
        out: list[int] = []
        for x in (self.object_id, self.instance_id, self.resource_id, self.resource_instance_id):
            if x is None:
                break
            out.append(x)
        return tuple(out)

    @property
    def depth(self) -> int:
        """0 root, 1 object, 2 instance, 3 resource, 4 resource instance."""
        return len(self.ids)

    @property
    def is_root(self) -> bool:
        return self.depth == 0

    @property
    def is_object(self) -> bool:
        return self.depth == 1

    @property
    def is_instance(self) -> bool:
        return self.depth == 2

    @property
    def is_resource(self) -> bool:
        return self.depth == 3

    @property
    def is_resource_instance(self) -> bool:
        return self.depth == 4

    @classmethod
    def of(cls, *ids: int) -> "Path":
        if len(ids) > 4:
            raise BadRequest(f"invalid LwM2M path {ids}: more than 4 levels")
        return cls(*ids)

    @classmethod
    def parse(cls, text: str) -> "Path":
        """Parse ``/3/0/1``, ``3/0/1`` or ``/``; raise BadRequest naming the path otherwise."""
        stripped = text.strip().strip("/")
        if not stripped:
            return cls()
        parts = stripped.split("/")
        if len(parts) > 4 or not all(p.isdigit() and p.isascii() for p in parts):
            raise BadRequest(f"invalid LwM2M path {text!r}: expected /object[/instance[/resource[/ri]]]")
        return cls.of(*(int(p) for p in parts))

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Path):
            return NotImplemented
        return self.ids < other.ids

    def child(self, i: int) -> "Path":
        return Path.of(*self.ids, i)

    @property
    def parent(self) -> "Path":
        return Path.of(*self.ids[:-1])

    def startswith(self, prefix: "Path") -> bool:
        return self.ids[: prefix.depth] == prefix.ids

    @property
    def uri_path(self) -> tuple[str, ...]:
        """The CoAP Uri-Path options for this path."""
        return tuple(str(x) for x in self.ids)

    def __str__(self) -> str:
        return "/" + "/".join(str(x) for x in self.ids)


@dataclass(frozen=True, order=True, slots=True)
class ObjLink:
    """An Objlnk value: ``object_id:instance_id`` (65535:65535 is the null link)."""

    object_id: int
    instance_id: int

    def __post_init__(self) -> None:
        if not (0 <= self.object_id <= MAX_ID and 0 <= self.instance_id <= MAX_ID):
            raise BadRequest(f"invalid Objlnk {self.object_id}:{self.instance_id}: ids must be 0..{MAX_ID}")

    def __str__(self) -> str:
        return f"{self.object_id}:{self.instance_id}"

    @classmethod
    def parse(cls, text: str) -> "ObjLink":
        a, sep, b = text.partition(":")
        if not (sep and a.isdigit() and b.isdigit() and a.isascii() and b.isascii()):
            raise BadRequest(f"invalid Objlnk {text!r}: expected OBJ:INST")
        return cls(int(a), int(b))


@dataclass(frozen=True, slots=True)
class RawString:
    """A String (or Corelnk) value as the device sent it when it is not clean text: not UTF-8,
    or with NUL bytes in it (C clients sometimes send the terminator). Decoders return one of
    these for that one value instead of failing the whole payload; ``problem`` says what is
    wrong, ``text`` is a best-effort reading (invalid bytes replaced, trailing NULs dropped).
    It is read-only: encoders refuse it (write a ``str``)."""

    raw: bytes
    problem: str

    @property
    def text(self) -> str:
        return self.raw.rstrip(b"\0").decode("utf-8", "replace")

    def __str__(self) -> str:
        return self.text


def string_value(raw: bytes) -> "str | RawString":
    """A String resource's bytes as text, or as a ``RawString`` naming why they are not clean text."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return RawString(bytes(raw), f"not UTF-8 at byte {e.start}")
    if "\0" in text:
        return RawString(bytes(raw), f"contains a NUL byte at byte {raw.index(0)}")
    return text


def string_from_decoded(text: str) -> "str | RawString":
    """A string a JSON or CBOR parser produced with ``surrogateescape`` (invalid UTF-8 bytes as
    lone surrogates): the text, or a ``RawString`` of the original bytes."""
    if "\0" not in text and not any("\ud800" <= c <= "\udfff" for c in text):
        return text
    try:
        return string_value(text.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:  # a surrogate that stands for no byte (an escaped "\\ud800")
        return RawString(text.encode("utf-8", "replace"), "not UTF-8 (lone surrogate)")


# String and Corelnk -> str (RawString when the device's bytes are not clean text); Integer,
# Unsigned Integer and Time (seconds since the epoch) -> int; Float -> float; Boolean -> bool;
# Opaque -> bytes; Objlnk -> ObjLink.
Value = Union[str, int, float, bool, bytes, ObjLink, RawString]

Content = Mapping[Path, Value]
