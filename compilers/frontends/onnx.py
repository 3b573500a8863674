"""The ONNX frontend: ``import_onnx(model, input_shapes=None, base_dir=None, external=None) -> Graph``.

What it does, in order:

1. Reads the model (a ``ModelProto``, the serialised bytes, or a path; ``frontends.onnx_load``):
   external-data files are resolved next to the model (or in ``base_dir``, or given by
   location in ``external``) and refused when their location leaves that directory;
   ``onnx.checker`` checks it; an unreadable, truncated or invalid file is a
   ``ModelFormatError``.
2. Reads the default-domain opset. 7 and newer are imported directly (each converter
   knows which versions of its op it implements, up to what the installed onnx defines);
   older models are first upgraded with ``onnx.version_converter``.
3. Treats every graph input that has an initializer as a constant (IR 3 models such as
   the zoo's mnist-8 list their weights as inputs too).
4. Makes shapes static. ``input_shapes`` (name -> full shape) fixes inputs; any dimension
   that is still symbolic or unknown is a ``ShapeError`` naming the input, the dimension
   and the ``input_shapes`` argument that would fix it. **Policy: no silent defaults** (not
   even batch "N" -> 1): a compiler that picked a batch size would hide it from the memory
   planner's numbers. ``onnx.shape_inference`` (strict, with data propagation) then types
   every tensor.
5. Folds at import what is known once shapes are static (``frontends.onnx_fold``): Shape,
   Size and every node on constants (exporters' shape arithmetic: tf2onnx's Flatten,
   torch's ``x.view(x.size(0), -1)``) become constants, computed by onnx's reference
   evaluator; such nodes need no converter.
6. Converts node by node through the tables ``CONVERTERS`` (``frontends.onnx_ops``) and
   ``ML_CONVERTERS`` (``frontends.onnx_ml``: skl2onnx's ZipMap and label path).
   **Every** op type (or version of it, attribute, domain) without a converter is reported
   in one ``UnsupportedOps`` error, each with op type, opset, node name and, where there
   is one, the supported alternative (``ALTERNATIVES``); this is checked for all nodes
   before shape inference runs, and configurations a converter refuses are collected over
   the whole graph too. Each output's shape is computed by our own rules and checked
   against ONNX's.
7. Outputs the import cannot hold (a string label, a ZipMap's maps) are dropped or
   replaced, each with an ``ImportNote`` warning. float16 stays float16 here (the graph
   means what the file means); ``precision.prepare`` brings it to float32 for the
   backends (``passes.float16``).
8. Returns a validated, topologically ordered ``Graph`` in ONNX's NCHW layout.

What it does not do: no optimisation (the passes do that), no layout change, no custom
domains (com.microsoft ...), no control flow, sequences or optional types, no sparse
initializers, no training.
"""

from __future__ import annotations

import os
import warnings
from typing import Callable, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference, version_converter

from ..errors import (GraphError, ImportNote, ModelFormatError, ShapeError, UnsupportedDType,
                      UnsupportedOp, UnsupportedOps)
from ..ir import DType, Graph, Tensor
from . import onnx_ml, onnx_ops  # noqa: F401  (fill the converter tables)
from .onnx_context import CONVERTERS, ML_CONVERTERS, ML_DOMAIN, Builder, Converter, NodeCtx, \
    dtype_of
from .onnx_fold import evaluate, foldable
from .onnx_load import ExternalFiles, ModelLike, load_onnx

MIN_OPSET = 7
DEFAULT_DOMAINS = ("", "ai.onnx")

# What to use instead of an op we do not convert (shown with the refusal).
ALTERNATIVES: Mapping[str, str] = {
    "Upsample": "Resize is not supported either: use ConvTranspose (stride = scale)",
    "Resize": "ConvTranspose with stride = the scale factor",
    "GlobalMaxPool": "MaxPool with kernel_shape = the spatial size",
    "ReduceMax": "MaxPool over the spatial axes",
    "ReduceSum": "ReduceMean (times the count)",
    "Sum": "a chain of Add",
    "Mean": "Add then Mul by 1/n",
    "Einsum": "MatMul / Gemm",
    "Gelu": "export with approximate='tanh' is not supported either: use Relu or HardSwish",
    "Elu": "Relu or LeakyRelu",
    "Selu": "Relu or LeakyRelu",
    "Softplus": "Relu",
    "Mish": "HardSwish",
    "LogSoftmax": "Softmax",
    "InstanceNormalization": "BatchNormalization (folded into the conv)",
    "LayerNormalization": "BatchNormalization (folded into the conv)",
    "LSTM": "not supported yet (recurrent layers come in a later issue)",
    "GRU": "not supported yet (recurrent layers come in a later issue)",
    "RNN": "not supported yet (recurrent layers come in a later issue)",
    "MaxUnpool": "ConvTranspose",
    "SpaceToDepth": "Reshape + Transpose",
    "DepthToSpace": "Reshape + Transpose",
}


