"""The state the ONNX frontend's converters work on: ``Builder`` (the graph being built) and
``NodeCtx`` (one ONNX node being converted), plus the converter registry.

What it does: a converter gets a ``NodeCtx`` and calls ``emit`` to add IR nodes. ``emit``
types every new output with the op's shape rule (``compilers.shapes``) and, for tensors
ONNX's own shape inference has typed, checks that both agree: so each node's output shape
is computed twice, independently, at import. Converters read attributes with defaults
(``attr``), constant operands (``const``/``need_const``), and raise ``ctx.unsupported(..)``
for configurations we do not express.

What it does not do: no ONNX parsing or shape inference (``frontends.onnx``), no op
semantics (``frontends.onnx_ops``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import onnx
from onnx import helper

from ..errors import GraphError, UnsupportedDType, UnsupportedOp
from ..ir import DType, Node, Op, Tensor, fresh_name
from ..shapes import infer_node


def dtype_of(elem_type: int, what: str) -> DType:
    """The IR DType of an ONNX ``TensorProto`` element type, or ``UnsupportedDType``."""
    try:
        np_dtype = helper.tensor_dtype_to_np_dtype(elem_type)
        return DType.from_numpy(np_dtype)
    except (KeyError, ValueError, TypeError, UnsupportedDType):
        name = onnx.TensorProto.DataType.Name(elem_type) if elem_type in \
            onnx.TensorProto.DataType.values() else str(elem_type)
        raise UnsupportedDType(f"{what}: element type {name} is not supported") from None


@dataclass
class Builder:
    """The graph under construction."""

    opset: int
    onnx_types: dict[str, tuple[tuple[int, ...] | None, DType | None]]  # from shape inference
    taken: set[str]                                                     # every ONNX name
    bad_types: dict[str, str]               # tensors of element types the IR cannot hold
    tensors: dict[str, Tensor] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)  # tensor -> why it is not imported
    notes: list[str] = field(default_factory=list)          # ImportNote texts, in model order

    def drop(self, name: str, reason: str) -> None:
        """``name`` is not imported (nor anything computed from it): graph outputs that
        depend on it are left out of the graph with an ``ImportNote`` saying ``reason``."""
        self.dropped[name] = reason

    def fresh(self, base: str) -> str:
        name = fresh_name(base, self.taken, self.tensors, sep="__", always=True)
        self.taken.add(name)
        return name

    def add_const(self, name: str, data: np.ndarray) -> str:
        self.tensors[name] = Tensor.const(name, np.asarray(data))
        return name


@dataclass
class NodeCtx:
    """One ONNX node under conversion."""

    b: Builder
    proto: onnx.NodeProto
    version: int          # the since_version of the op's schema at the model's opset
    name: str             # the node's name, or a stand-in for messages
    attrs: dict[str, Any]

    # ---- reading ---------------------------------------------------------------------------
    def unsupported(self, detail: str) -> UnsupportedOp:
        return UnsupportedOp(self.proto.op_type, self.b.opset, self.name, detail)

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    def opt_input(self, i: int) -> str | None:
        """The i-th input name, None if absent (omitted or given as "")."""
        names = self.proto.input
        return names[i] if i < len(names) and names[i] else None

    def opt_output(self, i: int) -> str | None:
        names = self.proto.output
        return names[i] if i < len(names) and names[i] else None

    def present_inputs(self) -> list[str]:
        """The names of the inputs that are given (for ops whose optional inputs trail)."""
        return [name for name in self.proto.input if name]

    def input(self, i: int) -> str:
        """The i-th input name, which the op requires."""
        name = self.opt_input(i)
        if name is None:
            raise self.unsupported(f"required input {i} is missing")
        return name

    def output(self, i: int = 0) -> str:
        name = self.opt_output(i)
        if name is None:
            raise self.unsupported(f"required output {i} is missing")
        return name

    def tensor(self, name: str) -> Tensor:
        try:
            return self.b.tensors[name]
        except KeyError:
            raise GraphError(f"{self.proto.op_type} node {self.name!r}: input {name!r} is "
                             f"not defined before it is used") from None

    def shape(self, i: int) -> tuple[int, ...]:
        return self.tensor(self.input(i)).shape

    def const(self, i: int) -> np.ndarray | None:
        """The value of input i if it is a constant, else None (also None if absent)."""
        name = self.opt_input(i)
        return None if name is None else self.tensor(name).data

    def need_const(self, i: int, what: str) -> np.ndarray:
        """The value of input i, which must be a constant (the IR makes it an attribute)."""
        value = self.const(i)
        if value is None:
            raise self.unsupported(f"{what} (input {i}, {self.opt_input(i)!r}) must be a constant")
        return value

    def axis(self, axis: int, rank: int) -> int:
        if not -rank <= axis < max(rank, 1):
            raise self.unsupported(f"axis {axis} out of range for rank {rank}")
        return axis % rank if rank else 0

    # ---- writing ---------------------------------------------------------------------------
    def define(self, tensor: Tensor) -> None:
        """Give an output its tensor before ``emit`` (when the rule cannot: quant)."""
        self.b.tensors[tensor.name] = tensor

    def emit(self, op: Op, inputs: Iterable[str], outputs: Iterable[str] | None = None,
             **attrs: Any) -> str:
        """Add one IR node; outputs default to one fresh intermediate. Returns the first
        output name."""
        ins = tuple(inputs)
        outs = tuple(outputs) if outputs is not None else (self.b.fresh(self.name or "t"),)
        node = Node.make(op, ins, outs, name=self.name, **attrs)
        in_tensors = [self.tensor(i) for i in ins]
        declared = [self.b.tensors[o] for o in outs if o in self.b.tensors]
        try:
            rules = infer_node(node, in_tensors, declared)
        except GraphError:
            raise
        except Exception as e:  # an attribute the rule cannot digest
            raise GraphError(f"{node.label()}: {e}") from e
        for o, (shape, dtype) in zip(outs, rules, strict=True):
            known = self.b.onnx_types.get(o)
            if known is not None:
                k_shape, k_dtype = known
                if (k_shape is not None and k_shape != shape) or \
                        (k_dtype is not None and k_dtype is not dtype):
                    raise GraphError(
                        f"{self.proto.op_type} node {self.name!r}: output {o!r} is "
                        f"{dtype.value}{list(shape)} by our rules but "
                        f"{k_dtype and k_dtype.value}{list(k_shape or [])} by ONNX shape inference")
            if o not in self.b.tensors:
                self.b.tensors[o] = Tensor(o, shape, dtype)
        self.b.nodes.append(node)
        return outs[0]


ConvertFn = Callable[[NodeCtx], None]


@dataclass(frozen=True)
class Converter:
    """How to convert one ONNX op type: the function, the schema versions (``since_version``
    values) whose semantics it implements, and the attributes it understands."""

    fn: ConvertFn
    versions: frozenset[int]
    attrs: frozenset[str]
    any_output_type: bool = False  # outputs of types the IR cannot hold are the fn's business


CONVERTERS: dict[str, Converter] = {}
ML_CONVERTERS: dict[str, Converter] = {}   # the ai.onnx.ml domain (classifier outputs)
ML_DOMAIN = "ai.onnx.ml"


def converts(op_type: str, versions: Iterable[int], attrs: Iterable[str] = (), *,
             domain: str = "", any_output_type: bool = False
             ) -> Callable[[ConvertFn], ConvertFn]:
    """Register a converter for ``op_type`` of ``domain`` (decorator)."""
    table = ML_CONVERTERS if domain == ML_DOMAIN else CONVERTERS

    def register(fn: ConvertFn) -> ConvertFn:
        table[op_type] = Converter(fn, frozenset(versions), frozenset(attrs), any_output_type)
        return fn
    return register
