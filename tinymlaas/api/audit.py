"""The audit trail: every state-changing admin-API call, with who made it and how it ended.

``AuditMiddleware`` (plain ASGI, so streamed responses pass through untouched) writes one
``audit`` row per request whose method changes state (anything but GET/HEAD/OPTIONS),
refused ones included: when, the token's id and name (none when no valid token came), the
method, the route's template and the path as called, the HTTP status, and "ok" or the error
message (the app's error handlers leave it in ``request.state.error``). The row is committed
before the response's end reaches the client. Request bodies are not recorded (they may hold
values operators would not want kept). ``query`` reads it back for ``GET /audit``.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Connection, desc, insert, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tinymlaas.store import Store
from tinymlaas.store.tables import AUDIT

READ_ONLY = frozenset({"GET", "HEAD", "OPTIONS"})


def _row(scope: Scope, status: int, now: float) -> dict[str, Any]:
    state = scope.get("state") or {}
    token = state.get("token")
    route = scope.get("route")
    error = state.get("error")
    raw = scope.get("raw_path") or scope.get("path", "").encode()
    return {"ts": now, "token_id": getattr(token, "id", None), "token_name": getattr(token, "name", None),
            "method": scope["method"][:8], "route": str(getattr(route, "path", "(no route)"))[:255],
            "path": raw.decode("latin-1")[:2048], "status": status,
            "result": "ok" if status < 400 and error is None else str(error or f"HTTP {status}")[:1024]}


class AuditMiddleware:
    def __init__(self, app: ASGIApp, store: Store) -> None:
        self.app, self.store = app, store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in READ_ONLY:
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})  # shared with the request, whose handlers note the token and error
        status, recorded = 500, False

        async def record() -> None:
            nonlocal recorded
            if not recorded:
                recorded = True
                row = _row(scope, status, time.time())
                await self.store.write(lambda c: c.execute(insert(AUDIT).values(**row)))

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                await record()
            await send(message)
        try:
            await self.app(scope, receive, sending)
        finally:
            await record()


async def query(store: Store, limit: int, token_id: int | None = None,
                since: float | None = None) -> list[dict[str, Any]]:
    def q(conn: Connection) -> list[Any]:
        stmt = select(AUDIT).order_by(desc(AUDIT.c.id)).limit(limit)
        if token_id is not None:
            stmt = stmt.where(AUDIT.c.token_id == token_id)
        if since is not None:
            stmt = stmt.where(AUDIT.c.ts >= since)
        return list(conn.execute(stmt))
    return [dict(r._mapping) for r in await store.read(q)]