def import_onnx(model: ModelLike, *, input_shapes: Mapping[str, Sequence[int]] | None = None,
                base_dir: str | os.PathLike[str] | None = None,
                external: ExternalFiles | None = None,
                warn: Callable[..., object] = warnings.warn) -> Graph:
    """Import an ONNX model as a validated IR ``Graph`` (see the module docstring).
    ``base_dir``: where the model's external-data files are (default: the model path's
    directory; needed for bytes and protos that have external data); ``external``: those
    files by location instead (bytes, or the path that holds them). ``warn`` receives each
    ``ImportNote`` (``warnings.warn``'s signature; a collector keeps them per call)."""
    proto = load_onnx(model, base_dir, external)
    opset = _default_opset(proto)
    if opset < MIN_OPSET:
        proto, opset = _upgrade(proto, opset)
    if opset > onnx.defs.onnx_opset_version():
        raise ModelFormatError(f"opset {opset} is newer than the installed onnx knows "
                               f"({onnx.defs.onnx_opset_version()})")
    initializers = {t.name: t for t in proto.graph.initializer}
    _fix_input_shapes(proto, initializers, dict(input_shapes or {}))
    folded = foldable(proto.graph)
    converters = _converters(proto, opset, folded)
    onnx_types, bad_types = _infer(proto)

    names = {n for node in proto.graph.node for n in [*node.input, *node.output] if n}
    names |= {v.name for v in proto.graph.input} | set(initializers)
    b = Builder(opset, onnx_types, names, bad_types)
    for name, init in initializers.items():
        if init.data_type == onnx.TensorProto.STRING:  # class labels: what reads them drops
            kind = onnx.TensorProto.DataType.Name(init.data_type)
            shown = numpy_helper.to_array(init).reshape(-1)[:6].tolist()
            b.drop(name, f"it is computed from initializer {name!r}, {kind} values {shown}, "
                         f"which the IR cannot hold")
            continue
        dtype_of(init.data_type, f"initializer {name!r}")
        b.add_const(name, numpy_helper.to_array(init))
    inputs = [v.name for v in proto.graph.input if v.name not in initializers]
    for v in proto.graph.input:
        if v.name not in initializers:
            shape, dtype = _static(v, "input")
            b.tensors[v.name] = Tensor(v.name, shape, dtype)

    errors: list[UnsupportedOp] = []
    for index, (node, conv) in enumerate(zip(proto.graph.node, converters, strict=True)):
        if _skip_dropped(b, node):
            continue
        try:
            if conv is None:
                _fold(b, node, index, opset)
            else:
                _convert(b, node, index, *conv)
        except UnsupportedOp as e:
            errors.append(e)
            _stand_in(b, node, str(e))
    if errors:
        raise UnsupportedOps(errors)

    outputs = []
    for o in (o.name for o in proto.graph.output):
        if o in b.dropped:
            b.notes.append(f"output {o!r} is not imported: {b.dropped[o]}")
            continue
        if o not in b.tensors:
            raise GraphError(f"graph output {o!r} is never produced")
        outputs.append(o)
    if not outputs:
        raise ModelFormatError("none of the model's outputs can be imported: "
                               + "; ".join(b.notes))
    graph = Graph.make(proto.graph.name or "onnx", inputs, outputs, b.nodes, b.tensors.values())
    graph = graph.toposorted().validate()
    for note in b.notes:
        warn(note, ImportNote, stacklevel=2)
    return graph


def _skip_dropped(b: Builder, node: onnx.NodeProto) -> bool:
    """A node reading a dropped tensor is dropped too (its outputs inherit the reason)."""
    reasons = [b.dropped[i] for i in node.input if i in b.dropped]
    if not reasons:
        return False
    for o in node.output:
        if o:
            b.drop(o, reasons[0])
    return True


def _stand_in(b: Builder, node: onnx.NodeProto, why: str) -> None:
    """After a refused node: its outputs get the types ONNX inferred (so the rest of the
    graph is still checked), or are dropped when those are unknown."""
    for o in node.output:
        if not o or o in b.tensors:
            continue
        shape, dtype = b.onnx_types.get(o, (None, None))
        if shape is not None and dtype is not None:
            b.tensors[o] = Tensor(o, shape, dtype)
        else:
            b.drop(o, why)


