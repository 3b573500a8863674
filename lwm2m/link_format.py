"""CoRE Link Format (RFC 6690) with the LwM2M attributes, and the Register payload.

``parse_links`` reads ``</>;rt="oma.lwm2m";ct=11543,</1/0>,</3>;ver=1.1,</3/0>`` into
``Link`` values; ``format_links`` writes them back. Attribute values are kept unquoted and
unescaped (``title="a,b;c"`` gives ``("title", "a,b;c")``); an attribute without a value
(``;obs``) has the value None. The formatter quotes a value when it must (anything that is not
a ``ptoken``, RFC 6690 section 2) and always for ``rt``, ``if``, ``title``, ``anchor``,
``rel`` and ``rev``, so its output is what LwM2M clients and Leshan write.

Whitespace (spaces, tabs, newlines) is tolerated between links and around ``,`` ``;`` and
``=``. Anything else that is not RFC 6690 raises ``LinkFormatError`` (a BadRequest) naming
the offset in the text and what was expected there.

``registration_objects`` interprets an LwM2M Register/Update payload (TS Core 6.2.1 and the
Transport binding's Register): the alternate root path and content formats from the ``rt="oma.lwm2m"``
link, object versions from ``ver=``, and the instances of each object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, TypedDict

from lwm2m.errors import BadRequest
from lwm2m.path import MAX_ID, Path

__all__ = ["Link", "LinkFormatError", "RegisteredObject", "parse_links", "format_links", "registration_objects"]

LWM2M_RT = "oma.lwm2m"
ALWAYS_QUOTED = frozenset({"rt", "if", "title", "anchor", "rel", "rev"})
_WS = " \t\r\n"
# RFC 6690 parmname and ptoken character sets (ASCII only).
_PARMNAME = re.compile(r"[A-Za-z0-9!#$&+\-.^_`|~]+")
_PTOKEN = re.compile(r"[A-Za-z0-9!#$%&'()*+\-./:<=>?@\[\]^_`{|}~]+")
_VERSION = re.compile(r"[0-9]+\.[0-9]+")


class LinkFormatError(BadRequest):
    """A payload that is not CoRE Link Format, or a Register payload LwM2M cannot use."""


class RegisteredObject(TypedDict):
    """One object of a Register payload: its ``ver=`` (None if absent) and instance ids."""

    version: str | None
    instances: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Link:
    """One link: its URI (between ``<`` and ``>``) and its attributes, in order."""

    uri: str
    attributes: tuple[tuple[str, str | None], ...] = ()

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of the first attribute called ``name`` (None for a valueless one)."""
        for key, value in self.attributes:
            if key == name:
                return value
        return default

    def has(self, name: str) -> bool:
        return any(key == name for key, _ in self.attributes)

    @property
    def path(self) -> Path | None:
        """The LwM2M path of the URI (``</3/0>`` -> /3/0); None for ``</>`` or non-numeric."""
        return _numeric_path(self.uri)

    def __str__(self) -> str:
        return format_links((self,))


def _numeric_path(uri: str) -> Path | None:
    if not uri.startswith("/"):
        return None
    body = uri[1:-1] if uri.endswith("/") else uri[1:]
    parts = body.split("/")
    if not body or len(parts) > 4:
        return None
    if not all(p.isascii() and p.isdigit() and len(p) <= 5 and int(p) <= MAX_ID for p in parts):
        return None
    return Path.of(*(int(p) for p in parts))


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, expected: str, at: int | None = None) -> LinkFormatError:
        at = self.pos if at is None else at
        if at >= len(self.text):
            found = "end of input"
        else:
            found = repr(self.text[at:at + 12]) + ("..." if len(self.text) > at + 12 else "")
        return LinkFormatError(f"invalid link format at offset {at}: expected {expected}, found {found}")

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in _WS:
            self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def match(self, pattern: re.Pattern[str]) -> str | None:
        m = pattern.match(self.text, self.pos)
        if m is None:
            return None
        self.pos = m.end()
        return m.group()

    def uri(self) -> str:
        if self.peek() != "<":
            raise self.error("'<' starting a link")
        start = self.pos + 1
        end = self.text.find(">", start)
        if end < 0:
            raise self.error("'>' closing the URI", start)
        uri = self.text[start:end]
        if not uri:
            raise self.error("a URI between '<' and '>'", start)
        for i, ch in enumerate(uri):
            if ch in _WS or ch in '<"' or ord(ch) < 0x20 or ord(ch) == 0x7F:
                raise self.error("a URI character (no whitespace, '<' or '\"')", start + i)
        self.pos = end + 1
        return uri

    def quoted(self) -> str:
        start = self.pos
        self.pos += 1  # opening quote
        out: list[str] = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == '"':
                self.pos += 1
                return "".join(out)
            if ch == "\\":
                if self.pos + 1 >= len(self.text):
                    break
                out.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            out.append(ch)
            self.pos += 1
        raise self.error("'\"' closing the quoted string opened here", start)

    def attribute(self) -> tuple[str, str | None]:
        name = self.match(_PARMNAME)
        if name is None:
            raise self.error("an attribute name after ';'")
        self.skip_ws()
        if self.peek() != "=":
            return name, None
        self.pos += 1
        self.skip_ws()
        if self.peek() == '"':
            return name, self.quoted()
        value = self.match(_PTOKEN)
        if value is None:
            raise self.error(f"a value (token or quoted string) for attribute {name!r}")
        return name, value


