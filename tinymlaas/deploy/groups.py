"""Device groups: a name and a selector that picks devices from what the server knows.

A selector is ``{"tag": ..., "profile": ..., "query": ...}``; every part that is set must
match (AND). ``tag`` matches any of a device's tags (``DEVICES.tags``, comma-separated),
``profile`` its profile, both with ``*`` / ``?`` globs.

The query language
------------------
Comma-separated terms, all of which must hold::

    profile=nrf52*,tag!=lab,runtime=tflm,registered=yes

Each term is ``key=value`` (some value of the key matches the glob) or ``key!=value`` (none
does). Globs are ``fnmatch`` patterns (``*``, ``?``, ``[...]``); matching ignores case. A
device without a value for a key has the value ``""``, so ``profile=`` selects devices with
no known profile. Keys:

- ``endpoint``: the endpoint name
- ``profile``: the device profile (from the device row, else from the capability snapshot)
- ``tag``: one of the device's tags
- ``lwm2m``: the LwM2M version (of the live registration, else the last one seen)
- ``core``: the CPU core from the latest capability snapshot (e.g. ``cortex-m4``)
- ``runtime``: the name of a runtime the device reports (``tflm``, ``wasm``, ...)
- ``registered``: ``yes`` or ``no`` (whether the device is registered right now)

An unknown key or a malformed term is a ``ValueError`` that says what is allowed.

This module resolves members and stores group definitions (table ``groups``); it does not
deploy anything and keeps no state of its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Callable, Iterable, Mapping

from sqlalchemy import Connection, delete, func, insert, select

from lwm2m.errors import NotFound
from tinymlaas import names
from tinymlaas.store.store import Store
from tinymlaas.store.tables import CAPABILITY_SNAPSHOTS, DEVICES, GROUPS

SELECTOR_KEYS = ("tag", "profile", "query")


@dataclass(frozen=True)
class Facts:
    """What a selector can test about one device."""

    endpoint: str
    profile: str
    tags: tuple[str, ...]
    lwm2m: str
    core: str
    runtimes: tuple[str, ...]
    registered: bool


@dataclass(frozen=True)
class Term:
    """One query term: ``key=pattern`` or, with ``negate``, ``key!=pattern``."""

    key: str
    pattern: str
    negate: bool = False

    def matches(self, facts: Facts) -> bool:
        values = MATCHERS[self.key](facts) or ("",)
        pattern = self.pattern.lower()
        hit = any(fnmatchcase(v.lower(), pattern) for v in values)
        return hit != self.negate


# key -> the values of that key for a device (a term matches when one of them matches).
MATCHERS: dict[str, Callable[[Facts], tuple[str, ...]]] = {
    "endpoint": lambda f: (f.endpoint,),
    "profile": lambda f: (f.profile,),
    "tag": lambda f: f.tags,
    "lwm2m": lambda f: (f.lwm2m,),
    "core": lambda f: (f.core,),
    "runtime": lambda f: f.runtimes,
    "registered": lambda f: ("yes" if f.registered else "no",),
}
# Keys whose values come from a closed set (a glob is still allowed).
CLOSED_VALUES: dict[str, tuple[str, ...]] = {"registered": ("yes", "no")}


def parse_query(text: str) -> list[Term]:
    """The terms of a query (see the module docstring); ``ValueError`` for anything else."""
    terms: list[Term] = []
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            continue
        negate = "!=" in part
        key, sep, value = part.partition("!=" if negate else "=")
        key, value = key.strip().lower(), value.strip()
        if not sep or not key:
            raise ValueError(f"query term {part!r}: expected key=value or key!=value "
                             f"(keys: {', '.join(MATCHERS)})")
        if key not in MATCHERS:
            raise ValueError(f"query key {key!r} is not known; allowed keys: {', '.join(MATCHERS)}")
        closed = CLOSED_VALUES.get(key)
        if closed and not any(fnmatchcase(v, value.lower()) for v in closed):
            raise ValueError(f"query term {part!r}: {key} is one of {', '.join(closed)}")
        terms.append(Term(key, value, negate))
    return terms


@dataclass(frozen=True)
class Selector:
    tag: str | None = None
    profile: str | None = None
    query: str | None = None

    def terms(self) -> list[Term]:
        terms = [Term("tag", self.tag)] if self.tag else []
        terms += [Term("profile", self.profile)] if self.profile else []
        return terms + (parse_query(self.query) if self.query else [])

    def as_json(self) -> dict[str, Any]:
        return {"tag": self.tag, "profile": self.profile, "query": self.query}


def validate(selector: Mapping[str, Any] | Selector) -> Selector:
    """A checked ``Selector``: known parts only, at least one set, a query that parses."""
    if isinstance(selector, Selector):
        sel = selector
    else:
        unknown = sorted(set(selector) - set(SELECTOR_KEYS))
        if unknown:
            raise ValueError(f"selector part {unknown[0]!r} is not known; use {', '.join(SELECTOR_KEYS)}")
        parts: dict[str, str | None] = {}
        for key in SELECTOR_KEYS:
            value = selector.get(key)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"selector {key}: expected text, got {value!r}")
            parts[key] = (value.strip() or None) if value is not None else None
        sel = Selector(**parts)
    if not (sel.tag or sel.profile or sel.query):
        raise ValueError("a group needs a tag, a profile or a query (all devices: query 'endpoint=*')")
    if not sel.terms():
        raise ValueError(f"query {sel.query!r} has no terms")
    return sel


# -- what the devices are --------------------------------------------------------------------

def _snapshot_core(data: Mapping[str, Any]) -> str:
    value = data.get("/33100/0/4", data.get("core"))
    return str(value) if value is not None else ""


def _snapshot_runtimes(data: Mapping[str, Any]) -> tuple[str, ...]:
    names: list[str] = []
    for key, value in data.items():  # ML capability object: "/33100/0/9/N" = "tflm 2024-06 [cmsis-nn]"
        if key.startswith("/33100/0/9/") and isinstance(value, str) and value.split():
            names.append(value.split()[0])
    runtimes = data.get("runtimes")  # device-object+profile: {"tflm": {...}, ...}
    if isinstance(runtimes, Mapping):
        names.extend(str(k) for k in runtimes)
    return tuple(names)


def _snapshot_profile(data: Mapping[str, Any]) -> str:
    value = data.get("/33100/0/13", data.get("profile"))
    return str(value) if value is not None else ""


def _facts_rows(conn: Connection) -> tuple[list[Any], dict[str, dict[str, Any]]]:
    devices = list(conn.execute(select(DEVICES).order_by(DEVICES.c.endpoint)))
    latest = select(func.max(CAPABILITY_SNAPSHOTS.c.id)).group_by(CAPABILITY_SNAPSHOTS.c.endpoint)
    snaps = conn.execute(select(CAPABILITY_SNAPSHOTS.c.endpoint, CAPABILITY_SNAPSHOTS.c.data)
                         .where(CAPABILITY_SNAPSHOTS.c.id.in_(latest)))
    return devices, {s.endpoint: s.data or {} for s in snaps}


def facts(devices: Iterable[Any], snapshots: Mapping[str, Mapping[str, Any]],
          live: Mapping[str, Any]) -> list[Facts]:
    """One ``Facts`` per device row; ``live`` maps endpoint -> registration (or anything with
    ``lwm2m_version``)."""
    out = []
    for row in devices:
        data = snapshots.get(row.endpoint, {})
        reg = live.get(row.endpoint)
        out.append(Facts(
            endpoint=row.endpoint,
            profile=row.profile or _snapshot_profile(data),
            tags=tuple(t.strip() for t in (row.tags or "").split(",") if t.strip()),
            lwm2m=getattr(reg, "lwm2m_version", None) or row.lwm2m_version or "",
            core=_snapshot_core(data),
            runtimes=_snapshot_runtimes(data),
            registered=reg is not None,
        ))
    return out


def _live(registrations: Any) -> Mapping[str, Any]:
    """``server.registrations`` (its ``by_endpoint``) or a plain endpoint -> registration map."""
    if registrations is None:
        return {}
    return getattr(registrations, "by_endpoint", registrations)  # type: ignore[no-any-return]


async def members(store: Store, registrations: Any, selector: Mapping[str, Any] | Selector) -> list[str]:
    """The endpoints the selector picks, sorted."""
    terms = validate(selector).terms()
    devices, snapshots = await store.read(_facts_rows)
    return sorted(f.endpoint for f in facts(devices, snapshots, _live(registrations))
                  if all(t.matches(f) for t in terms))


# -- stored groups ---------------------------------------------------------------------------

def check_name(name: str) -> str:
    """The group name rule (``tinymlaas.names``; a ValueError naming it)."""
    return names.check("group", name)


async def save_group(store: Store, name: str, selector: Mapping[str, Any] | Selector) -> dict[str, Any]:
    """Create or replace the group ``name``; returns it as stored."""
    check_name(name)
    sel = validate(selector)
    row = {"name": name, "selector": sel.as_json(), "created_at": time.time()}

    def put(conn: Connection) -> None:
        conn.execute(delete(GROUPS).where(GROUPS.c.name == name))
        conn.execute(insert(GROUPS).values(**row))
    await store.write(put)
    return row


async def list_groups(store: Store) -> list[dict[str, Any]]:
    rows = await store.read(lambda c: list(c.execute(select(GROUPS).order_by(GROUPS.c.name))))
    return [dict(r._mapping) for r in rows]


async def get_group(store: Store, name: str) -> dict[str, Any]:
    """The stored group; ``NotFound`` (4.04 / HTTP 404) when there is none by that name."""
    row = await store.read(lambda c: c.execute(select(GROUPS).where(GROUPS.c.name == name)).first())
    if row is None:
        known = [g["name"] for g in await list_groups(store)]
        raise NotFound(f"no group {name!r}; known: {', '.join(known) or 'none (add one with tinymlaas groups add)'}")
    return dict(row._mapping)


__all__ = ["Facts", "MATCHERS", "Selector", "Term", "get_group", "list_groups", "members", "parse_query",
           "save_group", "validate"]
