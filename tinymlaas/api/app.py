"""The admin HTTP API: what the CLI (and scripts) use for live operations on a running server.

FastAPI documents it at ``/docs`` and ``/openapi.json``. Every route but ``/health`` wants
``Authorization: Bearer <token>``. Errors come back as ``{"error": "...", "coap_code": "4.04"}``
with the HTTP status that matches: a 4.xx from the device or from our own checks maps to the
same 4xx, a timeout to 504, any other device failure to 502.

This module only translates HTTP to calls on ``LwM2MServer``; it holds no state.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from typing import Any, AsyncIterator

from aiocoap import Code
from fastapi import Body, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from sqlalchemy import desc, select

from tinymlaas import __version__
from lwm2m.errors import BadRequest, LwM2MError
from lwm2m.jsonvalues import content_from_json, content_to_json
from lwm2m.link_format import format_links
from lwm2m.model.ddf import parse_ddf
from lwm2m.model.values import parse_cli_value
from lwm2m.path import Path
from tinymlaas.server.server import LwM2MServer
from tinymlaas.store.tables import CAPABILITY_SNAPSHOTS, DEVICES, EVENTS, OBJECT_DEFINITIONS, OBSERVED_VALUES


def http_status(code: Code) -> int:
    if code.is_successful():
        return 200
    if code.class_ == 4:
        return 400 + (int(code) & 0x1F)  # 4.04 -> 404, 4.15 -> 415
    return 504 if code == Code.GATEWAY_TIMEOUT else 502


class Target(BaseModel):
    path: str = Field(description="LwM2M path, e.g. /3/0/0")
    format: int | None = Field(None, description="content format number; default: chosen from the device")
    timeout: float = Field(10.0, gt=0, le=600, description="seconds to wait for the device")


class WriteBody(Target):
    values: dict[str, Any] | None = Field(None, description="path -> value (opaque as {'opaque': hex})")
    text: str | None = Field(None, description="one value as typed by a person, parsed by the resource type")
    replace: bool = Field(True, description="PUT (replace) or POST (partial update)")


class ExecuteBody(Target):
    arguments: str = ""


class AttributesBody(Target):
    attributes: dict[str, float | None]


class TagsBody(BaseModel):
    add: list[str] = Field(default_factory=list, description="tags to add")
    remove: list[str] = Field(default_factory=list, description="tags to remove")


class ObserveBody(Target):
    count: int | None = Field(None, ge=1, description="stop after this many notifications")
    duration: float | None = Field(None, gt=0, description="stop after this many seconds")


def create_app(server: LwM2MServer, token: str, deployer: Any = None, campaigns: Any = None) -> FastAPI:
    """The API for ``server``; with a ``Deployer`` (and ``Campaigns``) also the deploy routes."""
    app = FastAPI(title="tinymlaas admin API", version=__version__,
                  description="Live operations on a tinymlaas LwM2M server.")
    bearer = HTTPBearer(auto_error=False)

    def auth(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if creds is None or not hmac.compare_digest(creds.credentials, token):
            raise HTTPException(401, "missing or wrong admin token", headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(LwM2MError)
    async def lwm2m_error(_request: Request, exc: LwM2MError) -> JSONResponse:
        return JSONResponse({"error": exc.message, "coap_code": exc.code.dotted}, status_code=http_status(exc.code))

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "registrations": len(server.registrations),
                "coap": f"coap://{server.address[0]}:{server.address[1]}"}

    @app.get("/devices", dependencies=[Depends(auth)])
    async def devices() -> list[dict[str, Any]]:
        rows = await server.store.read(lambda c: list(c.execute(select(DEVICES).order_by("endpoint"))))
        out = []
        for row in rows:
            reg = server.registrations.by_endpoint.get(row.endpoint)
            out.append({"endpoint": row.endpoint, "registered": reg is not None,
                        "lwm2m_version": reg.lwm2m_version if reg else row.lwm2m_version,
                        "binding": reg.binding if reg else None, "queue_mode": reg.queue_mode if reg else None,
                        "lifetime": reg.lifetime if reg else None, "address": reg.address if reg else None,
                        "last_seen": row.last_seen, "profile": row.profile, "tags": row.tags,
                        "capability_source": row.capability_source})
        return out

    @app.get("/devices/{endpoint}", dependencies=[Depends(auth)])
    async def device(endpoint: str) -> dict[str, Any]:
        def q(c: Any) -> tuple[Any, Any, list[Any], list[Any]]:
            dev = c.execute(select(DEVICES).where(DEVICES.c.endpoint == endpoint)).first()
            snap = c.execute(select(CAPABILITY_SNAPSHOTS)
                             .where(CAPABILITY_SNAPSHOTS.c.endpoint == endpoint)
                             .order_by(desc("taken_at")).limit(1)).first()
            obs = list(c.execute(select(OBSERVED_VALUES).where(OBSERVED_VALUES.c.endpoint == endpoint)))
            evs = list(c.execute(select(EVENTS).where(EVENTS.c.endpoint == endpoint)
                                 .order_by(desc("id")).limit(20)))
            return dev, snap, obs, evs
        dev, snap, obs, evs = await server.store.read(q)
        if dev is None:
            raise HTTPException(404, f"no device {endpoint!r}")
        reg = server.registrations.by_endpoint.get(endpoint)
        return {
            "endpoint": endpoint, "first_seen": dev.first_seen, "last_seen": dev.last_seen,
            "profile": dev.profile, "capability_source": dev.capability_source,
            "registration": reg.summary() if reg else None,
            "capabilities": {"source": snap.source, "taken_at": snap.taken_at, "data": snap.data} if snap else None,
            "observed": {o.path: {"updated_at": o.updated_at, "values": o.data} for o in obs},
            "observations": [o.summary() for o in server.observations.of(endpoint)],
            "queued_requests": server.queue.held(endpoint),
            "events": [{"ts": e.ts, "kind": e.kind, "detail": e.detail} for e in evs],
        }

    @app.post("/devices/{endpoint}/tags", dependencies=[Depends(auth)])
    async def tags(endpoint: str, body: TagsBody) -> dict[str, Any]:
        bad = [t for t in body.add if not t.strip() or "," in t]
        if bad:
            raise BadRequest(f"tags must be non-empty and without commas: {bad}")

        def change(c: Any) -> list[str] | None:
            row = c.execute(select(DEVICES.c.tags).where(DEVICES.c.endpoint == endpoint)).first()
            if row is None:
                return None
            have = [t for t in (row.tags or "").split(",") if t and t not in body.remove]
            have += [t.strip() for t in body.add if t.strip() not in have]
            c.execute(DEVICES.update().where(DEVICES.c.endpoint == endpoint).values(tags=",".join(have)))
            return have
        result = await server.store.write(change)
        if result is None:
            raise HTTPException(404, f"no device {endpoint!r}")
        return {"endpoint": endpoint, "tags": result}

    @app.post("/devices/{endpoint}/read", dependencies=[Depends(auth)])
    async def read(endpoint: str, body: Target) -> dict[str, Any]:
        content = await server.read(endpoint, Path.parse(body.path), fmt=body.format, timeout=body.timeout)
        return {"content": content_to_json(content)}

    @app.post("/devices/{endpoint}/write", dependencies=[Depends(auth)])
    async def write(endpoint: str, body: WriteBody) -> dict[str, Any]:
        path = Path.parse(body.path)
        if (body.values is None) == (body.text is None):
            raise BadRequest("write needs exactly one of 'values' or 'text'")
        if body.text is not None:
            if path.depth < 3:
                raise BadRequest(f"'text' writes one resource; {path} is not a resource path")
            content = {path: parse_cli_value(server.objects, path, body.text)}
        else:
            content = content_from_json(body.values or {})
        await server.write(endpoint, path, content, body.replace, fmt=body.format, timeout=body.timeout)
        return {"status": "changed"}

    @app.post("/devices/{endpoint}/execute", dependencies=[Depends(auth)])
    async def execute(endpoint: str, body: ExecuteBody) -> dict[str, Any]:
        await server.execute(endpoint, Path.parse(body.path), body.arguments, timeout=body.timeout)
        return {"status": "changed"}

    @app.post("/devices/{endpoint}/discover", dependencies=[Depends(auth)])
    async def discover(endpoint: str, body: Target) -> dict[str, Any]:
        links = await server.discover(endpoint, Path.parse(body.path), timeout=body.timeout)
        return {"links": format_links(links)}

    @app.post("/devices/{endpoint}/write-attributes", dependencies=[Depends(auth)])
    async def write_attributes(endpoint: str, body: AttributesBody) -> dict[str, Any]:
        await server.write_attributes(endpoint, Path.parse(body.path), body.attributes, timeout=body.timeout)
        return {"status": "changed"}

    @app.post("/devices/{endpoint}/create", dependencies=[Depends(auth)])
    async def create(endpoint: str, body: WriteBody) -> dict[str, Any]:
        location = await server.create(endpoint, Path.parse(body.path), content_from_json(body.values or {}),
                                       fmt=body.format, timeout=body.timeout)
        return {"status": "created", "location": location}

    @app.post("/devices/{endpoint}/delete", dependencies=[Depends(auth)])
    async def delete(endpoint: str, body: Target) -> dict[str, Any]:
        await server.delete(endpoint, Path.parse(body.path), timeout=body.timeout)
        return {"status": "deleted"}

    @app.post("/devices/{endpoint}/observe", dependencies=[Depends(auth)])
    async def observe(endpoint: str, body: ObserveBody) -> StreamingResponse:
        path = Path.parse(body.path)
        obs = await server.observations.observe(endpoint, path, fmt=body.format, timeout=body.timeout)
        queue = server.observations.subscribe(obs)

        async def lines() -> AsyncIterator[bytes]:
            yield _line({"endpoint": endpoint, "path": str(path), "content": content_to_json(obs.latest)})
            sent, end = 0, (time.monotonic() + body.duration) if body.duration else None
            while body.count is None or sent < body.count:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    break
                try:
                    content = await asyncio.wait_for(queue.get(), left)
                except asyncio.TimeoutError:
                    break
                if content is None:
                    yield _line({"endpoint": endpoint, "path": str(path), "ended": True})
                    return
                sent += 1
                yield _line({"endpoint": endpoint, "path": str(path), "content": content_to_json(content)})

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @app.get("/devices/{endpoint}/observations", dependencies=[Depends(auth)])
    async def observations(endpoint: str) -> list[dict[str, Any]]:
        return [o.summary() for o in server.observations.of(endpoint)]

    @app.delete("/devices/{endpoint}/observations", dependencies=[Depends(auth)])
    async def cancel_observation(endpoint: str, path: str) -> dict[str, Any]:
        server.observations.cancel(endpoint, Path.parse(path))
        return {"status": "cancelled"}

    @app.get("/objects", dependencies=[Depends(auth)])
    async def objects() -> list[dict[str, Any]]:
        return [{"id": o.id, "name": o.name, "version": o.version, "multiple": o.multiple,
                 "mandatory": o.mandatory, "resources": len(o.resources)} for o in server.objects]

    @app.post("/objects", dependencies=[Depends(auth)])
    async def import_objects(xml: str = Body(..., media_type="application/xml")) -> dict[str, Any]:
        models = parse_ddf(xml, source="uploaded DDF")
        now = time.time()
        table = OBJECT_DEFINITIONS

        def save(c: Any) -> None:
            for m in models:
                c.execute(table.delete().where(table.c.object_id == m.id))
                c.execute(table.insert().values(object_id=m.id, name=m.name, xml=xml, imported_at=now))
        await server.store.write(save)
        for m in models:
            server.objects.add(m)
        return {"imported": [{"id": m.id, "name": m.name, "resources": len(m.resources)} for m in models]}

    @app.get("/events", dependencies=[Depends(auth)])
    async def events(endpoint: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        t = EVENTS
        q = select(t).order_by(desc("id")).limit(min(max(limit, 1), 10000))
        if endpoint:
            q = q.where(t.c.endpoint == endpoint)
        rows = await server.store.read(lambda c: list(c.execute(q)))
        return [{"ts": r.ts, "endpoint": r.endpoint, "kind": r.kind, "detail": r.detail} for r in rows]

    if deployer is not None:
        from tinymlaas.api import deploy_routes

        deploy_routes.register(app, deployer, [Depends(auth)])
    if campaigns is not None:
        from tinymlaas.api import campaign_routes

        campaign_routes.register(app, campaigns, [Depends(auth)])
    from tinymlaas.api import security_routes

    security_routes.register(app, server, deployer, [Depends(auth)])
    return app


def _line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj) + "\n").encode()
