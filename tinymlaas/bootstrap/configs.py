"""Bootstrap configurations: what the bootstrap server gives a device, per endpoint, per group,
or for every device.

A ``BootstrapConfig`` names the LwM2M server the device is sent to (its URI and security
mode), the account's short server id, lifetime and binding, and whether the package-signing
trust anchor is written. ``resolve`` picks the one for an endpoint: its own, else the first
group (by name) whose selector matches it (``tinymlaas.deploy.groups``: a production batch is
typically ``query endpoint=batch7-*``), else the default; None when there is none.

Rows live in ``bootstrap_configs``; no keys are stored here (the PSK comes from the
credentials at bootstrap time).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from lwm2m.bootstrap import Account, SecurityMode
from lwm2m.errors import BadRequest, NotFound
from tinymlaas.deploy import groups
from tinymlaas.store.store import Store
from tinymlaas.store.tables import BOOTSTRAP_CONFIGS, CAPABILITY_SNAPSHOTS, DEVICES, GROUPS

SCOPES = ("endpoint", "group", "default")
MODES = {"psk": SecurityMode.PSK, "nosec": SecurityMode.NOSEC}


@dataclass(frozen=True)
class BootstrapConfig:
    scope: str
    target: str
    server_uri: str
    security_mode: str = "psk"
    short_server_id: int = 1
    lifetime: int = 86400
    binding: str = "U"
    trust_anchor: bool = True

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise BadRequest(f"bootstrap scope {self.scope!r}: expected endpoint, group or default")
        if (self.scope == "default") != (self.target == ""):
            raise BadRequest("a default bootstrap configuration has no target; endpoint and group ones need one")
        if self.security_mode not in MODES:
            raise BadRequest(f"security mode {self.security_mode!r}: expected psk or nosec")
        if not 1 <= self.short_server_id <= 65534:
            raise BadRequest(f"short server id {self.short_server_id}: expected 1..65534")
        if self.lifetime < 1:
            raise BadRequest(f"lifetime {self.lifetime}: must be positive")
        try:
            self.account(b"x" if self.mode == SecurityMode.PSK else b"", b"x" if self.mode == SecurityMode.PSK else b"")
        except ValueError as exc:
            raise BadRequest(str(exc)) from None

    @property
    def mode(self) -> SecurityMode:
        return MODES[self.security_mode]

    def account(self, identity: bytes = b"", secret: bytes = b"") -> Account:
        return Account(self.server_uri, self.mode, identity, secret, self.short_server_id, self.lifetime, self.binding)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _row_config(row: Any) -> BootstrapConfig:
    return BootstrapConfig(row.scope, row.target, row.server_uri, row.security_mode, row.short_server_id,
                           row.lifetime, row.binding, row.trust_anchor)


async def save(store: Store, config: BootstrapConfig) -> dict[str, Any]:
    if config.scope == "group":
        row = await store.read(lambda c: c.execute(select(GROUPS).where(GROUPS.c.name == config.target)).first())
        if row is None:
            raise NotFound(f"no group {config.target!r} (add it with tinymlaas groups add)")
    now = time.time()
    values = {**config.as_json(), "created_at": now, "updated_at": now}

    def put(conn: Connection) -> None:
        conn.execute(delete(BOOTSTRAP_CONFIGS).where(BOOTSTRAP_CONFIGS.c.scope == config.scope,
                                                     BOOTSTRAP_CONFIGS.c.target == config.target))
        conn.execute(insert(BOOTSTRAP_CONFIGS).values(**values))
    await store.write(put)
    return config.as_json()


async def remove(store: Store, scope: str, target: str) -> None:
    def drop(conn: Connection) -> int:
        return int(conn.execute(delete(BOOTSTRAP_CONFIGS).where(BOOTSTRAP_CONFIGS.c.scope == scope,
                                                                BOOTSTRAP_CONFIGS.c.target == target)).rowcount)
    if not await store.write(drop):
        raise NotFound(f"no {scope} bootstrap configuration {target!r}")


async def list_configs(store: Store) -> list[dict[str, Any]]:
    rows = await store.read(lambda c: list(c.execute(select(BOOTSTRAP_CONFIGS).order_by(
        BOOTSTRAP_CONFIGS.c.scope, BOOTSTRAP_CONFIGS.c.target))))
    return [_row_config(r).as_json() for r in rows]


def _resolve(conn: Connection, endpoint: str, live: Any) -> BootstrapConfig | None:
    rows = {(r.scope, r.target): r for r in conn.execute(select(BOOTSTRAP_CONFIGS))}
    own = rows.get(("endpoint", endpoint))
    if own is not None:
        return _row_config(own)
    group_rows = sorted((t, r) for (s, t), r in rows.items() if s == "group")
    if group_rows:
        found = conn.execute(select(DEVICES).where(DEVICES.c.endpoint == endpoint)).first()
        device = found or SimpleNamespace(endpoint=endpoint, profile=None, tags="", lwm2m_version="")
        snap = conn.execute(select(CAPABILITY_SNAPSHOTS.c.data).where(CAPABILITY_SNAPSHOTS.c.endpoint == endpoint)
                            .order_by(CAPABILITY_SNAPSHOTS.c.id.desc())).first()
        [facts] = groups.facts([device], {endpoint: (snap.data if snap else None) or {}}, live)
        selectors = {g.name: g.selector for g in conn.execute(select(GROUPS))}
        for name, row in group_rows:
            selector = selectors.get(name)
            if selector and all(t.matches(facts) for t in groups.validate(selector).terms()):
                return _row_config(row)
    default = rows.get(("default", ""))
    return _row_config(default) if default is not None else None


async def resolve(store: Store, endpoint: str, live: Any = None) -> BootstrapConfig | None:
    """The configuration for ``endpoint``: its own, a matching group's, or the default."""
    return await store.read(lambda c: _resolve(c, endpoint, live or {}))
