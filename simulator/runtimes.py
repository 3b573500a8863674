"""Model runners for simulated MCUs: TFLite Micro and sandboxed Wasm, off the event loop.

What it does: tells a model artifact's kind from its bytes (``artifact_kind``), decides
whether a device with so much free SRAM can take it (``ModelRunner.check`` -> ``Plan``) and
runs inferences (``ModelRunner.run`` -> ``Result``). The work happens in a spawn-context
``ProcessPoolExecutor`` that one runner shares among all devices of a process, so the event
loop never blocks. In a worker, each load and each inference runs in a forked child whose
stdout/stderr (C level too) go to a log, so a runtime crash (tflite-micro segfaults on a
too-small arena) or an endless model costs that call only; should a worker die anyway, the
call fails with ``runtime-error`` and the pool is recreated. Needs POSIX (``os.fork``).

TFLite Micro: per blob (cached by sha256) a load with a 16 MiB arena reads the
RecordingMicroAllocator totals (``Plan.recorded``); ``Plan.need`` is the arena the compiler's
TFLM backend recommends for the same bytes (``compilers.backends.tflm.arena``: the smallest
arena that loads and invokes, rounded up to 16), so a device and the deploy decision agree:
for small models Prepare's temporary memory, which the recorder does not count, makes it
larger (hello_world_int8: 1,504 recorded, 1,936 needed). A device takes a model when ``need + runtime_ram <= sram_free``
and gives it all it has: ``Plan.arena = sram_free - runtime_ram``. Wasm: the ABI is in
``compilers.backends.wasm.abi``; ``need`` is the declared minimum memory; wasm3 runs it.

Sample inputs (``inputs=None``): the value that means 0.0, i.e. quantised integer tensors
hold their zero point, others zeros; Wasm inputs are zero bytes. Every run starts from the
freshly loaded model (no state carries over). ``latency_us`` is the host's wall time of one
invoke (for Wasm including wasm3's lazy compilation). Not done here: scaling latency to an
MCU clock, LwM2M objects, or what a device does about a failure (``ModelError.result``).

Cost, and the fleet-scale memo: a run is a worker round trip plus a fork plus a fresh load,
so one runner (one worker) does ~100 runs/s of the MLPerf KWS int8 model (~10 ms a run, of
which ~2.4 ms invoke; ~170 runs/s with two workers on two cores), ~40/s of the same model
built to Wasm (wasm3 ~20 ms a run) and ~400/s of a trivial Wasm module; ``check`` is ~150 ms
for a new TFLM blob (the arena search) and ~30 µs once cached. A benchmark that activates one
model on 1,000 simulated devices would spend ~10 s of that per roll-out, so
``ModelRunner(memo_runs=True)`` lets ``run`` return the stored ``Result`` of an identical run
(same blob sha256, plan arena and inputs; inputs None are the sample inputs) that already
succeeded in this runner, and lets identical runs that overlap share one worker call. That is
exact, not an approximation: every run starts from a freshly loaded model, so the outputs are
the same; ``latency_us`` and ``arena_bytes`` are the first run's. Failures are not stored (the
next call runs again). Default off: every device really runs its model.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import multiprocessing
import os
import pickle
import re
import select
import signal
import tempfile
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from typing import Any, Callable, cast

import numpy as np

from compilers.backends.tflm import BackendError
from compilers.backends.tflm.arena import recommended_arena
from compilers.backends.wasm import abi as wm

__all__ = ["RESULTS", "ModelError", "TensorSpec", "ArenaRecord", "Plan", "Result", "ModelRunner",
           "artifact_kind"]

RESULTS = ("out-of-memory", "unsupported-package", "install-failure", "runtime-error")
MEASURE_CEILING = 16 * 1024 * 1024  # arena of the first TFLM load; no MCU here has more SRAM
MEMO_ENTRIES = 4096  # memo_runs: results kept per runner (oldest dropped first)
_OOM_LOG = re.compile(r"Failed to (allocate|resize)|missing: \d+")
_ALLOC = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")


class ModelError(Exception):
    """A model cannot be installed or run; ``result`` is one of ``RESULTS``."""

    def __init__(self, result: str, message: str) -> None:
        if result not in RESULTS:
            raise ValueError(f"unknown result {result!r}")
        super().__init__(result, message)
        self.result, self.message = result, message

    def __str__(self) -> str:
        return self.message


def artifact_kind(blob: bytes) -> str | None:
    """"tflite" (bytes 4..8 are TFL3), "wasm" (``\\0asm`` version 1) or None, by content only."""
    if blob[4:8] == b"TFL3":
        return "tflite"
    if blob[:4] == wm.MAGIC and blob[4:8] == b"\x01\0\0\0":
        return "wasm"
    return None


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name: int8, float32, uint8 (raw bytes of a Wasm buffer)...
    shape: tuple[int, ...]
    nbytes: int
    scale: float | None = None
    zero_point: int | None = None


@dataclass(frozen=True)
class ArenaRecord:
    """What tflite-micro's RecordingMicroAllocator reports (head = planned activations)."""

    total: int
    head: int
    tail: int


