"""The admin HTTP API: what the CLI (and scripts) use for live operations on a running server.

FastAPI documents it at ``/docs`` and ``/openapi.json``. Every route but ``/health`` wants
``Authorization: Bearer <token>`` with a token whose scopes cover the route's
(``scopes.ROUTES``); every state-changing call is written to the audit table
(``audit.AuditMiddleware``). Errors come back as ``{"error": "...", "coap_code": "4.04"}``
with the HTTP status that matches: a 4.xx from the device or from our own checks maps to the
same 4xx, a timeout to 504, any other device failure to 502. Input is validated before
anything is done (``validation``: JSON without NaN/Infinity, bounded numbers and ids, a body
size limit): bad input is a 4xx, never a 500.

This module only translates HTTP to calls on ``LwM2MServer``; it holds no state.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncIterator, Awaitable, TypeVar

from aiocoap import Code
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import Field
from sqlalchemy import desc, select

from tinymlaas import __version__
from lwm2m.errors import BadRequest, LwM2MError
from lwm2m.jsonvalues import content_from_json, content_to_json
from lwm2m.link_format import format_links
from lwm2m.model.values import parse_cli_value
from lwm2m.path import Path
from tinymlaas.server import operations as ops
from tinymlaas.api import admin_routes
from tinymlaas.api.audit import AuditMiddleware
from tinymlaas.api.scopes import authorizer
from tinymlaas.api.tokens import Tokens
from tinymlaas.api.validation import Body, Limit, Name, StrictJSONRoute
from tinymlaas.server import objects as object_imports
from tinymlaas.server.server import LwM2MServer
from tinymlaas.store.tables import CAPABILITY_SNAPSHOTS, DEVICES, EVENTS, OBSERVED_VALUES

T = TypeVar("T")
DISCONNECT_POLL_S = 0.5  # how often a device operation checks that its HTTP client is still there
MAX_PATH = 256  # characters of an LwM2M path
MAX_TEXT = 64 * 1024  # characters of a value typed by a person, execute arguments
MAX_VALUES = 10_000  # paths in one write


def http_status(code: Code) -> int:
    if code.is_successful():
        return 200
    if code.class_ == 4:
        return 400 + (int(code) & 0x1F)  # 4.04 -> 404, 4.15 -> 415
    return 504 if code == Code.GATEWAY_TIMEOUT else 502


class Target(Body):
    path: str = Field(max_length=MAX_PATH, description="LwM2M path, e.g. /3/0/0")
    format: int | None = Field(None, ge=0, le=65535,
                               description="content format number; default: chosen from the device")
    timeout: float = Field(10.0, gt=0, le=600, description="seconds to wait for the device")
    hold: float | None = Field(None, gt=0, le=7 * 86400, description="seconds to hold the request for a sleeping "
                               "queue-mode device (default: the timeout); held requests survive a server restart")
    wait: bool = Field(True, description="false: answer at once with the held request's id when the device sleeps")


class WriteBody(Target):
    values: dict[str, Any] | None = Field(None, max_length=MAX_VALUES,
                                          description="path -> value (opaque as {'opaque': hex})")
    text: str | None = Field(None, max_length=MAX_TEXT,
                             description="one value as typed by a person, parsed by the resource type")
    replace: bool = Field(True, description="PUT (replace) or POST (partial update)")


class ExecuteBody(Target):
    arguments: str = Field("", max_length=MAX_TEXT)


class AttributesBody(Target):
    attributes: dict[str, float | None] = Field(max_length=16)


class TagsBody(Body):
    add: list[str] = Field(default_factory=list, max_length=100, description="tags to add")
    remove: list[str] = Field(default_factory=list, max_length=100, description="tags to remove")


class ObserveBody(Target):
    count: int | None = Field(None, ge=1, le=10_000_000, description="stop after this many notifications")
    duration: float | None = Field(None, gt=0, le=31 * 86400, description="stop after this many seconds")


def create_app(server: LwM2MServer, token: str, deployer: Any = None, campaigns: Any = None,
               metrics: bool = False) -> FastAPI:
    """The API for ``server``; with a ``Deployer`` (and ``Campaigns``) also the deploy routes;
    with ``metrics`` also ``GET /metrics`` (``tinymlaas.api.metrics``).

    ``token`` is the server's own (``admin`` scope); others are made through ``/tokens``."""
    tokens = Tokens(server.store)
    tokens.start(token)
    app = FastAPI(title="tinymlaas admin API", version=__version__,
                  description="Live operations on a tinymlaas LwM2M server.",
                  dependencies=[Depends(authorizer(tokens))], max_body_size=server.limits.api_body_max_bytes)
    app.router.route_class = StrictJSONRoute
    app.add_middleware(AuditMiddleware, store=server.store)

    def failed(request: Request, message: str) -> None:
        request.state.error = message  # for the audit row

    @app.exception_handler(LwM2MError)
    async def lwm2m_error(request: Request, exc: LwM2MError) -> JSONResponse:
        failed(request, exc.message)
        return JSONResponse({"error": exc.message, "coap_code": exc.code.dotted}, status_code=http_status(exc.code))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        failed(request, str(exc.detail))
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        failed(request, "; ".join(f"{'.'.join(str(x) for x in e.get('loc', []))}: {e.get('msg')}"
                                  for e in exc.errors())[:1024])
        return await request_validation_exception_handler(request, exc)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "registrations": len(server.registrations),
                "coap": f"coap://{server.address[0]}:{server.address[1]}"}

    @app.get("/devices")
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

    @app.get("/devices/{endpoint}")
    async def device(endpoint: Name) -> dict[str, Any]:
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
            "settings": server.device_settings.get(endpoint).as_json(),
            "events": [{"ts": e.ts, "kind": e.kind, "detail": e.detail} for e in evs],
        }

    @app.post("/devices/{endpoint}/tags")
    async def tags(endpoint: Name, body: TagsBody) -> dict[str, Any]:
        bad = [t for t in body.add if not t.strip() or "," in t or len(t) > 64]
        if bad:
            raise BadRequest(f"tags must be 1-64 characters without commas: {bad[:10]}")

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

    async def perform(request: Request, endpoint: str, op: ops.Operation, body: Target) -> tuple[str, Any]:
        """Run an operator's operation: ("done", result), or ("held", id) without ``wait``; cancelled
        (with its transfer) when the HTTP client goes away."""
        if not body.wait:
            return await server.device_client.submit(endpoint, op, fmt=body.format, timeout=body.timeout,
                                                     hold_s=body.hold or 3600.0)
        return "done", await while_connected(request, server.send(endpoint, op, fmt=body.format, timeout=body.timeout,
                                                                  queue_deadline=body.hold, durable=True))

    def held(state: str, result: Any) -> dict[str, Any] | None:
        return {"status": "held", "id": result} if state == "held" else None

    @app.post("/devices/{endpoint}/read")
    async def read(request: Request, endpoint: Name, body: Target) -> dict[str, Any]:
        state, content = await perform(request, endpoint, ops.Read(Path.parse(body.path)), body)
        return held(state, content) or {"content": content_to_json(content)}

    @app.post("/devices/{endpoint}/write")
    async def write(request: Request, endpoint: Name, body: WriteBody) -> dict[str, Any]:
        path = Path.parse(body.path)
        if (body.values is None) == (body.text is None):
            raise BadRequest("write needs exactly one of 'values' or 'text'")
        if body.text is not None:
            if path.depth < 3:
                raise BadRequest(f"'text' writes one resource; {path} is not a resource path")
            content = {path: parse_cli_value(server.objects, path, body.text)}
        else:
            content = content_from_json(body.values or {})
        server.check_write(path, content)
        state, result = await perform(request, endpoint, ops.Write(path, content, body.replace), body)
        return held(state, result) or {"status": "changed"}

    @app.post("/devices/{endpoint}/execute")
    async def execute(request: Request, endpoint: Name, body: ExecuteBody) -> dict[str, Any]:
        state, result = await perform(request, endpoint, ops.Execute(Path.parse(body.path), body.arguments), body)
        return held(state, result) or {"status": "changed"}

    @app.post("/devices/{endpoint}/discover")
    async def discover(request: Request, endpoint: Name, body: Target) -> dict[str, Any]:
        links = await while_connected(request, server.discover(endpoint, Path.parse(body.path), timeout=body.timeout))
        return {"links": format_links(links)}

    @app.post("/devices/{endpoint}/write-attributes")
    async def write_attributes(request: Request, endpoint: Name, body: AttributesBody) -> dict[str, Any]:
        await while_connected(request, server.write_attributes(endpoint, Path.parse(body.path), body.attributes,
                                                               timeout=body.timeout))
        return {"status": "changed"}

    @app.post("/devices/{endpoint}/create")
    async def create(request: Request, endpoint: Name, body: WriteBody) -> dict[str, Any]:
        location = await while_connected(request, server.create(endpoint, Path.parse(body.path),
                                                                content_from_json(body.values or {}),
                                                                fmt=body.format, timeout=body.timeout))
        return {"status": "created", "location": location}

    @app.post("/devices/{endpoint}/delete")
    async def delete(request: Request, endpoint: Name, body: Target) -> dict[str, Any]:
        await while_connected(request, server.delete(endpoint, Path.parse(body.path), timeout=body.timeout))
        return {"status": "deleted"}

    @app.post("/devices/{endpoint}/observe")
    async def observe(endpoint: Name, body: ObserveBody) -> StreamingResponse:
        path = Path.parse(body.path)
        obs = await server.observations.observe(endpoint, path, fmt=body.format, timeout=body.timeout)
        queue = server.observations.subscribe(obs)

        async def lines() -> AsyncIterator[bytes]:
            """The first value, then notifications; with a count or a duration the observation is
            cancelled on the device when they are reached (unless someone else still follows it)."""
            try:
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
                if server.observations.unsubscribe(obs, queue):
                    yield _line({"endpoint": endpoint, "path": str(path), "cancelled": True})
            finally:  # the client went away (Ctrl-C): stop following, and cancel if it was the last
                server.observations.unsubscribe(obs, queue)

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @app.get("/devices/{endpoint}/observations")
    async def observations(endpoint: Name) -> list[dict[str, Any]]:
        return [o.summary() for o in server.observations.of(endpoint)]

    @app.delete("/devices/{endpoint}/observations")
    async def cancel_observation(endpoint: Name, path: str = Query(max_length=MAX_PATH)) -> dict[str, Any]:
        server.observations.cancel(endpoint, Path.parse(path))
        return {"status": "cancelled"}

    @app.get("/objects")
    async def objects() -> list[dict[str, Any]]:
        return [{"id": o.id, "name": o.name, "version": o.version, "multiple": o.multiple,
                 "mandatory": o.mandatory, "resources": len(o.resources)} for o in server.objects]

    upload = server.limits.object_upload_max_bytes

    @app.post("/objects", max_body_size=upload, openapi_extra={"requestBody": {
        "required": True, "content": {"application/xml": {"schema": {"type": "string", "maxLength": upload}}}}})
    async def import_objects(request: Request, force: bool = Query(
            False, description="replace built-in objects (OMA 0-7, 9; TinyML 33100, 33101)")) -> dict[str, Any]:
        """Import an OMA DDF file (UTF-8): each object it defines is stored once, replacing an earlier import."""
        text = object_imports.decode_upload(await request.body(), upload)
        models = await object_imports.import_ddf(server.store, server.objects, text, force=force)
        return {"imported": [{"id": m.id, "name": m.name, "resources": len(m.resources)} for m in models]}

    @app.get("/events")
    async def events(endpoint: str | None = Query(None, max_length=255), limit: Limit = 100) -> list[dict[str, Any]]:
        t = EVENTS
        q = select(t).order_by(desc("id")).limit(limit)
        if endpoint:
            q = q.where(t.c.endpoint == endpoint)
        rows = await server.store.read(lambda c: list(c.execute(q)))
        return [{"ts": r.ts, "endpoint": r.endpoint, "kind": r.kind, "detail": r.detail} for r in rows]

    from tinymlaas.api import device_routes

    device_routes.register(app, server, [])
    if deployer is not None:
        from tinymlaas.api import deploy_routes, model_routes

        model_routes.register(app, deployer, [])
        deploy_routes.register(app, deployer, [])
    if campaigns is not None:
        from tinymlaas.api import campaign_routes

        campaign_routes.register(app, campaigns, [])
    if metrics:
        from tinymlaas.api import metrics as metrics_route

        metrics_route.register(app, server, deployer, [])
    from tinymlaas.api import security_routes

    security_routes.register(app, server, deployer, [])
    admin_routes.register(app, server, tokens)
    return app


async def while_connected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``, cancelling it (and the device transfer it waits on) if the HTTP client goes
    away first: nobody would read the answer."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                raise HTTPException(499, "the client went away; the device operation was cancelled")
    finally:
        if not task.done():
            task.cancel()


def _line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj) + "\n").encode()
