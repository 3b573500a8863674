"""The model runner of simulated MCUs: loads, checks and runs installed artifacts through the
device runtime of the backend that made them, off the event loop.

What it does: tells which installed backend made an artifact (``artifact_backend``: by content,
``compilers.backends.registry.recognise``), loads it in that backend's ``DeviceRuntime``
(``load``: the RAM it needs, its tensors and operators; cached per sha256), decides whether a
device can take it (``check(blob, target) -> Plan``: the backend's own ``fit`` against the
device's ``Target``, the one rule the deploy choice uses too) and runs inferences (``run`` ->
``Result``). Runtimes run in a spawn-context ``ProcessPoolExecutor`` that one runner shares
among all devices of a process, so the event loop never blocks; each runtime isolates its
native code in forked children (``compilers.backends.isolation``), so a crash or an endless
model costs that call only; should a worker die anyway, the call fails with
``runtime-error`` and the pool is recreated. A device that has accepted a model gives it all
its free SRAM: ``Plan.arena = sram_free - runtime RAM``.

Cost, and the fleet-scale memo: a run is a worker round trip plus a fork plus a fresh load,
so one runner (one worker) does ~100 runs/s of the MLPerf KWS int8 model (~10 ms a run, of
which ~2.4 ms invoke; ~170 runs/s with two workers on two cores), ~40/s of the same model
built to Wasm (wasm3 ~20 ms a run) and ~400/s of a trivial Wasm module; a load is ~150 ms for
a new TFLM blob (the arena search) and ~30 µs once cached. A benchmark that activates one
model on 1,000 simulated devices would spend ~10 s of that per roll-out, so
``ModelRunner(memo_runs=True)`` lets ``run`` return the stored ``Result`` of an identical run
(same blob sha256, plan arena and inputs; inputs None are the sample inputs) that already
succeeded in this runner, and lets identical runs that overlap share one worker call. That is
exact, not an approximation: every run starts from a freshly loaded model, so the outputs are
the same; ``latency_us`` and ``arena_bytes`` are the first run's. Failures are not stored (the
next call runs again). Default off: every device really runs its model.

Not done here: scaling latency to an MCU clock, LwM2M objects, or what a device does about a
failure (``ModelError.result``).
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

from compilers.backends import registry
from compilers.backends.base import Backend, Fit, Loaded, Ran, RuntimeFailure, Target, TensorSpec

__all__ = ["ModelError", "ModelRunner", "Plan", "Result", "TensorSpec", "artifact_backend", "artifact_kind"]

ModelError = RuntimeFailure  # one failure type from runtime to device: ``result`` + message
MEMO_ENTRIES = 4096  # memo_runs: results kept per runner (oldest dropped first)
RESOURCE_RESULT = {"sram": "out-of-memory", "operators": "install-failure", "runtime": "install-failure",
                   "flash": "not-enough-storage"}  # a Fit's shortfall -> the device's refusal


def artifact_backend(blob: bytes) -> Backend | None:
    """The installed backend whose artifact ``blob`` is, by content only."""
    return registry.recognise(blob)


def artifact_kind(blob: bytes) -> str | None:
    """The package kind of ``blob`` ("tflite", "wasm", ...) by content only, or None."""
    backend = artifact_backend(blob)
    return backend.kind.name if backend is not None and backend.kind is not None else None


@dataclass(frozen=True)
class Plan:
    """A model a device can take, and how much of the device's SRAM goes to it."""

    backend: str
    kind: str
    sha256: str
    need: int  # RAM the model needs, measured by its runtime (TFLM arena, Wasm pages x 64 KiB)
    arena: int  # RAM the runtime gets: sram_free - runtime RAM (>= need)
    sram_free: int
    runtime_ram: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    fit: Fit | None = None
    details: Mapping[str, Any] = field(default_factory=dict, compare=False)  # the runtime's (recorded arena ...)


@dataclass(frozen=True)
class Result:
    outputs: list[bytes]
    latency_us: int
    arena_bytes: int  # RAM the runtime used in this run (TFLM allocator total; Wasm memory size)


