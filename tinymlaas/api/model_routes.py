"""Admin API routes for the model registry: the one place models are added, listed, removed
and inspected while a server runs (the CLI's ``models add|list|rm|inspect`` call these).

- ``POST /models`` (multipart/form-data): ``model`` (the .onnx or .tflite file), optional
  ``calibration`` (.npz), any number of ``extra`` files (a model's further files, such as ONNX
  external data), and the form fields ``name`` and ``version``. Nothing is stored unless the
  model imports (400 naming the problem).
- ``GET /models``; ``GET /models/{ref}`` (NAME, NAME:VERSION or a sha256 prefix);
  ``DELETE /models/{ref}`` (409 while a deployment in flight uses it);
- ``POST /models/{ref}/inspect``: ops, parameters, MACs, the planner's estimate, and with a
  ``profile`` (any profile the server knows, stored ones included) every usable backend built
  and judged by its fit. The build runs off the event loop.

Translation only: ``tinymlaas.registry`` and ``tinymlaas.builds`` do the work.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from pydantic import BaseModel, Field

from lwm2m.errors import BadRequest
from tinymlaas.registry import ModelEntry, RegistryError, RegistryInUse

MAX_UPLOAD_BYTES = 512 * 1024 * 1024


class InspectBody(BaseModel):
    profile: str | None = Field(None, description="a device profile: build for it and judge the fit")
    backend: str | None = Field(None, description="only this backend")
    margin: float = Field(0.10, ge=0, lt=1, description="safety margin, as the deploy decision")


def entry_json(e: ModelEntry) -> dict[str, Any]:
    return {"name": e.name, "version": e.version, "sha256": e.sha256, "format": e.format, "size": e.size,
            "calibration": e.calibration is not None, "added_at": e.added_at}


async def _read(upload: UploadFile) -> bytes:
    data = await upload.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        raise BadRequest(f"{upload.filename}: larger than {MAX_UPLOAD_BYTES} bytes")
    return data


def register(app: FastAPI, deployer: Any, deps: list[Any]) -> None:
    reg = deployer.registry

    async def run(fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except RegistryInUse as exc:
            raise HTTPException(409, str(exc)) from None
        except RegistryError as exc:
            raise BadRequest(str(exc)) from None

    @app.post("/models", dependencies=deps)
    async def add(model: UploadFile = File(..., description="the .onnx or .tflite file"),
                  calibration: UploadFile | None = File(None, description=".npz of sample inputs"),
                  extra: list[UploadFile] | None = File(None, description="further files of the model"),
                  name: str | None = Form(None), version: str | None = Form(None)) -> dict[str, Any]:
        data = await _read(model)
        cal = await _read(calibration) if calibration is not None else None
        extras = {f.filename or f"extra-{i}": await _read(f) for i, f in enumerate(extra or [])}
        entry = await run(lambda: reg.add_data(data, model.filename or "model", name or None, version or None,
                                               cal, extras))
        return entry_json(entry)

    @app.get("/models", dependencies=deps)
    async def models() -> list[dict[str, Any]]:
        return [entry_json(e) for e in await run(reg.list)]

    @app.get("/models/{ref}", dependencies=deps)
    async def model(ref: str) -> dict[str, Any]:
        return entry_json(await run(reg.get, ref))

    @app.delete("/models/{ref}", dependencies=deps)
    async def remove(ref: str) -> dict[str, Any]:
        removed = await run(reg.remove, ref)
        return {"removed": [entry_json(e) for e in removed]}

    @app.post("/models/{ref}/inspect", dependencies=deps)
    async def inspect(ref: str, body: InspectBody) -> dict[str, Any]:
        from compilers.errors import CompilerError
        from tinymlaas.builds import BuildError, inspect as run_inspect

        entry = await run(reg.get, ref)
        board = deployer.server.profiles.get(body.profile) if body.profile else None
        try:
            return await asyncio.to_thread(run_inspect, entry, board, body.backend, body.margin)  # type: ignore[no-any-return]
        except (BuildError, CompilerError) as exc:
            raise BadRequest(f"inspect {entry.name}:{entry.version}: {exc}") from None
