"""Admin API routes for device groups and staged campaigns (``/groups``, ``/campaigns``).

``register`` adds them to the app that ``tinymlaas.api.app.create_app`` builds. Errors are
raised as ``BadRequest`` / ``NotFound``, which the app turns into ``{"error": ...}`` with
400 / 404. These routes only translate HTTP to calls on ``Campaigns`` and the group functions;
they hold no state.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Literal, TypeVar

from fastapi import FastAPI
from pydantic import Field

from tinymlaas.api.validation import Body, Id, Name
from tinymlaas.deploy import groups
from tinymlaas.deploy.campaigns import Campaigns
from tinymlaas.deploy.service import DeployOptions
from lwm2m.errors import BadRequest

T = TypeVar("T")


class GroupBody(Body):
    name: str = Field(max_length=64, description="group name: letters, digits, '_', '.', '-'")
    tag: str | None = Field(None, max_length=255, description="devices with this tag (glob)")
    profile: str | None = Field(None, max_length=255, description="devices of this profile (glob)")
    query: str | None = Field(None, max_length=4096, description="e.g. 'profile=nrf52*,runtime=tflm,registered=yes'")


class CampaignBody(Body):
    name: str | None = Field(None, max_length=128, description="default: MODEL:VERSION to GROUP")
    model: str = Field(min_length=1, max_length=200, description="NAME or NAME:VERSION from the model registry")
    group: str = Field(min_length=1, max_length=64)
    stages: list[float] = Field([0.01, 0.1, 1.0], min_length=1, max_length=100,
                                description="cumulative fractions of the group, ending at 1.0")
    success_threshold: float = Field(0.95, ge=0, le=1, description="succeeded/finished needed to go on")
    error_threshold: float = Field(0.05, ge=0, le=1, description="failed/finished above this halts the campaign")
    concurrency: int = Field(50, ge=1, le=10000, description="deployments in flight at most")
    backend: str | None = Field(None, max_length=64)
    precision: str | None = Field(None, max_length=16)
    method: Literal["pull", "push"] = "pull"
    object_id: Literal[9, 5] | None = None


async def _checked(fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn``; a ``ValueError`` (bad selector, unknown model: ``RegistryError``) becomes 400."""
    try:
        return await fn()
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def register(app: FastAPI, campaigns: Campaigns, deps: list[Any]) -> None:
    """Add the group and campaign routes to ``app``, each guarded by ``deps``."""
    store, registrations = campaigns.store, campaigns.registrations

    @app.post("/groups", dependencies=deps)
    async def add_group(body: GroupBody) -> dict[str, Any]:
        selector = {"tag": body.tag, "profile": body.profile, "query": body.query}
        row = await _checked(lambda: groups.save_group(store, body.name, selector))
        found = await groups.members(store, registrations, row["selector"])
        return {**row, "members": found}

    @app.get("/groups", dependencies=deps)
    async def list_groups() -> list[dict[str, Any]]:
        out = []
        for row in await groups.list_groups(store):
            found = await groups.members(store, registrations, row["selector"])
            out.append({**row, "count": len(found)})
        return out

    @app.get("/groups/{name}", dependencies=deps)
    async def show_group(name: Name) -> dict[str, Any]:
        row = await groups.get_group(store, name)
        found = await _checked(lambda: groups.members(store, registrations, row["selector"]))
        return {**row, "members": found}

    @app.post("/campaigns", dependencies=deps)
    async def start(body: CampaignBody) -> dict[str, Any]:
        options = DeployOptions(backend=body.backend, precision=body.precision, method=body.method,
                                object_id=body.object_id)
        cid = await _checked(lambda: campaigns.start(
            body.name, body.model, body.group, stages=body.stages, success_threshold=body.success_threshold,
            error_threshold=body.error_threshold, concurrency=body.concurrency, options=options))
        return await campaigns.status(cid)

    @app.get("/campaigns", dependencies=deps)
    async def list_campaigns() -> list[dict[str, Any]]:
        return await campaigns.list()

    @app.get("/campaigns/{cid}", dependencies=deps)
    async def show(cid: Id) -> dict[str, Any]:
        return await campaigns.status(cid)

    @app.post("/campaigns/{cid}/pause", dependencies=deps)
    async def pause(cid: Id) -> dict[str, Any]:
        return await campaigns.pause(cid)

    @app.post("/campaigns/{cid}/resume", dependencies=deps)
    async def resume(cid: Id) -> dict[str, Any]:
        return await campaigns.resume(cid)

    @app.post("/campaigns/{cid}/cancel", dependencies=deps)
    async def cancel(cid: Id) -> dict[str, Any]:
        return await campaigns.cancel(cid)


__all__ = ["CampaignBody", "GroupBody", "register"]