def _load(backend: str, blob: bytes, timeout_s: float) -> Loaded:
    """In a worker: load ``blob`` in ``backend``'s device runtime."""
    return registry.get(backend).device_runtime().load(blob, timeout_s)


def _invoke(backend: str, blob: bytes, ram: int, inputs: list[bytes] | None, timeout_s: float) -> Ran:
    """In a worker: one inference of ``blob`` with ``ram`` bytes."""
    return registry.get(backend).device_runtime().invoke(blob, ram, inputs, timeout_s)


def _inputs_key(inputs: list[bytes] | None) -> str | None:
    """memo_runs: a digest of the inputs (None: the sample inputs)."""
    if inputs is None:
        return None
    h = hashlib.sha256(len(inputs).to_bytes(4, "little"))
    for x in inputs:
        h.update(len(x).to_bytes(8, "little"))
        h.update(x)
    return h.hexdigest()


def _refusal(fit: Fit, need: int, target: Target) -> ModelError:
    worst = fit.shortfalls[0]
    plus = f" plus {target.runtime.ram_bytes:,} for {target.runtime.name}" if target.runtime.ram_bytes else ""
    return ModelError(RESOURCE_RESULT.get(worst.resource, "install-failure"),
                      f"{'; '.join(fit.problems)} (the model needs {need:,} bytes of RAM{plus}; "
                      f"{target.sram_free_bytes:,} bytes of SRAM are free)")