def _fold(b: Builder, node: onnx.NodeProto, index: int, opset: int) -> None:
    """A node known at import (``onnx_fold``): its outputs become constants."""
    name = _node_name(node, index)
    values = {i: t.data for i in node.input if i and (t := b.tensors[i]).data is not None}
    shapes = {i: b.tensors[i].shape for i in node.input if i in b.tensors}
    try:
        results = evaluate(node, values, shapes, opset)
    except Exception as e:  # the reference evaluator raises whatever the op's code raises
        raise UnsupportedOp(node.op_type, opset, name,
                            f"cannot be evaluated on its constant inputs: "
                            f"{type(e).__name__}: {e}") from e
    for o, value in zip((o for o in node.output if o), results, strict=False):
        try:
            b.add_const(o, np.asarray(value))
        except UnsupportedDType:
            b.drop(o, f"{node.op_type} node {name!r} computes a {np.asarray(value).dtype} "
                      f"constant the IR cannot hold")


# ---- loading ----------------------------------------------------------------------------------
def _default_opset(proto: onnx.ModelProto) -> int:
    for imp in proto.opset_import:
        if imp.domain in DEFAULT_DOMAINS:
            return int(imp.version)
    raise ModelFormatError("the model imports no version of the default ONNX domain")


def _upgrade(proto: onnx.ModelProto, opset: int) -> tuple[onnx.ModelProto, int]:
    try:
        upgraded = version_converter.convert_version(proto, MIN_OPSET)
    except Exception as e:  # the converter raises plain RuntimeErrors
        raise ModelFormatError(f"opset {opset} is older than {MIN_OPSET} and "
                               f"onnx.version_converter could not upgrade it: {e}") from e
    return upgraded, _default_opset(upgraded)


# ---- shapes -----------------------------------------------------------------------------------
def _fix_input_shapes(proto: onnx.ModelProto, initializers: Mapping[str, onnx.TensorProto],
                      given: dict[str, Sequence[int]]) -> None:
    """Write ``given`` into the graph inputs; then every input dim must be a number."""
    real = {v.name: v for v in proto.graph.input if v.name not in initializers}
    unknown = sorted(set(given) - set(real))
    if unknown:
        raise ShapeError(f"input_shapes names {unknown}, but the model's inputs are {sorted(real)}")
    for name, v in real.items():
        if not v.type.HasField("tensor_type"):
            raise UnsupportedDType(f"input {name!r} is a {v.type.WhichOneof('value')}, "
                                   f"not a tensor")
        tt = v.type.tensor_type
        if name in given:
            shape = [int(d) for d in given[name]]
            if tt.HasField("shape") and len(tt.shape.dim) != len(shape):
                raise ShapeError(f"input {name!r} has rank {len(tt.shape.dim)}, "
                                 f"input_shapes gives {shape}")
            for i, (d, new) in enumerate(zip(tt.shape.dim, shape, strict=False)):
                if d.HasField("dim_value") and d.dim_value != new:
                    raise ShapeError(f"input {name!r} dimension {i} is {d.dim_value} in the "
                                     f"model, input_shapes gives {new}")
            tt.ClearField("shape")
            tt.shape.dim.extend(onnx.TensorShapeProto.Dimension(dim_value=d) for d in shape)
            continue
        if not tt.HasField("shape"):
            raise ShapeError(f"input {name!r} has no shape; give it in input_shapes")
        for i, d in enumerate(tt.shape.dim):
            if not d.HasField("dim_value") or d.dim_value < 0:
                what = f"symbolic {d.dim_param!r}" if d.dim_param else "unknown"
                dims = tuple(int(x.dim_value) if x.HasField("dim_value") and x.dim_value > 0
                             else 1 for x in tt.shape.dim)
                raise ShapeError(f"input {name!r} dimension {i} is {what}: the compiler needs "
                                 f"static shapes, pass input_shapes={{{name!r}: {dims}}} "
                                 f"(1 for a batch dimension)", input_name=name, suggested=dims)


