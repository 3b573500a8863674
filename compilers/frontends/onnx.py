"""The ONNX frontend: ``import_onnx(model, input_shapes=None) -> Graph``.

What it does, in order:

1. Reads the model (a ``ModelProto``, the serialised bytes, or a path) and checks it with
   ``onnx.checker``; an unreadable, truncated or invalid file is a ``ModelFormatError``.
2. Reads the default-domain opset. 7 and newer are imported directly (each converter
   knows which versions of its op it implements, up to what the installed onnx defines);
   older models are first upgraded with ``onnx.version_converter``.
3. Treats every graph input that has an initializer as a constant (IR 3 models such as
   the zoo's mnist-8 list their weights as inputs too).
4. Makes shapes static. ``input_shapes`` (name -> full shape) fixes inputs; any dimension
   that is still symbolic or unknown is a ``ShapeError`` naming the input, the dimension
   and how to fix it. **Policy: no silent defaults** (not even batch "N" -> 1): a compiler
   that picked a batch size would hide it from the memory planner's numbers.
   ``onnx.shape_inference`` (strict, with data propagation) then types every tensor.
5. Converts node by node through the table ``CONVERTERS`` (``frontends.onnx_ops``):
   initializers and ``Constant`` nodes become constant tensors. An op type (or a version
   of it, an attribute, or a domain) without a converter is ``UnsupportedOp`` naming op
   type, opset and node; this is checked for all nodes before shape inference runs. Each
   output's shape is computed by our own rules and checked against ONNX's.
6. Returns a validated, topologically ordered ``Graph`` in ONNX's NCHW layout.

What it does not do: no optimisation or constant folding (ops on constants stay ops), no
layout change, no custom domains (com.microsoft ...), no control flow, sequences or
optional types, no sparse initializers, no training.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper, helper, numpy_helper, shape_inference, version_converter

from ..errors import GraphError, ModelFormatError, ShapeError, UnsupportedDType, UnsupportedOp
from ..ir import DType, Graph, Tensor
from .onnx_context import CONVERTERS, Builder, Converter, NodeCtx, dtype_of
from . import onnx_ops  # noqa: F401  (fills CONVERTERS)

MIN_OPSET = 7
DEFAULT_DOMAINS = ("", "ai.onnx")

ModelLike = onnx.ModelProto | bytes | str | os.PathLike[str]


def import_onnx(model: ModelLike, *, input_shapes: Mapping[str, Sequence[int]] | None = None
                ) -> Graph:
    """Import an ONNX model as a validated IR ``Graph`` (see the module docstring)."""
    proto = _load(model)
    opset = _default_opset(proto)
    if opset < MIN_OPSET:
        proto, opset = _upgrade(proto, opset)
    if opset > onnx.defs.onnx_opset_version():
        raise ModelFormatError(f"opset {opset} is newer than the installed onnx knows "
                               f"({onnx.defs.onnx_opset_version()})")
    converters = [_converter_for(node, index, opset) for index, node in enumerate(proto.graph.node)]
    initializers = {t.name: t for t in proto.graph.initializer}
    _fix_input_shapes(proto, initializers, dict(input_shapes or {}))
    onnx_types, bad_types = _infer(proto)

    names = {n for node in proto.graph.node for n in [*node.input, *node.output] if n}
    names |= {v.name for v in proto.graph.input} | set(initializers)
    b = Builder(opset, onnx_types, names, bad_types)
    for name, init in initializers.items():
        dtype_of(init.data_type, f"initializer {name!r}")
        b.add_const(name, numpy_helper.to_array(init))
    inputs = [v.name for v in proto.graph.input if v.name not in initializers]
    for v in proto.graph.input:
        if v.name not in initializers:
            shape, dtype = _static(v, "input")
            b.tensors[v.name] = Tensor(v.name, shape, dtype)

    for index, (node, (conv, version)) in enumerate(zip(proto.graph.node, converters)):
        _convert(b, node, index, conv, version)

    outputs = [o.name for o in proto.graph.output]
    for o in outputs:
        if o not in b.tensors:
            raise GraphError(f"graph output {o!r} is never produced")
    graph = Graph.make(proto.graph.name or "onnx", inputs, outputs, b.nodes, b.tensors.values())
    return graph.toposorted().validate()


# ---- loading ----------------------------------------------------------------------------------
def _load(model: ModelLike) -> onnx.ModelProto:
    base_dir = None
    if isinstance(model, onnx.ModelProto):
        proto = onnx.ModelProto()
        proto.CopyFrom(model)  # input_shapes are written into it: never touch the caller's
    else:
        if isinstance(model, (bytes, bytearray)):
            data = bytes(model)
        else:
            path = Path(model)
            try:
                data = path.read_bytes()
            except OSError as e:
                raise ModelFormatError(f"cannot read ONNX model {path}: {e}") from e
            base_dir = str(path.parent)
        proto = onnx.ModelProto()
        try:
            proto.ParseFromString(data)
        except (DecodeError, ValueError, RuntimeError) as e:
            raise ModelFormatError(f"not a valid ONNX protobuf ({len(data)} bytes; truncated "
                                   f"or corrupt?): {e}") from e
        if base_dir is not None and any(
                t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
            try:
                external_data_helper.load_external_data_for_model(proto, base_dir)
            except OSError as e:
                raise ModelFormatError(f"cannot read the model's external data: {e}") from e
    if not proto.graph.node and not proto.graph.output:
        raise ModelFormatError("the ONNX model has an empty graph (truncated or corrupt?)")
    try:
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFormatError(f"invalid ONNX model (truncated or corrupt?): {first}") from e
    return proto


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
            for i, (d, new) in enumerate(zip(tt.shape.dim, shape)):
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
                raise ShapeError(f"input {name!r} dimension {i} is {what}: the compiler needs "
                                 f"static shapes, pass input_shapes={{{name!r}: (...)}}")


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


def _converter_for(node: onnx.NodeProto, index: int, opset: int) -> tuple[Converter, int]:
    """The converter of a node and the op's schema version; ``UnsupportedOp`` if there is
    none. Checked for every node before shape inference, so an unsupported op is reported
    as such even when ONNX cannot infer its shapes."""
    name = _node_name(node, index)
    if node.domain not in DEFAULT_DOMAINS:
        raise UnsupportedOp(f"{node.domain}.{node.op_type}", None, name,
                            f"domain {node.domain!r} is not supported")
    conv = CONVERTERS.get(node.op_type)
    if conv is None:
        raise UnsupportedOp(node.op_type, opset, name, "no converter for this op type")
    try:
        version = onnx.defs.get_schema(node.op_type, opset, node.domain).since_version
    except onnx.defs.SchemaError as e:
        raise UnsupportedOp(node.op_type, opset, name, f"onnx has no schema: {e}") from e
    if version not in conv.versions:
        raise UnsupportedOp(node.op_type, opset, name,
                            f"version {version} of the op is not implemented "
                            f"(known: {sorted(conv.versions)})")
    attrs = sorted({a.name for a in node.attribute} - conv.attrs)
    if attrs:
        raise UnsupportedOp(node.op_type, opset, name, f"unknown attributes {attrs}")
    return conv, version


def _convert(b: Builder, node: onnx.NodeProto, index: int, conv: Converter, version: int) -> None:
    name = _node_name(node, index)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    for o in node.output:  # element types we cannot hold are refused before converting
        if o in b.bad_types:
            raise UnsupportedDType(f"{node.op_type} node {name!r}: output {o!r} is of type "
                                   f"{b.bad_types[o]}, which the IR does not support")
    conv.fn(NodeCtx(b, node, version, name, attrs))
    for o in node.output:
        if o and o not in b.tensors:
            raise UnsupportedOp(node.op_type, b.opset, name, f"output {o!r} is not produced")
