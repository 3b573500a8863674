"""Admin-API tokens: created with scopes, stored as their sha256 only, revoked by id.

A token is 32 random bytes (``secrets.token_urlsafe``), shown once when it is created; the
database keeps its sha256 (a token has 256 bits of entropy, so a fast hash is enough: there
is nothing to brute-force). ``authenticate`` looks the hash up in memory (loaded at start,
kept in step by ``create`` and ``revoke``), so no request waits on the database to be
authorised. The server's own token (``admin-token`` in the data directory, also in
``api.json``) is registered at start as the ``serve`` token with the ``admin`` scope; it is
replaced by replacing that file, not revoked through the API.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, update

from lwm2m.errors import BadRequest, Conflict, NotFound
from tinymlaas import names
from tinymlaas.store import Store
from tinymlaas.store.tables import API_TOKENS

SERVE_TOKEN = "serve"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class TokenInfo:
    id: int
    name: str
    scopes: frozenset[str]

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "scopes": sorted(self.scopes)}


def _row_json(r: Any) -> dict[str, Any]:
    return {"id": r.id, "name": r.name, "scopes": r.scopes.split(","), "created_at": r.created_at,
            "revoked_at": r.revoked_at}


class Tokens:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._by_hash: dict[str, TokenInfo] = {}

    def start(self, serve_token: str) -> TokenInfo:
        """Load the live tokens and register the server's own (blocking: at app creation)."""
        sha = digest(serve_token)

        def setup(conn: Connection) -> list[Any]:
            if conn.execute(select(API_TOKENS.c.id).where(API_TOKENS.c.sha256 == sha)).first() is None:
                conn.execute(insert(API_TOKENS).values(name=SERVE_TOKEN, scopes="admin", sha256=sha,
                                                       created_at=time.time()))
            return list(conn.execute(select(API_TOKENS).where(API_TOKENS.c.revoked_at.is_(None))))
        for r in self.store.write_sync(setup):
            self._by_hash[r.sha256] = TokenInfo(r.id, r.name, frozenset(r.scopes.split(",")))
        return self._by_hash[sha]

    def authenticate(self, token: str) -> TokenInfo | None:
        return self._by_hash.get(digest(token))

    async def create(self, name: str, scopes: frozenset[str]) -> tuple[TokenInfo, str]:
        """A new token (its text is returned here and never again)."""
        names.check("token", name)
        if name == SERVE_TOKEN:
            raise BadRequest(f"the token name {SERVE_TOKEN!r} is the server's own")
        token = secrets.token_urlsafe(32)
        sha = digest(token)
        text = ",".join(sorted(scopes))
        def add(conn: Connection) -> int:
            key = conn.execute(insert(API_TOKENS).values(name=name, scopes=text, sha256=sha,
                                                         created_at=time.time())).inserted_primary_key
            assert key is not None
            return int(key[0])
        new_id = await self.store.write(add)
        info = TokenInfo(int(new_id), name, scopes)
        self._by_hash[sha] = info
        return info, token

    async def list(self) -> list[dict[str, Any]]:
        rows = await self.store.read(lambda c: list(c.execute(select(API_TOKENS).order_by(API_TOKENS.c.id))))
        return [_row_json(r) for r in rows]

    async def revoke(self, token_id: int) -> dict[str, Any]:
        def revoke(conn: Connection) -> Any:
            row = conn.execute(select(API_TOKENS).where(API_TOKENS.c.id == token_id)).first()
            if row is None or row.name == SERVE_TOKEN or row.revoked_at is not None:
                return row
            conn.execute(update(API_TOKENS).where(API_TOKENS.c.id == token_id).values(revoked_at=time.time()))
            return conn.execute(select(API_TOKENS).where(API_TOKENS.c.id == token_id)).first()
        row = await self.store.write(revoke)
        if row is None:
            raise NotFound(f"no token {token_id}")
        if row.name == SERVE_TOKEN:
            raise Conflict(f"token {token_id} is the server's own ({SERVE_TOKEN}): replace the admin-token file "
                           "in the data directory and restart to change it")
        self._by_hash.pop(row.sha256, None)
        return _row_json(row)
