"""TFLM's offline memory plan for an emitted flatbuffer: ``offline_plan(model, inputs,
outputs) -> OfflinePlan``, stored as the ``OfflineMemoryAllocation`` metadata entry.

TFLM's ``MicroAllocator`` reads that metadata (an int32 array ``[version = 0, subgraph = 0,
number of tensors, offset_0, ..., offset_n-1]``, ``-1`` = "plan this tensor online") and
places every offline-planned tensor at its offset in the arena head; its greedy planner
then only places what is left (kernel scratch buffers). See TFLM's
``docs/memory_management.md``, "Offline planned tensor allocations".

What it does: derives from the TFLite subgraph what ``compilers.planner`` derives from an IR
graph: steps (operators in order), lifetimes (TFLM's rule: a graph input lives from step
0, a tensor from the operator writing it to the last one reading it, graph outputs to the
end), sizes rounded up to 16 bytes (TFLM's tensor alignment), and RESHAPE outputs that may
share their input's bytes (TFLM's RESHAPE kernel skips its copy when input and output
have the same address; TFLM's own planner never shares them). Placement is the planner's
(``planner.place``: greedy orders plus a seeded search stopping at the lower bound), so the
offsets here and ``planner.plan`` on the IR graph are the same algorithm, not a second one.

Why not ``planner.plan`` directly: the flatbuffer has tensors the IR does not (layout
TRANSPOSEs and PADs the emitter inserts), and TFLM plans by flatbuffer tensor index.

What it does not do: decide whether the plan is worth embedding (``build`` measures
both arenas with tflite-micro and keeps the smaller), plan scratch buffers, or handle
multiple subgraphs or variable tensors (those stay ``-1``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ai_edge_litert import schema_py_generated as S

from ...planner import Buffer, lower_bound, place
from .writer import TENSOR_TYPES

METADATA_NAME = "OfflineMemoryAllocation"
VERSION = 0
ALIGN = 16
_ITEMSIZE = {code: np.dtype(dt.numpy).itemsize for dt, code in TENSOR_TYPES.items()}
_RESHAPE = S.BuiltinOperator.RESHAPE


@dataclass(frozen=True)
class OfflinePlan:
    offsets: tuple[int, ...]  # per flatbuffer tensor; -1 = constant / planned online
    peak: int  # bytes of the arena head the plan needs
    lower_bound: int
    strategy: str

    def metadata(self) -> bytes:
        """The ``OfflineMemoryAllocation`` payload (little-endian int32)."""
        head = [VERSION, 0, len(self.offsets)]
        return np.asarray(head + list(self.offsets), "<i4").tobytes()


def _nbytes(t: S.TensorT) -> int:
    n = int(np.prod(np.asarray(t.shape if t.shape is not None else [], np.int64)))
    return -(-n * _ITEMSIZE[t.type] // ALIGN) * ALIGN


def offline_plan(model: S.ModelT, sg: S.SubGraphT, inputs: list[int], outputs: list[int],
                 *, search: int = 2000) -> OfflinePlan:
    """Plan ``sg`` (subgraph 0 of the object-API ``model``, with graph ``inputs`` and
    ``outputs``); see the module docstring."""
    tensors, ops = sg.tensors, sg.operators
    codes = model.operatorCodes

    def is_const(i: int) -> bool:
        b = model.buffers[tensors[i].buffer]
        return b is not None and b.data is not None and len(b.data) > 0

    end = max(len(ops) - 1, 0)
    life: dict[int, list[int]] = {i: [0, 0] for i in inputs}
    for s, op in enumerate(ops):
        for o in op.outputs:
            if o >= 0 and not is_const(o) and not tensors[o].isVariable:
                life.setdefault(int(o), [s, s])
    for s, op in enumerate(ops):
        for i in op.inputs:
            if i in life:
                life[i][1] = max(life[i][1], s)
    for o in outputs:
        if o in life:
            life[o][1] = end

    root = {i: i for i in life}
    for s, op in enumerate(ops):
        code = codes[op.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) != _RESHAPE:
            continue
        x, y = int(op.inputs[0]), int(op.outputs[0])
        if x in life and y in life and x not in outputs and life[x][1] == s \
                and _nbytes(tensors[x]) == _nbytes(tensors[y]):
            root[y] = root[x]
    members: dict[int, list[int]] = {}
    for i in sorted(life, key=lambda k: (life[k][0], k)):
        members.setdefault(root[i], []).append(i)
    buffers = [Buffer(tuple(str(m) for m in ms), max(_nbytes(tensors[m]) for m in ms),
                      min(life[m][0] for m in ms), max(life[m][1] for m in ms))
               for ms in members.values()]
    lower = lower_bound(buffers, len(ops))
    offsets, peak, strategy = place(buffers, lower, search)
    out = [-1] * len(tensors)
    for b, off in zip(buffers, offsets, strict=True):
        for m in b.tensors:
            out[int(m)] = off
    return OfflinePlan(tuple(out), peak, lower, strategy)


def plan_of(flatbuffer: bytes) -> OfflinePlan:
    """``offline_plan`` of a serialised model's first subgraph."""
    m = S.ModelT.InitFromObj(S.Model.GetRootAsModel(flatbuffer, 0))
    sg = m.subgraphs[0]
    return offline_plan(m, sg, [int(i) for i in sg.inputs], [int(o) for o in sg.outputs])
