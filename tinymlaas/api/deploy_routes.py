"""Admin API routes for deployments: the installed backends, decide (dry run), deploy, list, show,
cancel, rollback.

Translation only: every route calls the ``Deployer``. A model the registry does not know is a
400 naming it; a device that fits no candidate is a 412 whose message lists every candidate
and its shortfall (``choice.NoFit``); an unknown deployment is a 404; a deployment to a device
that has one in progress is a 409 naming it (CoAP 4.09), unless the body says ``after_current``
(then it is queued behind it).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, Query
from pydantic import Field
from sqlalchemy import select

from compilers.backends import registry
from tinymlaas.api.validation import MAX_ID, Body, Id, Limit, Name
from tinymlaas.deploy.service import Deployer, DeployOptions
from lwm2m.errors import BadRequest
from tinymlaas.registry import ModelEntry, RegistryError
from tinymlaas.store.tables import EVENTS


class DeployBody(Body):
    endpoint: str = Field(min_length=1, max_length=255)
    model: str = Field(min_length=1, max_length=200, description="NAME, NAME:VERSION or a sha256 prefix")
    after_current: bool = Field(False, description="the device has a deployment in progress: queue this one "
                                                   "behind it (else the request is refused with 409)")
    backend: str | None = Field(None, max_length=64,
                                description="an installed deliverable backend (GET /backends); default: chosen")
    precision: str | None = Field(None, max_length=16, description="float32 or int8; default: chosen")
    method: str = Field("pull", max_length=64, description="pull (Package URI, Block2) or push (Package, Block1)")
    object_id: int | None = Field(None, ge=0, le=65535, description="9 (Software Management) or 5 (Firmware Update)")
    margin: float = Field(0.10, ge=0, lt=1, description="safety margin on free SRAM and flash")
    sram_free: int | None = Field(None, gt=0, description="bytes of SRAM free for ML, over what the device says")
    flash_free: int | None = Field(None, gt=0, description="bytes of flash free for packages, over what it says")
    runtimes: list[str] = Field(default_factory=list, description="runtimes its firmware has ('tflm', "
                                                                  "'wasm3 0.5'), over what it says")
    wait: bool = Field(True, description="answer when the deployment ended (else at once)")


class WaitBody(Body):
    wait: bool = True


def options_of(body: DeployBody) -> DeployOptions:
    try:
        from tinymlaas.server.device_settings import check_runtime

        return DeployOptions(body.backend, body.precision, body.method, body.object_id, body.margin,
                             body.sram_free, body.flash_free, tuple(check_runtime(r) for r in body.runtimes))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def register(app: FastAPI, deployer: Deployer, deps: list[Any]) -> None:
    async def entry(model: str) -> ModelEntry:
        try:
            return await asyncio.to_thread(deployer.registry.get, model)
        except RegistryError as exc:
            raise BadRequest(str(exc)) from None

    async def started(deployment_id: int, wait: bool) -> dict[str, Any]:
        if wait:
            return await deployer.run(deployment_id)
        deployer.server.spawn(deployer.run(deployment_id), name=f"deployment {deployment_id}")
        return await deployer.get(deployment_id)

    @app.get("/backends", dependencies=deps)
    async def backends() -> dict[str, Any]:
        """The backends installed in the server (entry points ``tinymlaas.backends``), and any left out."""
        return {"backends": [registry.describe(b) for b in registry.backends().values()],
                "left_out": dict(registry.problems())}

    @app.post("/deployments/plan", dependencies=deps)
    async def plan(body: DeployBody) -> dict[str, Any]:
        e, options = await entry(body.model), options_of(body)
        deployer.server.device_client.registration(body.endpoint)  # 404 for an unknown device
        target = await deployer.target(body.endpoint, options.figures)
        chosen, candidates, built = await deployer.decide(target, e, options)
        return {"endpoint": body.endpoint, "model": f"{e.name}:{e.version}", "target": target.as_json(),
                "chosen": chosen.as_json(), "candidates": [c.as_json() for c in candidates],
                "margin": options.margin, "macs": built.artifact.macs}

    @app.post("/deployments", dependencies=deps)
    async def deploy(body: DeployBody) -> dict[str, Any]:
        e, options = await entry(body.model), options_of(body)
        deployer.server.device_client.registration(body.endpoint)  # 404 for an unknown device, before a row
        return await started(await deployer.create(body.endpoint, e, options, after_current=body.after_current),
                             body.wait)

    @app.get("/deployments", dependencies=deps)
    async def deployments(endpoint: str | None = Query(None, max_length=255),
                          campaign: int | None = Query(None, ge=1, le=MAX_ID),
                          limit: Limit = 100) -> list[dict[str, Any]]:
        return await deployer.list(endpoint, campaign, limit)

    @app.get("/deployments/{deployment_id}", dependencies=deps)
    async def deployment(deployment_id: Id) -> dict[str, Any]:
        row = await deployer.get(deployment_id)
        q = (select(EVENTS).where(EVENTS.c.endpoint == row["endpoint"], EVENTS.c.kind == "deployment")
             .order_by(EVENTS.c.id))
        events = await deployer.server.store.read(lambda c: list(c.execute(q)))
        row["history"] = [{"ts": ev.ts, **ev.detail} for ev in events if ev.detail.get("id") == deployment_id]
        return row

    @app.post("/deployments/{deployment_id}/cancel", dependencies=deps)
    async def cancel(deployment_id: Id) -> dict[str, Any]:
        await deployer.cancel_row(deployment_id)  # 404 when unknown
        return {"status": "cancelling"}

    @app.post("/devices/{endpoint}/rollback", dependencies=deps)
    async def rollback(endpoint: Name) -> dict[str, Any]:
        return await deployer.rollback(endpoint)