@dataclass(frozen=True)
class Plan:
    """A model a device can take, and how much of the device's SRAM goes to it."""

    kind: str  # "tflite" or "wasm"
    sha256: str
    need: int  # bytes the model needs: smallest working TFLM arena / Wasm min pages * 64 KiB
    arena: int  # bytes the runtime gets: sram_free - runtime_ram (>= need)
    sram_free: int
    runtime_ram: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    recorded: ArenaRecord | None = None  # TFLM only
    memory_pages: tuple[int, int | None] | None = None  # Wasm only: declared (min, max)
    metadata: dict[str, Any] | None = field(default=None, compare=False)  # Wasm "tinyml" section


@dataclass(frozen=True)
class Result:
    outputs: list[bytes]
    latency_us: int
    arena_bytes: int  # TFLM: allocator total of this run's interpreter; Wasm: memory size after invoke


_size = wm.size_text


# ---------------------------------------------------------------- isolation (in a worker)

@dataclass
class _Outcome:
    status: str  # ok, error (a ModelError), exception, crash, timeout
    value: Any  # the return value, (result, message), (type name, text) or a description
    log: str


_child_log_path: str | None = None
_LIBC = ctypes.CDLL(None)  # this process's C library: fflush, setvbuf


def _child_log() -> str:
    """In a child of ``_isolated``: everything it printed so far (C stdio flushed)."""
    _LIBC.fflush(None)
    assert _child_log_path is not None
    return _read(_child_log_path)


