"""Admin API routes for what an operator sets about devices, and for the device profiles.

- ``GET|PATCH /devices/{endpoint}/settings``: the board profile (``devices set-profile``),
  explicit ML figures (``devices set-figures``) and queue mode (awake window, forced queue
  mode) of one device; a PATCH sets the fields it names (null clears one). A device need not
  have registered yet (settings can be made in advance). After a change the device's
  capabilities are read again when it is registered.
- ``GET /devices/{endpoint}/queue``: the requests held for it now and the recent held requests
  with their outcome.
- ``GET /profiles``, ``GET /profiles/{name}``: every profile the server knows, with its origin
  (shipped, directory, database); ``POST /profiles`` (the TOML text of a profile) validates and
  stores one, replacing a stored one of the same name; ``DELETE /profiles/{name}`` removes a
  stored one.

Translation only: the state lives in ``device_settings``, ``ProfileBook`` and ``queue``.
"""

from __future__ import annotations

from typing import Any

from fastapi import Body, FastAPI
from pydantic import BaseModel, Field

from lwm2m.errors import BadRequest
from tinymlaas.server.profiles import profile_row
from tinymlaas.server.server import LwM2MServer

MAX_PROFILE_BYTES = 64 * 1024


class SettingsBody(BaseModel):
    profile: str | None = Field(None, description="a device profile name (GET /profiles)")
    sram_free: int | None = Field(None, description="bytes of SRAM free for ML (runtime RAM plus the arena)")
    flash_free: int | None = Field(None, description="bytes of flash free for model packages")
    runtimes: list[str] | None = Field(None, description="runtimes in its firmware: 'tflm', 'wasm3 0.5' ...")
    awake_s: float | None = Field(None, description="queue mode: seconds it listens after it spoke")
    queue_mode: bool | None = Field(None, description="true/false: treat it as a queue-mode device or not; "
                                                      "null: as its registration says")


def register(app: FastAPI, server: LwM2MServer, deps: list[Any]) -> None:
    def check_endpoint(endpoint: str) -> None:
        if not endpoint or len(endpoint) > 255:
            raise BadRequest(f"endpoint {endpoint[:40]!r}: expected 1..255 characters")

    @app.get("/devices/{endpoint}/settings", dependencies=deps)
    async def settings(endpoint: str) -> dict[str, Any]:
        check_endpoint(endpoint)
        return server.device_settings.get(endpoint).as_json()

    @app.patch("/devices/{endpoint}/settings", dependencies=deps)
    async def change_settings(endpoint: str, body: SettingsBody) -> dict[str, Any]:
        check_endpoint(endpoint)
        changes = body.model_dump(exclude_unset=True)
        if not changes:
            raise BadRequest("settings: name at least one of " + ", ".join(SettingsBody.model_fields))
        new = await server.device_settings.change(endpoint, lambda name: name in server.profiles, **changes)
        if endpoint in server.registrations.by_endpoint and {"profile", "sram_free", "flash_free",
                                                             "runtimes"} & set(changes):
            server.capabilities.on_registered(server.registrations.by_endpoint[endpoint])
        return new.as_json()

    @app.get("/devices/{endpoint}/queue", dependencies=deps)
    async def queue(endpoint: str, limit: int = 100) -> dict[str, Any]:
        return {"endpoint": endpoint, "held": [h.summary() for h in server.queue.pending(endpoint)],
                "history": await server.queue.history(endpoint, min(max(limit, 1), 1000))}

    @app.get("/profiles", dependencies=deps)
    async def profiles() -> list[dict[str, Any]]:
        book = server.profiles
        return [profile_row(p, book.origin(p)) for p in sorted(book.all().values(), key=lambda p: p.name)]

    @app.get("/profiles/{name}", dependencies=deps)
    async def profile(name: str) -> dict[str, Any]:
        p = server.profiles.get(name)
        return profile_row(p, server.profiles.origin(p))

    @app.post("/profiles", dependencies=deps)
    async def add_profile(text: str = Body(..., media_type="application/toml")) -> dict[str, Any]:
        if len(text.encode()) > MAX_PROFILE_BYTES:
            raise BadRequest(f"profile of {len(text.encode())} bytes: the limit is {MAX_PROFILE_BYTES}")
        p = await server.profiles.add(text)
        return profile_row(p, "database")

    @app.delete("/profiles/{name}", dependencies=deps)
    async def remove_profile(name: str) -> dict[str, Any]:
        await server.profiles.remove(name)
        return {"status": "removed", "name": name}
