"""The live registration table (in memory) and the SQL that makes it durable.

Memory is the truth for routing requests; the database is the truth across restarts. A
``Registration`` is a small slotted object (well under 1 KB plus its link text) so that a
server holds tens of thousands of them. The parsed link summary (root path, content
formats) is kept; the per-object view is parsed from ``links`` when someone asks.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from sqlalchemy import JSON, Connection, bindparam, select, text

from lwm2m.link_format import RegisteredObject, parse_links, registration_objects
from tinymlaas.store import tables
from tinymlaas.store.store import Row, Statement


# The columns of a stored registration (``tables.Registration``), in insert order.
REG_COLUMNS = ("id", "endpoint", "address", "lifetime", "binding", "lwm2m_version", "queue_mode", "sms",
               "links", "registered_at", "updated_at")


@dataclass(slots=True, eq=False)
class Registration:
    id: str
    endpoint: str
    address: str
    lifetime: int
    binding: str
    lwm2m_version: str
    queue_mode: bool
    sms: str | None
    links: str
    registered_at: float
    updated_at: float
    root_path: str = ""
    content_formats: tuple[int, ...] = ()
    remote: Any = field(default=None, repr=False)  # the aiocoap remote it last spoke from
    last_seen: float = 0.0

    @property
    def expires_at(self) -> float:
        return self.updated_at + self.lifetime

    def objects(self) -> dict[int, RegisteredObject]:
        return registration_objects(parse_links(self.links))[2]

    def row(self) -> dict[str, Any]:
        """The stored columns (``REG_COLUMNS``) of this registration."""
        return {k: getattr(self, k) for k in REG_COLUMNS}

    def summary(self) -> dict[str, Any]:
        """What the API shows of a registration."""
        out = self.row()
        out["expires_at"] = self.expires_at
        out["root_path"] = self.root_path
        out["content_formats"] = list(self.content_formats)
        out["objects"] = {str(k): v for k, v in self.objects().items()}
        return out

    @classmethod
    def from_row(cls, row: Any) -> "Registration":
        reg = cls(**{k: getattr(row, k) for k in REG_COLUMNS})
        reg.root_path, reg.content_formats, _ = registration_objects(parse_links(reg.links))
        reg.last_seen = reg.updated_at
        return reg


class RegistrationTable:
    """Registrations by id and by endpoint, with an expiry heap (lazy deletion)."""

    def __init__(self) -> None:
        self.by_id: dict[str, Registration] = {}
        self.by_endpoint: dict[str, Registration] = {}
        self._expiry: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self.by_id)

    def __iter__(self) -> Iterator[Registration]:
        return iter(list(self.by_id.values()))

    def put(self, reg: Registration) -> Registration | None:
        """Add or replace; returns the registration it replaced for the same endpoint."""
        old = self.by_endpoint.get(reg.endpoint)
        if old is not None and old.id != reg.id:
            self.by_id.pop(old.id, None)
        self.by_id[reg.id] = reg
        self.by_endpoint[reg.endpoint] = reg
        self.touch(reg)
        return old if old is not None and old.id != reg.id else None

    def touch(self, reg: Registration) -> None:
        heapq.heappush(self._expiry, (reg.expires_at, reg.id))

    def remove(self, reg: Registration) -> None:
        if self.by_id.get(reg.id) is reg:
            del self.by_id[reg.id]
        if self.by_endpoint.get(reg.endpoint) is reg:
            del self.by_endpoint[reg.endpoint]

    def expired(self, now: float | None = None) -> list[Registration]:
        """Pop every registration whose lifetime ran out (they stay in the table)."""
        now = time.time() if now is None else now
        out: list[Registration] = []
        while self._expiry and self._expiry[0][0] <= now:
            _, rid = heapq.heappop(self._expiry)
            reg = self.by_id.get(rid)
            if reg is not None and reg.expires_at <= now:
                out.append(reg)
        return out


# -- rows for the store (batched with executemany) -------------------------------------

# Upserts in the syntax SQLite (3.24+) and PostgreSQL share.
UPSERT_REGISTRATION = Statement("upsert registration", text(
    f"INSERT INTO registrations ({', '.join(REG_COLUMNS)}) VALUES ({', '.join(':' + c for c in REG_COLUMNS)}) "
    f"ON CONFLICT (endpoint) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in REG_COLUMNS if c != 'endpoint')}"))
DELETE_REGISTRATION = Statement("delete registration", text("DELETE FROM registrations WHERE id = :id"), key="id")
TOUCH_DEVICE = Statement("upsert device", text(
    "INSERT INTO devices (endpoint, first_seen, last_seen, lwm2m_version, tags) "
    "VALUES (:endpoint, :now, :now, :lwm2m_version, '') "
    "ON CONFLICT (endpoint) DO UPDATE SET last_seen = excluded.last_seen, lwm2m_version = excluded.lwm2m_version"))
INSERT_EVENT = Statement("insert event", text(
    "INSERT INTO events (ts, endpoint, kind, detail) VALUES (:ts, :endpoint, :kind, :detail)"
).bindparams(bindparam("detail", type_=JSON)), json=("detail",))


def event_row(endpoint: str, kind: str, **detail: Any) -> Row:
    return Row(INSERT_EVENT, {"ts": time.time(), "endpoint": endpoint, "kind": kind, "detail": detail})


def registration_rows(reg: Registration, now: float) -> list[Row]:
    return [Row(UPSERT_REGISTRATION, reg.row()),
            Row(TOUCH_DEVICE, {"endpoint": reg.endpoint, "now": now, "lwm2m_version": reg.lwm2m_version})]


def removal_rows(reg: Registration, kind: str) -> list[Row]:
    return [Row(DELETE_REGISTRATION, {"id": reg.id}),
            event_row(reg.endpoint, kind, registration=reg.id)]


def sql_load(conn: Connection) -> list[Registration]:
    return [Registration.from_row(r) for r in conn.execute(select(tables.REGISTRATIONS))]