def _infer(proto: onnx.ModelProto) -> tuple[dict[str, tuple[tuple[int, ...] | None,
                                                            DType | None]], dict[str, str]]:
    """Every tensor's (shape, dtype) from ONNX shape inference (None where unknown), and
    the tensors whose element type the IR cannot hold (name -> type name)."""
    try:
        inferred = shape_inference.infer_shapes(proto, check_type=True, strict_mode=True,
                                                data_prop=True)
    except (shape_inference.InferenceError, onnx.checker.ValidationError, RuntimeError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ShapeError(f"ONNX shape inference failed: {first}") from e
    g = inferred.graph
    types: dict[str, tuple[tuple[int, ...] | None, DType | None]] = {}
    bad: dict[str, str] = {}
    for v in [*g.value_info, *g.output]:
        if not v.type.HasField("tensor_type"):
            bad[v.name] = str(v.type.WhichOneof("value"))
            continue
        tt = v.type.tensor_type
        try:
            dtype = dtype_of(tt.elem_type, v.name) if tt.elem_type else None
        except UnsupportedDType:
            bad[v.name] = onnx.TensorProto.DataType.Name(tt.elem_type)
            dtype = None
        shape = None
        if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
            shape = tuple(int(d.dim_value) for d in tt.shape.dim)
        types[v.name] = (shape, dtype)
    return types, bad


def _static(v: onnx.ValueInfoProto, what: str) -> tuple[tuple[int, ...], DType]:
    tt = v.type.tensor_type
    dtype = dtype_of(tt.elem_type, f"{what} {v.name!r}")
    return tuple(int(d.dim_value) for d in tt.shape.dim), dtype


# ---- nodes ------------------------------------------------------------------------------------
def _node_name(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"{node.op_type}#{index}"


def _converters(proto: onnx.ModelProto, opset: int, folded: set[int]
                ) -> list[tuple[Converter, int] | None]:
    """Each node's converter and op version (None: folded at import). Every node without
    one is collected into one ``UnsupportedOps``, before shape inference runs, so an
    unsupported op is reported as such even when ONNX cannot infer its shapes."""
    out: list[tuple[Converter, int] | None] = []
    errors: list[UnsupportedOp] = []
    ml = _opset_of(proto, ML_DOMAIN)
    for index, node in enumerate(proto.graph.node):
        if index in folded and node.op_type != "Constant":
            out.append(None)
            continue
        try:
            out.append(_converter_for(node, index, opset, ml))
        except UnsupportedOp as e:
            errors.append(e)
            out.append(None)
    if errors:
        raise UnsupportedOps(errors)
    return out


def _opset_of(proto: onnx.ModelProto, domain: str) -> int | None:
    return next((int(i.version) for i in proto.opset_import if i.domain == domain), None)


def _refuse(op_type: str, opset: int | None, name: str, detail: str) -> UnsupportedOp:
    alt = ALTERNATIVES.get(op_type)
    return UnsupportedOp(op_type, opset, name, f"{detail}; instead: {alt}" if alt else detail)


def _converter_for(node: onnx.NodeProto, index: int, opset: int, ml_opset: int | None = None
                   ) -> tuple[Converter, int]:
    """The converter of a node and the op's schema version; ``UnsupportedOp`` if there is
    none."""
    name = _node_name(node, index)
    if node.domain == ML_DOMAIN:
        conv = ML_CONVERTERS.get(node.op_type)
        if conv is None:
            raise _refuse(f"{node.domain}.{node.op_type}", ml_opset, name,
                          "no converter for this ai.onnx.ml op (only the classifier outputs "
                          "ZipMap and ArrayFeatureExtractor are imported)")
        table_opset = ml_opset or 1
    elif node.domain not in DEFAULT_DOMAINS:
        raise UnsupportedOp(f"{node.domain}.{node.op_type}", None, name,
                            f"domain {node.domain!r} is not supported")
    else:
        found = CONVERTERS.get(node.op_type)
        if found is None:
            raise _refuse(node.op_type, opset, name, "no converter for this op type")
        conv, table_opset = found, opset
    try:
        version = onnx.defs.get_schema(node.op_type, table_opset, node.domain).since_version
    except onnx.defs.SchemaError as e:
        raise UnsupportedOp(node.op_type, table_opset, name, f"onnx has no schema: {e}") from e
    if version not in conv.versions:
        raise UnsupportedOp(node.op_type, table_opset, name,
                            f"version {version} of the op is not implemented "
                            f"(known: {sorted(conv.versions)})")
    attrs = sorted({a.name for a in node.attribute} - conv.attrs)
    if attrs:
        raise UnsupportedOp(node.op_type, table_opset, name, f"unknown attributes {attrs}")
    return conv, version


def _convert(b: Builder, node: onnx.NodeProto, index: int, conv: Converter, version: int) -> None:
    name = _node_name(node, index)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    for o in node.output:  # element types we cannot hold are refused before converting
        if o in b.bad_types and not conv.any_output_type:
            raise UnsupportedDType(f"{node.op_type} node {name!r}: output {o!r} is of type "
                                   f"{b.bad_types[o]}, which the IR does not support")
    conv.fn(NodeCtx(b, node, version, name, attrs))
    for o in node.output:
        if o and o not in b.tensors and o not in b.dropped:
            raise UnsupportedOp(node.op_type, b.opset, name, f"output {o!r} is not produced")
