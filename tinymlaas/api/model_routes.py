"""Admin API routes for the model registry: the one place models are added, listed, removed
and inspected while a server runs (the CLI's ``models add|list|rm|inspect`` call these).

- ``POST /models`` (multipart/form-data): ``model`` (the .onnx or .tflite file), optional
  ``calibration`` (.npz), any number of ``extra`` files (an ONNX model's external data, each
  named by the location the model gives it), and the form fields ``name``, ``version``, any
  number of ``input_shape`` (``NAME=1x49x10x1``) and ``input_layout`` (``nchw``|``nhwc``): the
  version's import options. Nothing is stored unless the model imports with them (400 naming
  the problem); the answer carries the import's ``notes`` (a dropped label output, ...).
- ``GET /models``; ``GET /models/{ref}`` (NAME, NAME:VERSION or a sha256 prefix);
  ``DELETE /models/{ref}`` (409 while a deployment in flight uses it);
- ``POST /models/{ref}/inspect``: ops, parameters, MACs, the planner's estimate, the import's
  notes, and with a ``profile`` (any profile the server knows, stored ones included) every
  usable backend built and judged as the deploy decision judges it, through the server's
  compile cache (``tinymlaas.deploy.verdict``: inspect and deploy share builds). The builds run
  off the event loop.

Translation only: ``tinymlaas.registry``, ``tinymlaas.builds`` and ``tinymlaas.deploy.verdict``
do the work.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from pydantic import BaseModel, Field

from lwm2m.errors import BadRequest
from tinymlaas.model_import import ImportOptionError, ImportOptions, parse_input_shapes
from tinymlaas.registry import ModelEntry, RegistryError, RegistryInUse

MAX_UPLOAD_BYTES = 512 * 1024 * 1024


class InspectBody(BaseModel):
    profile: str | None = Field(None, description="a device profile: build for it and judge the fit")
    backend: str | None = Field(None, description="only this backend")
    margin: float = Field(0.10, ge=0, lt=1, description="safety margin, as the deploy decision")


def entry_json(e: ModelEntry) -> dict[str, Any]:
    return e.as_json()


async def _read(upload: UploadFile) -> bytes:
    data = await upload.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        raise BadRequest(f"{upload.filename}: larger than {MAX_UPLOAD_BYTES} bytes")
    return data


def register(app: FastAPI, deployer: Any, deps: list[Any]) -> None:
    reg = deployer.registry

    async def run(fn: Any, *args: Any) -> Any:
        from compilers.errors import CompilerError

        try:
            return await asyncio.to_thread(fn, *args)
        except RegistryInUse as exc:
            raise HTTPException(409, str(exc)) from None
        except (RegistryError, CompilerError) as exc:  # a model that does not import: the compiler says why
            raise BadRequest(str(exc)) from None

    @app.post("/models", dependencies=deps)
    async def add(model: UploadFile = File(..., description="the .onnx or .tflite file"),
                  calibration: UploadFile | None = File(None, description=".npz of sample inputs"),
                  extra: list[UploadFile] | None = File(None, description="further files of the model"),
                  name: str | None = Form(None), version: str | None = Form(None),
                  input_shape: list[str] | None = Form(None, description="NAME=1x49x10x1, one per input"),
                  input_layout: str | None = Form(None, description="nchw (default) or nhwc")) -> dict[str, Any]:
        try:
            options = ImportOptions.make(parse_input_shapes(input_shape or []), input_layout or None)
        except ImportOptionError as exc:
            raise BadRequest(str(exc)) from None
        data = await _read(model)
        cal = await _read(calibration) if calibration is not None else None
        extras = {f.filename or f"extra-{i}": await _read(f) for i, f in enumerate(extra or [])}
        entry = await run(lambda: reg.add_data(data, model.filename or "model", name or None, version or None,
                                               cal, extras, options))
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
        from tinymlaas.builds import BuildError
        from tinymlaas.deploy import verdict

        entry = await run(reg.get, ref)
        board = deployer.server.profiles.get(body.profile) if body.profile else None
        try:
            return await verdict.inspect(entry, board, deployer.cache, deployer.key.seal, body.backend, body.margin)
        except (BuildError, CompilerError) as exc:
            raise BadRequest(f"inspect {entry.name}:{entry.version}: {exc}") from None
