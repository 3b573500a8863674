"""The ML Inference object (33101) of a simulated device: what the active model did.

On activation the device runs the model once on sample inputs; Execute on Run Inference
(33101/0/10, argument ``0='N'`` or ``N``) runs it N more times; Reset Statistics (11) zeroes
the counters. Every run updates the count, the last output (raw output tensor bytes), the last
and mean latency in µs (measured around the runtime's invoke), the arena in use, and on
failure the error count and last error. Running happens in the shared model runner's worker
process, so the event loop keeps serving LwM2M while a model runs. A device without the object
(``published`` False: a real client with no ML objects) still runs its model; nothing of it is
readable over LwM2M.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from lwm2m.errors import BadRequest
from lwm2m.path import Path
from simulator.host import Host
from simulator.runtimes import ModelError

if TYPE_CHECKING:
    from simulator.software import Artifact

ML_INFERENCE = 33101
MAX_RUNS = 1000
P = {name: Path(ML_INFERENCE, 0, rid) for rid, name in enumerate(
    ("name", "version", "sha256", "count", "output", "latency", "mean", "arena", "errors", "last_error"))}


class Inference:
    def __init__(self, device: Host, published: bool = True) -> None:
        self.device = device
        self.artifact: "Artifact | None" = None
        self.total_us = 0
        self.published = published
        initial: dict[int, Any] = {0: "", 1: "", 2: b"", 3: 0, 4: b"", 5: 0, 6: 0, 7: 0, 8: 0, 9: ""}
        self.values: dict[Path, Any] = {Path(ML_INFERENCE, 0, rid): v for rid, v in initial.items()}
        if published:
            device.tree.add_instance(ML_INFERENCE, 0, initial)
            device.tree.on_execute(Path(ML_INFERENCE, 0, 10), self.execute_run)
            device.tree.on_execute(Path(ML_INFERENCE, 0, 11), lambda _args: self.reset())

    def _set(self, name: str, value: object) -> None:
        self.values[P[name]] = value
        if self.published:  # else kept here only: not registered, not readable over LwM2M
            self.device.tree.set(P[name], value)  # type: ignore[arg-type]

    async def start(self, artifact: "Artifact") -> None:
        self.artifact = artifact
        self.reset()
        self._set("name", artifact.name)
        self._set("version", artifact.version)
        self._set("sha256", artifact.sha256)
        await self.run_once()

    def stop(self) -> None:
        self.artifact = None
        for name in ("name", "version", "last_error"):
            self._set(name, "")
        self._set("sha256", b"")
        self._set("arena", 0)

    def reset(self) -> None:
        self.total_us = 0
        for name in ("count", "latency", "mean", "errors"):
            self._set(name, 0)

    async def execute_run(self, args: str) -> None:
        if self.artifact is None:
            raise BadRequest("no active model to run")
        match = re.fullmatch(r"\s*(?:0=)?'?(\d+)'?\s*", args) if args else None
        if args and match is None:
            raise BadRequest(f"Run Inference argument {args!r}: expected 0='N'")
        runs = int(match.group(1)) if match else 1
        if not 1 <= runs <= MAX_RUNS:
            raise BadRequest(f"Run Inference: {runs} runs, expected 1..{MAX_RUNS}")
        for _ in range(runs):
            await self.run_once()

    async def run_once(self) -> None:
        artifact = self.artifact
        if artifact is None:
            return
        tree = self  # the values, published or not
        try:
            result = await self.device.runner.run(artifact.data, artifact.plan, self.device.sample_inputs)
        except ModelError as exc:
            self._set("errors", int(tree.values[P["errors"]]) + 1)
            self._set("last_error", f"{exc.result}: {exc}")
            return
        count = int(tree.values[P["count"]]) + 1
        self.total_us += result.latency_us
        self._set("output", b"".join(result.outputs))
        self._set("latency", result.latency_us)
        self._set("mean", self.total_us // count)
        self._set("arena", result.arena_bytes)
        self._set("count", count)
