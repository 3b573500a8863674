"""Admin API routes about the server itself: tokens (``/tokens``), the audit log (``/audit``) and
(the server's counters are in ``/metrics``, ``tinymlaas.api.metrics``).

Translation only: tokens live in ``tokens.Tokens``, the audit rows are written by
``audit.AuditMiddleware``, the counters by the server's ``metrics.Metrics``. Scopes are in
``scopes.ROUTES`` like every other route's.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Query
from pydantic import Field

from lwm2m.errors import BadRequest
from tinymlaas.api import audit
from tinymlaas.api.scopes import SCOPES, parse_scopes
from tinymlaas.api.tokens import Tokens
from tinymlaas.api.validation import MAX_ID, Body, Id, Limit
from tinymlaas.server.server import LwM2MServer


class TokenBody(Body):
    name: str = Field(min_length=1, max_length=64, description="for people: who or what uses the token")
    scopes: list[str] = Field(min_length=1, max_length=len(SCOPES), description=f"some of {', '.join(SCOPES)}")


def register(app: FastAPI, server: LwM2MServer, tokens: Tokens) -> None:
    @app.post("/tokens")
    async def create_token(body: TokenBody) -> dict[str, Any]:
        """A new token with these scopes; its text is in this answer and nowhere else."""
        try:
            scopes = parse_scopes(body.scopes)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        info, token = await tokens.create(body.name, scopes)
        return {**info.as_json(), "token": token}

    @app.get("/tokens")
    async def list_tokens() -> list[dict[str, Any]]:
        """Every token ever made (revoked ones with revoked_at); never their text."""
        return await tokens.list()

    @app.delete("/tokens/{token_id}")
    async def revoke_token(token_id: Id) -> dict[str, Any]:
        return await tokens.revoke(token_id)

    @app.get("/audit")
    async def audit_log(limit: Limit = 100, token: int | None = Query(None, ge=1, le=MAX_ID),
                        since: float | None = Query(None, ge=0, le=1e11)) -> list[dict[str, Any]]:
        """State-changing calls, newest first (optionally of one token, or since a time)."""
        return await audit.query(server.store, limit, token, since)


__all__ = ["register"]
