"""The TFLite frontend: ``import_tflite(model) -> Graph``.

What it does, in order:

1. Reads the model (the flatbuffer bytes or a path) with the TFLite schema's object API
   (``ai_edge_litert.schema_py_generated``). A buffer that is not a TFLite flatbuffer (no
   ``TFL3`` identifier), is truncated or corrupt (the flatbuffer reader trips, a tensor's
   data does not fit its shape, an index points nowhere) is a ``ModelFormatError``.
2. Takes subgraph 0 (the model's main graph; further subgraphs only exist for control
   flow, which is refused). Every operator is looked up first in the table ``CONVERTERS``
   (``frontends.tflite_ops``): the ops without a converter are reported together in one
   ``UnsupportedOps``, each naming the op, its version and the operator index, e.g.
   ``UNIDIRECTIONAL_SEQUENCE_LSTM`` in the TFLM LSTM examples or ``SVDF`` in
   ``keyword_scrambled_8bit``, before anything is built. Shape arithmetic
   (``SHAPE -> STRIDED_SLICE -> PACK`` in front of a RESHAPE, as Keras 3 exports with a
   ``None`` batch carry) and other operators on constants are folded at import
   (``frontends.tflite_fold``).
3. Converts operator by operator (TFLite stores them in execution order). Constants are
   the tensors with buffer data; tensor shapes are TFLite's static ``shape`` (a dynamic
   dimension is refused); quantisation (per tensor or per channel) is kept on the integer
   tensors, int32 biases included.
4. **Layout:** the IR body is NCHW like ONNX imports, with TRANSPOSE nodes at the graph
   boundary and wherever an op needs TFLite's memory order; weights are converted at
   import (OHWI -> OIHW, depthwise 1HWC -> (C*M)1HW with ``group = C``); graph inputs and
   outputs keep the TFLite model's NHWC interface (details in ``frontends.tflite_ops``).
5. Returns a validated, topologically ordered ``Graph``; each output's shape is given by
   TFLite and checked by ``Graph.validate`` against our own shape rules.

**Hybrid models** (float activations, int8 weights, like ``kws_ref_model_float32``) are
imported, not refused: each int8 weight constant goes through a DEQUANTIZE node and the op
runs in float. That is the model's real-valued meaning; LiteRT's dynamic-range kernels
quantise the activations on the fly and differ from it by ~1e-2 relative, and TFLM cannot
run such a model at all (a backend that targets TFLM must refuse it or dequantise it).

**Integer semantics:** int8 nodes are executed by ``compilers.int8`` with TFLite's integer
arithmetic; TFLite QUANTIZE nodes get ``rounding="half_away"`` (TFLite rounds half away
from zero; ONNX's QuantizeLinear, the IR default, half to even).

What it does not do: no optimisation (layout TRANSPOSEs stay for the layout pass to
remove), no signatures (the subgraph's inputs/outputs are the interface), no multiple
subgraphs, no sparse tensors, no string/complex/int4 tensors, no variables.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ai_edge_litert import schema_py_generated as S

from ..errors import (GraphError, ModelFormatError, ShapeError, UnsupportedDType, UnsupportedOp,
                      UnsupportedOps)
from ..ir import Graph, Tensor
from .tflite_fold import FOLDERS, fold, foldable
from .tflite_ops import BUILTIN_NAMES, CONVERTERS, Builder, OpCtx, unsupported

ModelLike = bytes | bytearray | str | os.PathLike[str]

# What to use instead of a TFLite op we do not convert (shown with the refusal).
ALTERNATIVES = {
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "not supported yet (recurrent layers come in a later issue)",
    "SVDF": "not supported yet (stateful layers come in a later issue)",
    "RESIZE_NEAREST_NEIGHBOR": "TRANSPOSE_CONV with stride = the scale factor",
    "L2_NORMALIZATION": "none; normalise on the host",
    "BATCH_MATMUL": "FULLY_CONNECTED with a constant weight",
}


def import_tflite(model: ModelLike, *, input_shapes: Mapping[str, Sequence[int]] | None = None
                  ) -> Graph:
    """Import a TFLite flatbuffer as a validated IR ``Graph`` (see the module docstring).
    ``input_shapes`` (input name -> full shape) fixes inputs whose stored shape has a
    dynamic (-1) dimension; one left dynamic is a ``ShapeError`` naming it."""
    raw = _read(model)
    m = _parse(raw)
    if not m.subgraphs:
        raise ModelFormatError("the TFLite model has no subgraph")
    sg = m.subgraphs[0]
    tensors = list(sg.tensors or [])
    operators = list(sg.operators or [])
    codes = list(m.operatorCodes or [])
    _check_indices(m, sg, tensors, operators, codes)
    _fix_input_shapes(sg, tensors, dict(input_shapes or {}))

    plan = []
    errors: list[UnsupportedOp] = []
    for index, op in enumerate(operators):
        code = codes[op.opcodeIndex]
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        name = BUILTIN_NAMES.get(builtin, f"BUILTIN_{builtin}")
        if builtin == S.BuiltinOperator.CUSTOM:
            custom = code.customCode.decode(errors="replace") if isinstance(code.customCode, bytes) else code.customCode
            name = f"CUSTOM:{custom}"
        conv = CONVERTERS.get(builtin)
        if conv is None and builtin not in FOLDERS:
            alt = ALTERNATIVES.get(name)
            errors.append(unsupported(name, int(code.version), index, "no converter for this op"
                                      + (f"; instead: {alt}" if alt else "")))
        elif op.builtinOptions2 is not None:
            errors.append(unsupported(name, int(code.version), index,
                                      "BuiltinOptions2 are not supported"))
        plan.append((builtin, conv, OpCtx(None, index, op, name, int(code.version))))  # type: ignore[arg-type]
    if errors:
        raise UnsupportedOps(errors)

    b = Builder(m, sg, raw, _unique_names(tensors))
    for i, t in enumerate(tensors):
        if t.isVariable:
            raise UnsupportedDType(f"tensor {b.names[i]!r} is a variable (stateful models are "
                                   f"not supported)")
        if t.sparsity is not None:
            raise UnsupportedDType(f"tensor {b.names[i]!r} is sparse")
    inputs = []
    for i in sg.inputs if sg.inputs is not None else []:
        i = int(i)
        if b.is_const(i):
            continue
        inputs.append(b.add(Tensor(b.names[i], b.shape(i), b.dtype(i), b.quant(i))))
        b.forms[i] = {"tf": b.names[i]}
    for builtin, conv, ctx in plan:
        ctx.b = b
        try:
            if foldable(ctx, builtin):
                fold(ctx, builtin)
            elif conv is None:
                raise ctx.unsupported("only folded when its inputs are constants (shape "
                                      "arithmetic), and they are not")
            else:
                conv(ctx)
        except (GraphError, ModelFormatError, UnsupportedDType, UnsupportedOp):
            raise
        except (KeyError, IndexError, AttributeError, TypeError, ValueError, ArithmeticError) as e:
            raise ModelFormatError(f"{ctx.label}: malformed operator ({type(e).__name__}: "
                                   f"{e})") from e
    outputs = [b.get(int(i), "tf") for i in (sg.outputs if sg.outputs is not None else [])]
    name = sg.name.decode(errors="replace") if isinstance(sg.name, bytes) and sg.name else "tflite"
    graph = Graph.make(name, inputs, outputs, b.nodes, b.tensors.values())
    return graph.toposorted().validate()


def _fix_input_shapes(sg: S.SubGraphT, tensors: list[S.TensorT], given: dict[str, Sequence[int]]) -> None:
    """Write ``given`` into the graph inputs' shapes; a dynamic dimension left is refused.
    (Keras exports keep 1 in ``shape`` and -1 only in ``shape_signature``: nothing to do.)"""
    names = {_name(tensors[int(i)], int(i)): int(i) for i in (sg.inputs if sg.inputs is not None else [])}
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ShapeError(f"input_shapes names {unknown}, but the model's inputs are {sorted(names)}")
    for name, i in names.items():
        t = tensors[i]
        shape = [int(d) for d in (t.shape if t.shape is not None else [])]
        if name in given:
            new = [int(d) for d in given[name]]
            if len(new) != len(shape) or any(d >= 0 and d != n for d, n in zip(shape, new, strict=True)):
                raise ShapeError(f"input {name!r} has shape {shape}, input_shapes gives {new}")
            t.shape = np.asarray(new, np.int32)
            continue
        for k, d in enumerate(shape):
            if d < 0:
                fixed = tuple(1 if x < 0 else x for x in shape)
                raise ShapeError(f"input {name!r} dimension {k} is dynamic: the compiler needs "
                                 f"static shapes, pass input_shapes={{{name!r}: {fixed}}} "
                                 f"(1 for a batch dimension)", input_name=name, suggested=fixed)


def _name(t: S.TensorT, i: int) -> str:
    return (t.name.decode(errors="replace") if isinstance(t.name, bytes) else t.name) or f"t{i}"


# ---- loading ----------------------------------------------------------------------------------
def _read(model: ModelLike) -> bytes:
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    path = Path(model)
    try:
        return path.read_bytes()
    except OSError as e:
        raise ModelFormatError(f"cannot read TFLite model {path}: {e}") from e


def _parse(raw: bytes) -> S.ModelT:
    if len(raw) < 8 or not S.Model.ModelBufferHasIdentifier(raw, 0):
        raise ModelFormatError(f"not a TFLite flatbuffer ({len(raw)} bytes, file identifier "
                               f"{raw[4:8]!r} instead of b'TFL3')")
    try:
        m = S.ModelT.InitFromObj(S.Model.GetRootAsModel(raw, 0))
    except Exception as e:  # the flatbuffer reader raises whatever the bad offset causes
        raise ModelFormatError(f"corrupt or truncated TFLite flatbuffer ({len(raw)} bytes): "
                               f"{type(e).__name__}: {e}") from e
    if m.version != 3:
        raise ModelFormatError(f"TFLite schema version {m.version}, expected 3 (corrupt?)")
    return m


def _check_indices(m: S.ModelT, sg: S.SubGraphT, tensors: list[S.TensorT], operators: list[S.OperatorT],
                   codes: list[S.OperatorCodeT]) -> None:
    n = len(tensors)
    nbuf = len(m.buffers or [])
    for i, t in enumerate(tensors):
        if t.buffer and not 0 <= t.buffer < nbuf:
            raise ModelFormatError(f"tensor {i} refers to buffer {t.buffer} of {nbuf}")
    for name, idx in (("input", sg.inputs), ("output", sg.outputs)):
        for i in idx if idx is not None else []:
            if not 0 <= int(i) < n:
                raise ModelFormatError(f"graph {name} {int(i)} is not a tensor (of {n})")
    for k, op in enumerate(operators):
        if not 0 <= op.opcodeIndex < len(codes):
            raise ModelFormatError(f"operator {k}: opcode index {op.opcodeIndex} of {len(codes)}")
        for i in [*(op.inputs if op.inputs is not None else []),
                  *(op.outputs if op.outputs is not None else [])]:
            if not -1 <= int(i) < n:
                raise ModelFormatError(f"operator {k}: tensor index {int(i)} of {n}")


def _unique_names(tensors: list[S.TensorT]) -> list[str]:
    names, seen = [], set()
    for i, t in enumerate(tensors):
        base = t.name.decode(errors="replace") if isinstance(t.name, bytes) else (t.name or "")
        name = base or f"t{i}"
        if name in seen or "@" in name:
            name = f"{name.replace('@', '_')}#{i}"
        seen.add(name)
        names.append(name)
    return names
