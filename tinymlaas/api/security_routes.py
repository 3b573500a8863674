"""Admin API routes for security: device credentials, bootstrap configurations, signing keys.

Credentials: list (never a key), add, bulk import (CSV), rotate (pending until the device's
next Bootstrap-Finish, ``trigger`` makes it bootstrap now through Bootstrap-Request Trigger
``/1/0/9``; or ``now``), revoke, remove. Bodies that carry a key are read as plain JSON and
checked here, so a malformed one is refused naming the field, never echoing its value (FastAPI's
validation errors repeat the input). Bootstrap: configurations per endpoint, group or default,
and each endpoint's last bootstrap outcome. Signing keys: status and rotation with an overlap,
pushing the new trust anchor to registered devices.

Translation only: the work is in ``tinymlaas.security`` and ``tinymlaas.bootstrap``.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel, Field
from sqlalchemy import desc, select

from lwm2m.errors import BadRequest, LwM2MError
from lwm2m.path import Path
from tinymlaas.bootstrap import configs
from tinymlaas.security.credentials import parse_key
from tinymlaas.deploy.package_trust import push_anchor
from tinymlaas.store.tables import EVENTS


class ConfigBody(BaseModel):
    scope: str = Field(description="endpoint, group or default")
    target: str = Field("", description="the endpoint or group name (empty for default)")
    server_uri: str = Field(description="coaps://host:5684 (PSK) or coap://host:5683 (NoSec)")
    security_mode: str = Field("psk", description="psk or nosec")
    short_server_id: int = 1
    lifetime: int = 86400
    binding: str = "U"
    trust_anchor: bool = Field(True, description="write the package-signing key(s) to /33100/0/12")


class RotateKeysBody(BaseModel):
    overlap_s: float | None = Field(None, ge=0, description="seconds devices trust both keys; default: settings")
    push: bool = Field(True, description="write the new trust anchor to every registered device now")


async def _json(request: Request, fields: dict[str, type]) -> dict[str, Any]:
    try:
        data = json.loads(await request.body() or b"{}")
    except ValueError:
        raise BadRequest("request body is not JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; fields: {', '.join(fields)}")
    for name, kind in fields.items():
        if name in data and data[name] is not None and not isinstance(data[name], kind):
            raise BadRequest(f"field {name!r}: expected {kind.__name__}")
    return data


def register(app: FastAPI, server: Any, deployer: Any, deps: list[Any]) -> None:
    creds = server.security.credentials

    @app.get("/security", dependencies=deps)
    async def security() -> dict[str, Any]:
        s = server.security
        coaps = s.coaps
        return {"coaps": "coaps://%s:%d" % coaps.address if coaps else None, "nosec": s.settings.nosec,
                "nosec_accepted": s.nosec_accepted, "nosec_other_address": s.settings.nosec_other_address,
                "sessions": coaps.engine.sessions if coaps else 0,
                "handshakes": dict(coaps.engine.stats) if coaps else {},
                "credentials": len(creds.by_endpoint)}

    @app.get("/credentials", dependencies=deps)
    async def list_credentials(purpose: str | None = None) -> list[dict[str, Any]]:
        return creds.list(purpose)  # type: ignore[no-any-return]

    @app.post("/credentials", dependencies=deps)
    async def add_credential(request: Request) -> dict[str, Any]:
        d = await _json(request, {"endpoint": str, "identity": str, "key": str, "purpose": str, "replace": bool})
        for name in ("endpoint", "key"):
            if not d.get(name):
                raise BadRequest(f"field {name!r} is required")
        return await creds.add(d["endpoint"], d.get("identity") or d["endpoint"], parse_key(d["key"]),  # type: ignore[no-any-return]
                               d.get("purpose") or "dm", bool(d.get("replace")))

    @app.post("/credentials/import", dependencies=deps)
    async def import_credentials(request: Request) -> dict[str, Any]:
        d = await _json(request, {"csv": str, "replace": bool})
        return await creds.import_csv(d.get("csv") or "", bool(d.get("replace")))  # type: ignore[no-any-return]

    @app.post("/credentials/{endpoint}/rotate", dependencies=deps)
    async def rotate_credential(endpoint: str, request: Request) -> dict[str, Any]:
        d = await _json(request, {"purpose": str, "key": str, "now": bool, "trigger": bool})
        key = parse_key(d["key"]) if d.get("key") else None
        out = await creds.rotate(endpoint, d.get("purpose") or "dm", key, bool(d.get("now")))
        if d.get("trigger"):
            try:
                await server.execute(endpoint, Path(1, 0, 9), timeout=10)
                out["triggered"] = True
            except LwM2MError as exc:
                out["triggered"] = False
                out["trigger_error"] = exc.message
        return out  # type: ignore[no-any-return]

    @app.post("/credentials/{endpoint}/revoke", dependencies=deps)
    async def revoke_credential(endpoint: str, purpose: str = "dm") -> dict[str, Any]:
        return await creds.revoke(endpoint, purpose)  # type: ignore[no-any-return]

    @app.delete("/credentials/{endpoint}", dependencies=deps)
    async def remove_credential(endpoint: str, purpose: str = "dm") -> dict[str, Any]:
        await creds.remove(endpoint, purpose)
        return {"removed": endpoint, "purpose": purpose}

    @app.get("/bootstrap/configs", dependencies=deps)
    async def bootstrap_configs() -> list[dict[str, Any]]:
        return await configs.list_configs(server.store)

    @app.put("/bootstrap/configs", dependencies=deps)
    async def save_bootstrap_config(body: ConfigBody) -> dict[str, Any]:
        return await configs.save(server.store, configs.BootstrapConfig(**body.model_dump()))

    @app.delete("/bootstrap/configs", dependencies=deps)
    async def remove_bootstrap_config(scope: str, target: str = "") -> dict[str, Any]:
        await configs.remove(server.store, scope, target)
        return {"removed": f"{scope}:{target}"}

    @app.get("/bootstrap/{endpoint}", dependencies=deps)
    async def bootstrap_outcomes(endpoint: str, limit: int = 10) -> list[dict[str, Any]]:
        q = (select(EVENTS).where(EVENTS.c.endpoint == endpoint, EVENTS.c.kind == "bootstrap")
             .order_by(desc(EVENTS.c.id)).limit(limit))
        rows = await server.store.read(lambda c: list(c.execute(q)))
        return [{"ts": r.ts, **(r.detail or {})} for r in rows]

    if deployer is None:
        return

    @app.get("/signing-keys", dependencies=deps)
    async def signing_keys() -> dict[str, Any]:
        return deployer.key.status()  # type: ignore[no-any-return]

    @app.post("/signing-keys/rotate", dependencies=deps)
    async def rotate_signing_key(body: RotateKeysBody) -> dict[str, Any]:
        overlap = body.overlap_s if body.overlap_s is not None else server.security.settings.signing_overlap_s
        out = deployer.key.rotate(overlap)
        if body.push:
            out["pushed"] = await push_anchor(server, deployer.key.anchor)
        return out  # type: ignore[no-any-return]
