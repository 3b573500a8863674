"""The names tinymlaas accepts, for devices and for what operators name, and how they are used.

One table of rules (``RULES``); ``check(kind, text)`` returns the name or raises ``NameError_``
(a ``ValueError``, and an ``lwm2m.errors.BadRequest`` so it is 4.00 / HTTP 400) naming the
rule that was broken.

Endpoint names (the ``ep`` of a Register, LwM2M TS Core 6.2.1 / TS Transport 6.2.1): 1-255
characters from RFC 3986's *unreserved* set (``A-Z a-z 0-9 - . _ ~``) plus ``:`` (the URN
separator: LwM2M recommends ``urn:imei:...``, ``urn:uuid:...``, ``urn:dev:ops:...``), not
``.`` or ``..``. That is what a URI query carries without percent-encoding and what a URI
path segment carries without meaning anything else: the names are put into admin-API URLs and
shown on terminals, so ``/``, ``%``, ``?``, ``#``, ``&``, ``=``, spaces, quotes, control
characters and non-ASCII are refused (4.00 with the rule).

Model, group, token and profile names: a letter or digit, then letters, digits, ``_``, ``.``, ``-``
(up to 64), not ending in ``.``; model versions the same plus ``+`` (up to 64). Campaign
names are labels for people: 1-128 printable characters, no control characters.

Names never become file paths: models are stored content-addressed; where a name does give
a file or directory name (``models export``'s default folder), ``child`` checks the result
stays under its directory. ``printable`` strips control characters (ANSI escapes included)
from text bound for a terminal.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from lwm2m.errors import BadRequest


class NameError_(BadRequest, ValueError):
    """A name that breaks its rule; the message says which."""


@dataclass(frozen=True)
class Rule:
    pattern: re.Pattern[str]
    max_length: int
    says: str  # the rule, for people


_SLUG = r"[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9_-])?"

RULES: dict[str, Rule] = {
    "endpoint": Rule(re.compile(r"(?!\.\.?\Z)[A-Za-z0-9._~:-]+"), 255,
                     "1-255 characters from A-Z a-z 0-9 - . _ ~ : (RFC 3986 unreserved, plus ':'), not '.' or '..'"),
    "model": Rule(re.compile(_SLUG), 64, "1-64 characters: a letter or digit, then letters, digits, '_', '.', '-', "
                                         "not ending in '.'"),
    "version": Rule(re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.+-]*[A-Za-z0-9_+-])?"), 64,
                    "1-64 characters: a letter or digit, then letters, digits, '_', '.', '+', '-', not ending in '.'"),
    "group": Rule(re.compile(_SLUG), 64, "1-64 characters: a letter or digit, then letters, digits, '_', '.', '-', "
                                         "not ending in '.'"),
    "profile": Rule(re.compile(r"[a-z0-9][a-z0-9_-]*"), 64,
                    "1-64 characters: lower-case letters, digits, '_', '-', starting with a letter or digit"),
    "token": Rule(re.compile(_SLUG), 64, "1-64 characters: a letter or digit, then letters, digits, '_', '.', '-', "
                                         "not ending in '.'"),
    "campaign": Rule(re.compile(r"[^\x00-\x1f\x7f-\x9f]+"), 128, "1-128 printable characters (no control characters)"),
}

# C0 and C1 controls (ESC, CSI, BEL, backspace, carriage return, ...) and Unicode's other
# invisible format/bidi characters; newline and tab are kept.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def check(kind: str, text: str | None) -> str:
    """``text`` if it is a valid ``kind`` name, else ``NameError_`` naming the rule."""
    rule = RULES[kind]
    if not isinstance(text, str) or not 0 < len(text) <= rule.max_length or not rule.pattern.fullmatch(text):
        raise NameError_(f"invalid {kind} name {shown(text)}: {rule.says}")
    if kind == "campaign" and not all(unicodedata.category(c)[0] != "C" for c in text):
        raise NameError_(f"invalid {kind} name {shown(text)}: {rule.says}")
    return text


def valid(kind: str, text: str | None) -> bool:
    try:
        check(kind, text)
    except NameError_:
        return False
    return True


def shown(text: object, limit: int = 80) -> str:
    """A name as an error message quotes it: repr, control characters escaped, cut at ``limit``."""
    r = repr(text)
    return r if len(r) <= limit else r[:limit] + "...'"


def printable(text: str) -> str:
    """``text`` without control characters (ANSI escapes lose their ESC and show as text)."""
    return _CONTROLS.sub("", text)


def child(directory: Path, name: str) -> Path:
    """``directory / name``, refused unless it stays directly under ``directory``."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise NameError_(f"{shown(name)} is not a plain file name")
    path = directory / name
    if path.resolve().parent != directory.resolve():
        raise NameError_(f"{shown(name)} would leave {directory}")
    return path