def _isolated(fn: Callable[..., Any], args: tuple[Any, ...], timeout_s: float) -> _Outcome:
    """Run ``fn(*args)`` in a forked child, fds 1 and 2 into a log; kill it after timeout_s."""
    global _child_log_path
    fd, log_path = tempfile.mkstemp(prefix="tinyml-", suffix=".log")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 0
        try:
            os.close(r)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            _LIBC.setvbuf(ctypes.c_void_p.in_dll(_LIBC, "stdout"), None, 2, 0)  # _IONBF: survive a crash
            _child_log_path = log_path
            payload: tuple[str, Any]
            try:
                payload = ("ok", fn(*args))
            except (ModelError, wm.AbiError) as e:
                payload = ("error", (e.result, e.message))
            except BaseException as e:  # noqa: BLE001 - everything goes back to the worker
                name = type(e).__qualname__
                if type(e).__module__ != "builtins":
                    name = f"{type(e).__module__}.{name}"
                payload = ("exception", (name, str(e)))
            view = memoryview(pickle.dumps(payload))
            while view:
                view = view[os.write(w, view):]
        except BaseException:  # noqa: BLE001
            code = 70
        finally:
            os._exit(code)
    os.close(w)
    os.close(fd)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    poller = select.poll()
    poller.register(r, select.POLLIN | select.POLLHUP)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return _Outcome("timeout", f"did not finish within {timeout_s:g} s", _read(log_path))
            if poller.poll(left * 1000):
                chunk = os.read(r, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
        _, status = os.waitpid(pid, 0)
        log = _read(log_path)
    finally:
        os.close(r)
        os.unlink(log_path)
    if chunks:
        kind, value = pickle.loads(b"".join(chunks))
        return _Outcome(kind, value, log)
    signalled = os.WIFSIGNALED(status)
    how = signal.Signals(os.WTERMSIG(status)).name if signalled else f"exit status {os.WEXITSTATUS(status)}"
    return _Outcome("crash", how, log)


def _read(path: str) -> str:
    with open(path, "rb") as f:
        return f.read(1 << 16).decode("utf-8", "replace")


def _reason(log: str) -> str:
    """The first lines of a runtime's complaint, without allocation statistics."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()
             and not ln.startswith("[RecordingMicroAllocator]") and "out of range (length" not in ln]
    return "; ".join(lines[:3]) or "no message"


# ---------------------------------------------------------------- TFLite Micro (in a worker)

def _tflm() -> Any:
    from tflite_micro.python.tflite_micro import runtime
    return runtime


def _tflm_specs(interp: Any) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    def read(getter: Callable[[int], dict[str, Any]], what: str) -> tuple[TensorSpec, ...]:
        specs: list[TensorSpec] = []
        for i in range(wm.MAX_TENSORS):
            try:
                d = getter(i)
            except IndexError:
                break
            dtype, shape = np.dtype(d["dtype"]), tuple(int(x) for x in d["shape"])
            q = d.get("quantization_parameters") or {}
            scales, zps = list(q.get("scales", [])), list(q.get("zero_points", []))
            quantised = len(scales) == 1 and float(scales[0]) != 0.0
            specs.append(TensorSpec(f"{what}{i}", dtype.name, shape, int(np.prod(shape)) * dtype.itemsize,
                                    float(scales[0]) if quantised else None,
                                    int(zps[0]) if quantised and zps else None))
        return tuple(specs)
    return read(interp.get_input_details, "input"), read(interp.get_output_details, "output")


def _sample(spec: TensorSpec) -> np.ndarray:
    fill = spec.zero_point if spec.zero_point is not None and np.dtype(spec.dtype).kind in "iu" else 0
    return np.full(spec.shape, fill, dtype=spec.dtype)


def _allocations(log: str) -> ArenaRecord:
    found = {k: int(v) for k, v in _ALLOC.findall(log)}
    return ArenaRecord(found.get("total", 0), found.get("head", 0), found.get("tail", 0))


def _tflm_once(blob: bytes, arena: int, inputs: list[bytes] | None) -> tuple[Any, ...]:
    """In a child: load with ``arena``, set inputs (samples when None), invoke once.

    Returns (allocator record, input specs, output specs, outputs, invoke latency in µs).
    """
    try:
        interp = _tflm().Interpreter.from_bytes(blob, arena_size=arena)
    except RuntimeError as e:
        raise _TflmLoadError(str(e)) from None
    ins, outs = _tflm_specs(interp)
    for i, spec in enumerate(ins):
        data = _sample(spec) if inputs is None else np.frombuffer(inputs[i], spec.dtype).reshape(spec.shape)
        interp.set_input(data, i)
    t0 = time.perf_counter_ns()
    try:
        interp.invoke()
    except RuntimeError as e:
        raise ModelError("runtime-error", f"TFLM invoke failed ({e}): {_reason(_child_log())}") from None
    latency = (time.perf_counter_ns() - t0) // 1000
    outputs = [np.ascontiguousarray(interp.get_output(i)).tobytes() for i in range(len(outs))]
    interp.print_allocations()
    return _allocations(_child_log()), ins, outs, outputs, latency


class _TflmLoadError(RuntimeError):
    """TFLM refused to load the model (AllocateTensors or a kernel's Prepare failed)."""


def _tflm_measure(blob: bytes, timeout_s: float, _stack: int = 0) -> Plan:
    """Recorded arena, tensor specs and the arena TFLM needs (the compiler's measurement,
    ``compilers.backends.tflm.arena``: smallest working arena, rounded up to 16); ModelError
    if the model does not run even with the ceiling."""
    _tflm()  # import before forking
    first = _isolated(_tflm_once, (blob, MEASURE_CEILING, None), timeout_s)
    if first.status != "ok":
        raise _tflm_failure(first)
    record, ins, outs, _, _ = first.value
    try:
        need = recommended_arena(blob, start=MEASURE_CEILING, timeout_s=timeout_s).recommended
    except BackendError as exc:
        raise ModelError("install-failure", f"measuring the TFLM arena failed: {exc}") from None
    return Plan("tflite", "", need, 0, 0, 0, ins, outs, recorded=record)


def _tflm_failure(o: _Outcome) -> ModelError:
    if o.status == "timeout":
        return ModelError("runtime-error", f"TFLM {o.value} loading and invoking the model")
    if o.status == "error":
        return ModelError(*o.value)
    if o.status == "exception" and not o.value[0].endswith("_TflmLoadError"):
        return ModelError("unsupported-package", f"not a valid TFLite flatbuffer ({o.value[0]}: {o.value[1]})")
    reason = _reason(o.log)
    if _OOM_LOG.search(o.log):
        return ModelError("out-of-memory", f"model needs more than a {MEASURE_CEILING:,}-byte TFLM arena ({reason})")
    if o.status == "crash":
        return ModelError("install-failure", f"TFLM crashed ({o.value}) loading the model: {reason}")
    return ModelError("install-failure", f"TFLM cannot load the model: {reason}")


_Ran = tuple[list[bytes], int, int]  # outputs, invoke latency in µs, arena bytes used
_Buffers = tuple[list[tuple[int, int]], list[tuple[int, int]]]  # (ptr, size) of inputs, outputs


def _tflm_run(blob: bytes, arena: int, inputs: list[bytes] | None, timeout_s: float) -> _Ran:
    """One inference in a child, with an arena already checked against the measured need."""
    _tflm()  # import before forking
    record, _, _, outputs, latency = _returned(_isolated(_tflm_once, (blob, arena, inputs), timeout_s), "TFLM")
    return outputs, latency, record.total


def _returned(o: _Outcome, runtime: str) -> Any:
    if o.status == "ok":
        return o.value
    if o.status == "error":
        raise ModelError(*o.value)
    if o.status == "crash":
        raise ModelError("runtime-error", f"the runtime crashed ({runtime}, {o.value}): {_reason(o.log)}")
    if o.status == "timeout":
        raise ModelError("runtime-error", f"{runtime} {o.value}; the run was stopped")
    raise ModelError("runtime-error", f"{runtime} failed: {o.value[0]}: {o.value[1]}")


# ---------------------------------------------------------------- Wasm via wasm3 (in a worker)

def _wasm_measure(blob: bytes, timeout_s: float, stack: int) -> _Buffers:
    import wasm3  # noqa: F401 - import before forking
    o = _isolated(wm.describe, (blob, stack), timeout_s)
    if o.status == "ok":
        return cast(_Buffers, o.value)
    if o.status == "error":
        raise ModelError(*o.value)
    raise ModelError("install-failure", f"Wasm module failed its ABI calls ({o.value}): {_reason(o.log)}")


def _wasm_run(blob: bytes, stack: int, inputs: list[bytes] | None, limit: int, timeout_s: float) -> _Ran:
    import wasm3  # noqa: F401 - import before forking
    return cast(_Ran, _returned(_isolated(wm.invoke, (blob, stack, inputs, limit), timeout_s), "wasm3"))


def _wasm_static(blob: bytes) -> wm.WasmInfo:
    try:
        return wm.check_static(blob)
    except wm.AbiError as e:
        raise ModelError(e.result, e.message) from None


# ---------------------------------------------------------------- the runner (event loop side)

def _inputs_key(inputs: list[bytes] | None) -> str | None:
    """memo_runs: a digest of the inputs (None: the sample inputs)."""
    if inputs is None:
        return None
    h = hashlib.sha256(len(inputs).to_bytes(4, "little"))
    for x in inputs:
        h.update(len(x).to_bytes(8, "little"))
        h.update(x)
    return h.hexdigest()


class ModelRunner:
    """Checks and runs models for every simulated device of a process, in a worker pool.

    ``timeout_s`` bounds one load or one inference (the child is killed after it);
    ``wasm_stack_bytes`` is the wasm3 stack of a Wasm model; ``memo_runs`` (default off, for
    fleet-scale benchmarks; see the module docstring) answers an identical successful run
    from memory.
    """

    def __init__(self, max_workers: int = 1, *, timeout_s: float = 30.0,
                 wasm_stack_bytes: int = 64 * 1024, memo_runs: bool = False) -> None:
        self.max_workers, self.timeout_s, self.wasm_stack_bytes = max_workers, timeout_s, wasm_stack_bytes
        self.memo_runs = memo_runs
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False
        self._measured: dict[str, Plan | ModelError] = {}
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

    async def _measure(self, kind: str, blob: bytes, sha: str) -> Plan:
        """What a model needs, whatever the device (a Plan template; cached by sha256)."""
        cached = self._measured.get(sha)
        if isinstance(cached, ModelError):
            raise ModelError(cached.result, cached.message)
        if cached is not None:
            return cached
        if kind == "wasm":
            pages = _wasm_static(blob).memories[0].min_pages
            if pages * wm.PAGE_BYTES > MEASURE_CEILING:  # do not even instantiate it
                raise ModelError("out-of-memory", f"Wasm module declares {pages} pages of memory; no "
                                                  f"simulated device has more than {_size(MEASURE_CEILING)}")
        if sha not in self._inflight:
            fn = _tflm_measure if kind == "tflite" else _wasm_measure
            self._inflight[sha] = self._submit(fn, blob, self.timeout_s, self.wasm_stack_bytes)
        fut, pool = self._inflight[sha]
        try:
            value: Any = await self._await(fut, pool)
        except ModelError as e:
            self._inflight.pop(sha, None)
            if e.result != "runtime-error":  # deterministic: remember it
                self._measured[sha] = e
            raise
        self._inflight.pop(sha, None)
        if kind == "wasm":
            info = wm.parse_wasm(blob)
            meta, mem = wm.metadata(info), info.memories[0]
            ins, outs = (tuple(TensorSpec(*t) for t in wm.tensor_layout(bufs, meta, what))
                         for bufs, what in zip(value, ("input", "output")))
            value = Plan("wasm", "", mem.min_pages * wm.PAGE_BYTES, 0, 0, 0, ins, outs,
                         memory_pages=(mem.min_pages, mem.max_pages), metadata=meta)
        self._measured[sha] = value = replace(value, sha256=sha)
        return cast(Plan, value)

    async def check(self, blob: bytes, sram_free: int, runtime_ram: int = 0) -> Plan:
        """Whether a device with ``sram_free`` bytes (``runtime_ram`` of them kept by its
        runtime) can take ``blob``: a Plan, or ModelError saying why not."""
        kind = artifact_kind(blob)
        if kind is None:
            raise ModelError("unsupported-package", f"not a TFLite flatbuffer or Wasm module "
                                                    f"(first bytes {bytes(blob[:4]).hex() or 'none'})")
        free = sram_free - runtime_ram
        plus = f" plus {runtime_ram:,} bytes for the runtime" if runtime_ram else ""
        if kind == "wasm":
            pages = _wasm_static(blob).memories[0].min_pages
            if pages * wm.PAGE_BYTES > free:
                raise ModelError("out-of-memory", f"Wasm module declares {pages} pages "
                                                  f"({_size(pages * wm.PAGE_BYTES)}) of memory{plus}; "
                                                  f"{_size(sram_free)} of SRAM are free")
        sha = hashlib.sha256(blob).hexdigest()
        m = await self._measure(kind, blob, sha)
        if m.need > free:
            raise ModelError("out-of-memory", f"model needs a {m.need:,}-byte TFLM arena{plus}; "
                                              f"{sram_free:,} bytes of SRAM are free")
        return replace(m, arena=free, sram_free=sram_free, runtime_ram=runtime_ram)

    async def run(self, blob: bytes, plan: Plan, inputs: list[bytes] | None = None) -> Result:
        """One inference of ``blob`` as ``plan`` (from ``check``) says; inputs are raw bytes."""
        sha = hashlib.sha256(blob).hexdigest()
        if sha != plan.sha256:
            raise ValueError("the blob is not the one the plan was made for")
        m = await self._measure(plan.kind, blob, sha)
        if plan.arena < m.need:
            raise ModelError("out-of-memory", f"model needs {m.need:,} bytes; the plan gives it {plan.arena:,}")
        if inputs is not None:
            if len(inputs) != len(m.inputs):
                raise ModelError("runtime-error", f"{len(inputs)} inputs given; the model takes {len(m.inputs)}")
            for i, (data, spec) in enumerate(zip(inputs, m.inputs)):
                if len(data) != spec.nbytes:
                    raise ModelError("runtime-error", f"input {i} has {len(data):,} bytes; the model takes "
                                                      f"{spec.nbytes:,} ({spec.dtype} {list(spec.shape)})")
            inputs = [bytes(x) for x in inputs]
        if not self.memo_runs:
            return Result(*await self._await(*self._submit_run(blob, plan, inputs)))
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
                done = self._runs[key] = Result(*out)
                if len(self._runs) > MEMO_ENTRIES:
                    del self._runs[next(iter(self._runs))]
        return replace(done, outputs=list(done.outputs))

    def _submit_run(self, blob: bytes, plan: Plan, inputs: list[bytes] | None
                    ) -> tuple[Future[Any], ProcessPoolExecutor]:
        if plan.kind == "tflite":
            return self._submit(_tflm_run, blob, plan.arena, inputs, self.timeout_s)
        return self._submit(_wasm_run, blob, self.wasm_stack_bytes, inputs, plan.arena, self.timeout_s)

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