def parse_links(text: str | bytes | bytearray | memoryview) -> tuple[Link, ...]:
    """Parse a CoRE Link Format document; empty or blank text gives ``()``.

    Bytes are decoded as UTF-8. Raises LinkFormatError (naming the offset) on malformed input.
    """
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LinkFormatError(f"invalid link format: not valid UTF-8 at byte {exc.start}") from None
    sc = _Scanner(text)
    links: list[Link] = []
    sc.skip_ws()
    if sc.pos == len(text):
        return ()
    while True:
        sc.skip_ws()
        uri = sc.uri()
        attributes: list[tuple[str, str | None]] = []
        while True:
            sc.skip_ws()
            if sc.peek() != ";":
                break
            sc.pos += 1
            sc.skip_ws()
            attributes.append(sc.attribute())
        links.append(Link(uri, tuple(attributes)))
        if sc.pos == len(text):
            return tuple(links)
        if sc.peek() != ",":
            raise sc.error("',' between links, ';' before an attribute, or the end")
        sc.pos += 1


def _format_value(name: str, value: str) -> str:
    if name not in ALWAYS_QUOTED and _PTOKEN.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_links(links: Iterable[Link]) -> str:
    """Serialize links as ``<uri>;name=value,...`` (no whitespace).

    Raises LinkFormatError for a URI or attribute name that cannot be written.
    """
    out: list[str] = []
    for link in links:
        if not link.uri or any(ch in _WS or ch in '<>"' for ch in link.uri):
            raise LinkFormatError(f"cannot write link URI {link.uri!r}: empty or contains whitespace, '<', '>' or '\"'")
        parts = [f"<{link.uri}>"]
        for name, value in link.attributes:
            if not _PARMNAME.fullmatch(name):
                raise LinkFormatError(f"cannot write attribute name {name!r} of link <{link.uri}>")
            parts.append(f";{name}" if value is None else f";{name}={_format_value(name, value)}")
        out.append("".join(parts))
    return ",".join(out)


def _int_list(link: Link, name: str) -> tuple[int, ...]:
    value = link.get(name)
    if value is None:
        raise LinkFormatError(f"link <{link.uri}>: attribute {name!r} needs a value")
    items = value.split()
    if not items or not all(i.isascii() and i.isdigit() and len(i) <= 5 for i in items):
        raise LinkFormatError(f"link <{link.uri}>: {name}={value!r} is not a list of content-format numbers")
    return tuple(int(i) for i in items)


def registration_objects(
    links: Iterable[Link] | str | bytes | bytearray | memoryview,
) -> tuple[str, tuple[int, ...], dict[int, RegisteredObject]]:
    """Interpret a Register (or Update) payload.

    Returns ``(root_path, content_formats, objects)``: the alternate root path (``"/"`` unless
    a link with ``rt="oma.lwm2m"`` names another, e.g. ``"/lwm2m"``), the content formats of
    that link's ``ct=`` (``()`` if absent), and for each object id a dict with ``'version'``
    (its ``ver=`` or None) and ``'instances'`` (sorted instance ids).

    Links outside the root path or with non-numeric segments (other CoRE resources) are
    ignored. Numeric links that are not ``/object`` or ``/object/instance`` (``</3/0/1>``, an
    id above 65535), and malformed ``ver=``/``ct=`` values, raise LinkFormatError naming the
    link.
    """
    if isinstance(links, (str, bytes, bytearray, memoryview)):
        links = parse_links(links)
    links = tuple(links)
    root = "/"
    content_formats: tuple[int, ...] = ()
    for link in links:
        rt = link.get("rt")
        if rt is not None and LWM2M_RT in rt.split():
            root = "/" + link.uri.strip("/")
            if link.has("ct"):
                content_formats = _int_list(link, "ct")
            break
    prefix = "" if root == "/" else root
    versions: dict[int, str | None] = {}
    instances: dict[int, set[int]] = {}
    for link in links:
        rt = link.get("rt")
        if rt is not None and LWM2M_RT in rt.split():
            continue
        uri = link.uri.rstrip("/") if link.uri != "/" else link.uri
        if prefix:
            if not uri.startswith(prefix + "/"):
                continue
            uri = uri[len(prefix):]
        segments = uri[1:].split("/") if uri.startswith("/") else []
        if not segments or not all(seg.isascii() and seg.isdigit() for seg in segments):
            continue  # not an LwM2M object link (another CoRE resource): ignored
        path = _numeric_path(uri)
        if path is None or path.depth > 2:
            raise LinkFormatError(f"link <{link.uri}>: expected an object or object instance path "
                                  f"under the root {root!r} like </3> or </3/0>, with ids 0..{MAX_ID}")
        assert path.object_id is not None
        oid = path.object_id
        instances.setdefault(oid, set())
        if path.instance_id is not None:
            instances[oid].add(path.instance_id)
        if link.has("ver"):
            ver = link.get("ver")
            if ver is None or not _VERSION.fullmatch(ver):
                raise LinkFormatError(f"link <{link.uri}>: ver={ver!r} is not an object version like 1.1")
            versions[oid] = ver
        else:
            versions.setdefault(oid, None)
    objects: dict[int, RegisteredObject] = {
        oid: RegisteredObject(version=versions.get(oid), instances=tuple(sorted(instances[oid])))
        for oid in sorted(instances)
    }
    return root, content_formats, objects
