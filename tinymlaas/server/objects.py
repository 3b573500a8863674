"""Imported object definitions (OMA DDF): stored once per object, loaded once at start.

``import_ddf`` parses an uploaded DDF document (UTF-8 text, at most the upload limit) and
stores each object it defines as that object's own ``<Object>`` element (``ddf.split_ddf``),
replacing an earlier import of the same object id: a file defining 250 objects costs 250
small rows, not 250 copies of the file, and importing it again replaces them. The objects
the server itself relies on (``PROTECTED``: OMA 0-7 and 9, TinyML 33100 and 33101) are
refused unless the operator forces the replacement. ``load`` reads the rows at start: one
small parse per distinct object id, however many imports were made. Rows written before
objects were stored one by one (a whole file per row) are reduced to their object's own
element on the first start that sees them.

Nothing is half-written: a refused or malformed upload changes neither the database nor the
live registry.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from lwm2m.errors import BadRequest, Conflict, RequestEntityTooLarge
from lwm2m.model import ObjectModel, ObjectRegistry
from lwm2m.model.ddf import split_ddf
from tinymlaas.store import Store
from tinymlaas.store.tables import OBJECT_DEFINITIONS

# OMA core objects (Security, Server, Access Control, Device, Connectivity Monitoring,
# Firmware Update, Location, Connectivity Statistics), Software Management, and ours.
PROTECTED = frozenset(range(0, 8)) | {9, 33100, 33101}


class ProtectedObject(Conflict):
    """An import that would redefine a built-in object without ``force`` (HTTP 409)."""


def decode_upload(data: bytes, limit_bytes: int) -> str:
    """The upload as text: at most ``limit_bytes``, UTF-8."""
    if len(data) > limit_bytes:
        raise RequestEntityTooLarge(f"object definition upload of {len(data)} bytes: the limit is {limit_bytes}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"object definition upload is not UTF-8 (byte {exc.start}: "
                         f"{data[exc.start:exc.start + 1].hex()})") from None


def _rows(conn: Connection) -> list[Any]:
    return list(conn.execute(select(OBJECT_DEFINITIONS).order_by(OBJECT_DEFINITIONS.c.object_id)))


async def load(store: Store, registry: ObjectRegistry) -> int:
    """Add every imported object to ``registry``; returns how many."""
    rows = await store.read(_rows)
    fixes: list[tuple[int, str]] = []
    for row in rows:
        pairs = split_ddf(row.xml, source=f"imported object {row.object_id}")
        mine = [(m, x) for m, x in pairs if m.id == row.object_id]
        if not mine:
            continue
        registry.add(mine[0][0])
        if len(pairs) > 1:  # a whole file stored for one object: keep that object's element only
            fixes.append((row.object_id, mine[0][1]))
    if fixes:
        def rewrite(conn: Connection) -> None:
            for object_id, xml in fixes:
                conn.execute(update(OBJECT_DEFINITIONS).where(OBJECT_DEFINITIONS.c.object_id == object_id)
                             .values(xml=xml))
        await store.write(rewrite)
    return len(rows)


async def import_ddf(store: Store, registry: ObjectRegistry, text: str, *, force: bool = False,
                     source: str = "uploaded DDF") -> list[ObjectModel]:
    """Store and register every object ``text`` defines (see the module docstring)."""
    pairs = split_ddf(text, source=source)
    protected = sorted(m.id for m, _ in pairs if m.id in PROTECTED)
    if protected and not force:
        raise ProtectedObject(f"the upload redefines built-in object{'s' if len(protected) > 1 else ''} "
                              f"{', '.join(map(str, protected))}: import with force to replace "
                              f"{'them' if len(protected) > 1 else 'it'}")
    now = time.time()
    table = OBJECT_DEFINITIONS

    def save(conn: Connection) -> None:
        ids = [m.id for m, _ in pairs]
        conn.execute(delete(table).where(table.c.object_id.in_(ids)))
        conn.execute(insert(table), [{"object_id": m.id, "name": m.name, "xml": xml, "imported_at": now}
                                     for m, xml in pairs])
    await store.write(save)
    for model, _ in pairs:
        registry.add(model)
    return [m for m, _ in pairs]