class ModelRunner:
    """Checks and runs models for every simulated device of a process, in a worker pool.

    ``timeout_s`` bounds one load or one inference (the child is killed after it);
    ``memo_runs`` (default off, for fleet-scale benchmarks; see the module docstring) answers
    an identical successful run from memory.
    """

    def __init__(self, max_workers: int = 1, *, timeout_s: float = 30.0, memo_runs: bool = False) -> None:
        self.max_workers, self.timeout_s = max_workers, timeout_s
        self.memo_runs = memo_runs
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False
        self._loaded: dict[str, Loaded | ModelError] = {}
        self._inflight: dict[str, tuple[Future[Any], ProcessPoolExecutor]] = {}
        self._runs: dict[tuple[str, int, str | None], Result] = {}  # memo_runs: successful runs
        self._running: dict[tuple[str, int, str | None], tuple[Future[Any], ProcessPoolExecutor]] = {}

    def _executor(self) -> ProcessPoolExecutor:
        if self._closed:
            raise RuntimeError("the model runner is closed")
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.max_workers, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def _drop(self, pool: ProcessPoolExecutor) -> None:
        if self._pool is pool:  # the next call starts a new pool
            self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)

    def _submit(self, fn: Callable[..., Any], *args: Any) -> tuple[Future[Any], ProcessPoolExecutor]:
        pool = self._executor()
        try:
            return pool.submit(fn, *args), pool
        except BrokenProcessPool:  # broke before anyone awaited it
            self._drop(pool)
            pool = self._executor()
            return pool.submit(fn, *args), pool

    async def _await(self, fut: Future[Any], pool: ProcessPoolExecutor) -> Any:
        try:
            return await asyncio.shield(asyncio.wrap_future(fut))
        except BrokenProcessPool:
            self._drop(pool)
            raise ModelError("runtime-error", "the runtime crashed (its worker process died); "
                                              "the worker was restarted") from None

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self._await(*self._submit(fn, *args))

    @staticmethod
    def backend_of(blob: bytes) -> Backend:
        backend = artifact_backend(blob)
        if backend is None or backend.kind is None:
            kinds = ", ".join(b.kind.name for b in registry.deliverable().values() if b.kind) or "none installed"
            raise ModelError("unsupported-package", f"not an artifact of an installed backend ({kinds}; "
                                                    f"first bytes {bytes(blob[:4]).hex() or 'none'})")
        return backend

    async def load(self, blob: bytes) -> tuple[Backend, Loaded]:
        """What ``blob`` needs, whatever the device (cached by sha256; deterministic failures too)."""
        backend = self.backend_of(blob)
        sha = hashlib.sha256(blob).hexdigest()
        cached = self._loaded.get(sha)
        if isinstance(cached, RuntimeFailure):
            raise ModelError(cached.result, cached.message)
        if cached is not None:
            return backend, cached
        if sha not in self._inflight:
            self._inflight[sha] = self._submit(_load, backend.name, blob, self.timeout_s)
        fut, pool = self._inflight[sha]
        try:
            loaded: Loaded = await self._await(fut, pool)
        except ModelError as e:
            self._inflight.pop(sha, None)
            if e.result != "runtime-error":  # deterministic: remember it
                self._loaded[sha] = e
            raise
        self._inflight.pop(sha, None)
        self._loaded[sha] = loaded
        return backend, loaded

    async def check(self, blob: bytes, target: Target, stored_bytes: int | None = None) -> Plan:
        """Whether the device ``target`` describes can take ``blob`` (stored in ``stored_bytes`` of
        flash, default its own size): a Plan, or ModelError naming every shortfall of the
        backend's fit."""
        backend, loaded = await self.load(blob)
        needs = loaded.needs(len(blob) if stored_bytes is None else stored_bytes)
        fit = backend.fit(needs, target, "")
        if not fit.fits:
            raise _refusal(fit, loaded.ram_bytes, target)
        assert backend.kind is not None
        return Plan(backend.name, backend.kind.name, hashlib.sha256(blob).hexdigest(), loaded.ram_bytes,
                    target.sram_free_bytes - target.runtime.ram_bytes, target.sram_free_bytes,
                    target.runtime.ram_bytes, loaded.inputs, loaded.outputs, fit, loaded.details)

    async def run(self, blob: bytes, plan: Plan, inputs: list[bytes] | None = None) -> Result:
        """One inference of ``blob`` as ``plan`` (from ``check``) says; inputs are raw bytes."""
        sha = hashlib.sha256(blob).hexdigest()
        if sha != plan.sha256:
            raise ValueError("the blob is not the one the plan was made for")
        _, m = await self.load(blob)
        if plan.arena < m.ram_bytes:
            raise ModelError("out-of-memory", f"model needs {m.ram_bytes:,} bytes; the plan gives it {plan.arena:,}")
        if inputs is not None:
            if len(inputs) != len(m.inputs):
                raise ModelError("runtime-error", f"{len(inputs)} inputs given; the model takes {len(m.inputs)}")
            for i, (data, spec) in enumerate(zip(inputs, m.inputs, strict=True)):
                if len(data) != spec.nbytes:
                    raise ModelError("runtime-error", f"input {i} has {len(data):,} bytes; the model takes "
                                                      f"{spec.nbytes:,} ({spec.dtype} {list(spec.shape)})")
            inputs = [bytes(x) for x in inputs]
        if not self.memo_runs:
            return _result(await self._await(*self._submit_run(blob, plan, inputs)))
        key = (sha, plan.arena, _inputs_key(inputs))
        done = self._runs.get(key)
        if done is None:
            if key not in self._running:  # identical overlapping runs share one worker call
                self._running[key] = self._submit_run(blob, plan, inputs)
            fut, pool = self._running[key]
            try:
                out = await self._await(fut, pool)
            finally:
                if self._running.get(key, (None,))[0] is fut:
                    del self._running[key]
            done = self._runs.get(key)
            if done is None:
                done = self._runs[key] = _result(out)
                if len(self._runs) > MEMO_ENTRIES:
                    del self._runs[next(iter(self._runs))]
        return replace(done, outputs=list(done.outputs))

    def _submit_run(self, blob: bytes, plan: Plan, inputs: list[bytes] | None
                    ) -> tuple[Future[Any], ProcessPoolExecutor]:
        return self._submit(_invoke, plan.backend, blob, plan.arena, inputs, self.timeout_s)

    def close(self) -> None:
        """Shut the worker pool down; the runner cannot be used afterwards."""
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    async def __aenter__(self) -> "ModelRunner":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def _result(ran: Ran) -> Result:
    return Result(list(ran.outputs), ran.latency_us, ran.ram_used_bytes)
