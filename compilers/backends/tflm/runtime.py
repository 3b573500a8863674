"""How a device executes a TFLite flatbuffer: the real TFLM interpreter (tflite-micro), isolated.

``RUNTIME.load(data, timeout_s) -> Loaded``: a first load with ``MEASURE_CEILING`` bytes of
arena invokes once and reads the RecordingMicroAllocator totals (``details``: total, head,
tail) and the tensors; the RAM it needs is ``arena.recommended_arena`` — the smallest arena
that loads and invokes, rounded up to 16, the very measurement the build makes, so a device
and the deploy decision agree. For small models Prepare's temporary memory, which the
recorder does not count, makes it larger (hello_world_int8: 1,504 recorded, 1,936 needed).
``RUNTIME.invoke(data, ram_bytes, inputs, timeout_s) -> Ran``: one inference on a freshly
loaded interpreter with ``ram_bytes`` of arena; inputs None are the value meaning 0.0 (the
zero point of quantised tensors, else zeros). ``latency_us`` is the host's wall time of the
invoke; ``ram_used_bytes`` the allocator total of that run.

Every load and invoke runs in a forked child (``isolation``): tflite-micro segfaults on a
too-small arena. Failures are ``RuntimeFailure``: "out-of-memory" (the allocator's messages),
"unsupported-package" (not a flatbuffer tflite-micro can parse), "install-failure" (it parses
but TFLM refuses it, e.g. a hybrid model) or "runtime-error".

What it does not do: scale latency to an MCU's clock, or decide whether a device has the RAM
(``Backend.fit``).
"""

from __future__ import annotations

import re
import time
from typing import Any, Callable

import numpy as np

from ..base import Loaded, Ran, RuntimeFailure, TensorSpec
from ..isolation import Outcome, child_log, isolated, reason, returned
from .arena import recommended_arena
from .emitter import BackendError

MEASURE_CEILING = 16 * 1024 * 1024  # arena of the first load; no MCU here has more SRAM
MAX_TENSORS = 64
_OOM_LOG = re.compile(r"Failed to (allocate|resize)|missing: \d+")
_ALLOC = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")


def _noise(line: str) -> bool:
    return line.startswith("[RecordingMicroAllocator]") or "out of range (length" in line


def _tflm() -> Any:
    from tflite_micro.python.tflite_micro import runtime
    return runtime


def _specs(interp: Any) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    def read(getter: Callable[[int], dict[str, Any]], what: str) -> tuple[TensorSpec, ...]:
        specs: list[TensorSpec] = []
        for i in range(MAX_TENSORS):
            try:
                d = getter(i)
            except IndexError:
                break
            dtype, shape = np.dtype(d["dtype"]), tuple(int(x) for x in d["shape"])
            q = d.get("quantization_parameters") or {}
            scales, zps = list(q.get("scales", [])), list(q.get("zero_points", []))
            quantised = len(scales) == 1 and float(scales[0]) != 0.0
            specs.append(TensorSpec(f"{what}{i}", what, shape, dtype.name,
                                    float(scales[0]) if quantised else None,
                                    int(zps[0]) if quantised and zps else None))
        return tuple(specs)
    return read(interp.get_input_details, "input"), read(interp.get_output_details, "output")


def _sample(spec: TensorSpec) -> np.ndarray:
    fill = spec.zero_point if spec.zero_point is not None and np.dtype(spec.dtype).kind in "iu" else 0
    return np.full(spec.shape, fill, dtype=spec.dtype)


class _LoadError(RuntimeError):
    """TFLM refused to load the model (AllocateTensors or a kernel's Prepare failed)."""


def _once(blob: bytes, arena: int, inputs: list[bytes] | None) -> tuple[Any, ...]:
    """In a child: load with ``arena``, set inputs (samples when None), invoke once.

    Returns (allocator record {total, head, tail}, input specs, output specs, outputs, invoke µs)."""
    try:
        interp = _tflm().Interpreter.from_bytes(blob, arena_size=arena)
    except RuntimeError as e:
        raise _LoadError(str(e)) from None
    ins, outs = _specs(interp)
    for i, spec in enumerate(ins):
        data = _sample(spec) if inputs is None else np.frombuffer(inputs[i], spec.dtype).reshape(spec.shape)
        interp.set_input(data, i)
    t0 = time.perf_counter_ns()
    try:
        interp.invoke()
    except RuntimeError as e:
        raise RuntimeFailure("runtime-error", f"TFLM invoke failed ({e}): {reason(child_log(), _noise)}") from None
    latency = (time.perf_counter_ns() - t0) // 1000
    outputs = [np.ascontiguousarray(interp.get_output(i)).tobytes() for i in range(len(outs))]
    interp.print_allocations()
    record = {k: int(v) for k, v in _ALLOC.findall(child_log())}
    return record, ins, outs, outputs, latency


def _failure(o: Outcome) -> RuntimeFailure:
    if o.status == "timeout":
        return RuntimeFailure("runtime-error", f"TFLM {o.value} loading and invoking the model")
    if o.status == "error":
        return RuntimeFailure(*o.value)
    if o.status == "exception" and not o.value[0].endswith("_LoadError"):
        return RuntimeFailure("unsupported-package", f"not a valid TFLite flatbuffer ({o.value[0]}: {o.value[1]})")
    why = reason(o.log, _noise)
    if _OOM_LOG.search(o.log):
        return RuntimeFailure("out-of-memory", f"model needs more than a {MEASURE_CEILING:,}-byte TFLM arena ({why})")
    if o.status == "crash":
        return RuntimeFailure("install-failure", f"TFLM crashed ({o.value}) loading the model: {why}")
    return RuntimeFailure("install-failure", f"TFLM cannot load the model: {why}")


class TflmRuntime:
    """The TFLM runtime of a (simulated) device; module-level ``RUNTIME`` is the one to use."""

    name = "tflm"

    def load(self, data: bytes, timeout_s: float) -> Loaded:
        _tflm()  # import before forking
        first = isolated(_once, (data, MEASURE_CEILING, None), timeout_s)
        if first.status != "ok":
            raise _failure(first)
        record, ins, outs, _, _ = first.value
        try:
            need = recommended_arena(data, start=MEASURE_CEILING, timeout_s=timeout_s).recommended
        except BackendError as exc:
            raise RuntimeFailure("install-failure", f"measuring the TFLM arena failed: {exc}") from None
        from .sources import model_operators

        return Loaded(need, ins, outs, {"recorded": {k: record.get(k, 0) for k in ("total", "head", "tail")}},
                      tuple(model_operators(data)))

    def invoke(self, data: bytes, ram_bytes: int, inputs: list[bytes] | None, timeout_s: float) -> Ran:
        _tflm()  # import before forking
        record, _, _, outputs, latency = returned(isolated(_once, (data, ram_bytes, inputs), timeout_s), "TFLM",
                                                  _noise)
        return Ran(tuple(outputs), latency, record.get("total", 0))


RUNTIME = TflmRuntime()

__all__ = ["MEASURE_CEILING", "RUNTIME", "TflmRuntime"]
