"""The IR's building blocks: element types (``DType``), quantisation (``Quant``), tensors
(``Tensor``), the op enum (``Op``) with every op's attribute schema (``OP_ATTRS``), defaults and
arity, and nodes (``Node``).

Why a module of its own: ``compilers.shapes`` (the shape rules) needs these and
``compilers.ir.Graph.validate`` needs the shape rules, so the imports run ir_base <- shapes
<- ir without a circle. ``compilers.ir`` re-exports every name here: import from there.

What it does not do: graphs and their validation (``compilers.ir``), shape rules
(``compilers.shapes``), op semantics (``compilers.reference``).
"""


from __future__ import annotations

import enum
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Container, Iterable, Mapping, Union

import numpy as np

from .errors import GraphError, UnsupportedDType


class DType(enum.Enum):
    """Element types. ``value`` is the NumPy name."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"
    FLOAT64 = "float64"
    INT8 = "int8"
    UINT8 = "uint8"
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    BOOL = "bool"

    @property
    def numpy(self) -> np.dtype:
        return np.dtype(self.value)

    @property
    def is_float(self) -> bool:
        return self in (DType.FLOAT32, DType.FLOAT16, DType.FLOAT64)

    @property
    def is_int(self) -> bool:
        return not self.is_float and self is not DType.BOOL

    @property
    def itemsize(self) -> int:
        return self.numpy.itemsize

    @classmethod
    def from_numpy(cls, dtype: np.dtype | type) -> "DType":
        try:
            return cls(np.dtype(dtype).name)
        except (ValueError, TypeError) as e:
            raise UnsupportedDType(f"element type {np.dtype(dtype)} has no IR DType") from e


@dataclass(frozen=True)
class Quant:
    """Affine quantisation: ``real = scale * (q - zero_point)``. Per-tensor when ``axis`` is
    None (one scale, one zero point), else per-channel along ``axis``."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", tuple(float(s) for s in self.scale))
        object.__setattr__(self, "zero_point", tuple(int(z) for z in self.zero_point))
        if not self.scale or len(self.scale) != len(self.zero_point):
            raise GraphError(f"quant: {len(self.scale)} scales but {len(self.zero_point)} zero points")
        if self.axis is None and len(self.scale) != 1:
            raise GraphError(f"quant: per-tensor quantisation with {len(self.scale)} scales")

    def arrays(self, rank: int) -> tuple[np.ndarray, np.ndarray]:
        """Scale (float32) and zero point (int64) shaped to broadcast against a tensor of
        ``rank`` dimensions."""
        shape = [1] * rank
        if self.axis is not None:
            shape[self.axis] = len(self.scale)
        return (np.asarray(self.scale, np.float32).reshape(shape),
                np.asarray(self.zero_point, np.int64).reshape(shape))


@dataclass(frozen=True)
class Tensor:
    """A named, statically shaped value. ``data`` is set (read-only) for constants."""

    name: str
    shape: tuple[int, ...]
    dtype: DType
    quant: Quant | None = None
    data: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if any(d < 0 for d in self.shape):
            raise GraphError(f"tensor {self.name!r}: negative dimension in {self.shape}")
        if self.data is not None:
            data = np.array(self.data, dtype=self.dtype.numpy, copy=True)
            if data.shape != self.shape:
                raise GraphError(f"tensor {self.name!r}: data shape {data.shape} != {self.shape}")
            data.setflags(write=False)
            object.__setattr__(self, "data", data)
        if self.quant is not None and self.quant.axis is not None:
            ax = self.quant.axis
            if not 0 <= ax < len(self.shape) or self.shape[ax] != len(self.quant.scale):
                raise GraphError(f"tensor {self.name!r}: per-channel quant axis {ax} with "
                                 f"{len(self.quant.scale)} scales does not fit shape {self.shape}")

    @classmethod
    def const(cls, name: str, data: np.ndarray, quant: Quant | None = None) -> "Tensor":
        data = np.asarray(data)
        return cls(name, data.shape, DType.from_numpy(data.dtype), quant, data)

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


class Op(enum.Enum):
    """Our ops. Semantics: ``compilers.reference``; shapes: ``compilers.shapes``."""

    CONV = "conv"
    CONV_TRANSPOSE = "conv_transpose"
    GEMM = "gemm"
    MATMUL = "matmul"
    ADD = "add"
    SUB = "sub"
    MUL = "mul"
    DIV = "div"
    RELU = "relu"
    CLIP = "clip"
    LEAKY_RELU = "leaky_relu"
    PRELU = "prelu"
    SIGMOID = "sigmoid"
    HARD_SIGMOID = "hard_sigmoid"
    HARD_SWISH = "hard_swish"
    TANH = "tanh"
    SOFTMAX = "softmax"
    MAX_POOL = "max_pool"
    AVG_POOL = "avg_pool"
    REDUCE_MEAN = "reduce_mean"
    BATCH_NORM = "batch_norm"
    RESHAPE = "reshape"
    TRANSPOSE = "transpose"
    CONCAT = "concat"
    PAD = "pad"
    CAST = "cast"
    IDENTITY = "identity"
    QUANTIZE = "quantize"
    DEQUANTIZE = "dequantize"
    ARGMAX = "argmax"


AttrValue = Union[int, float, bool, str, DType, tuple[int, ...], tuple[tuple[int, int], ...]]

# Attribute kinds: "int", "float", "number" (int or float), "bool", "str", "dtype",
# "ints" (tuple of int), "pairs" (tuple of (begin, end) int pairs, one per axis).
_KIND_CHECK = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, float),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "dtype": lambda v: isinstance(v, DType),
    "ints": lambda v: isinstance(v, tuple) and all(isinstance(i, int) for i in v),
    "pairs": lambda v: isinstance(v, tuple) and all(
        isinstance(p, tuple) and len(p) == 2 and all(isinstance(i, int) for i in p) for p in v),
}

_WINDOW = {"strides": "ints", "dilations": "ints", "pads": "pairs"}

# Every attribute of every op, with its kind. Nodes carry exactly these (no defaults).
OP_ATTRS: Mapping[Op, Mapping[str, str]] = MappingProxyType({
    Op.CONV: {**_WINDOW, "group": "int"},
    Op.CONV_TRANSPOSE: {**_WINDOW, "group": "int", "output_padding": "ints"},
    Op.GEMM: {"alpha": "float", "beta": "float", "trans_a": "bool", "trans_b": "bool"},
    Op.CLIP: {"min": "number", "max": "number"},
    Op.LEAKY_RELU: {"alpha": "float"},
    Op.HARD_SIGMOID: {"alpha": "float", "beta": "float"},
    Op.SOFTMAX: {"axis": "int"},
    Op.MAX_POOL: {**_WINDOW, "kernel": "ints", "ceil_mode": "bool"},
    Op.AVG_POOL: {**_WINDOW, "kernel": "ints", "ceil_mode": "bool", "count_include_pad": "bool"},
    Op.REDUCE_MEAN: {"axes": "ints", "keepdims": "bool"},
    Op.BATCH_NORM: {"epsilon": "float"},
    Op.RESHAPE: {"shape": "ints"},
    Op.TRANSPOSE: {"perm": "ints"},
    Op.CONCAT: {"axis": "int"},
    Op.PAD: {"pads": "pairs", "mode": "str", "value": "number"},
    Op.CAST: {"to": "dtype"},
    Op.QUANTIZE: {"rounding": "str"},
    Op.ARGMAX: {"axis": "int", "keepdims": "bool", "select_last_index": "bool", "to": "dtype"},
})

# Fused activations (TFLite's FusedActivationFunction, and what the fusion pass makes):
# the op's result goes through this before it is stored. In the integer domain a fused
# activation is a clamp of the output range (see compilers.reference's int8 kernels).
FUSED_ACTIVATIONS = ("none", "relu", "relu6", "relu_n1_to_1", "tanh")
FUSABLE = frozenset({"CONV", "CONV_TRANSPOSE", "GEMM", "MATMUL", "ADD", "SUB", "MUL", "DIV",
                     "MAX_POOL", "AVG_POOL", "CONCAT"})
OP_ATTRS = MappingProxyType({op: ({**OP_ATTRS.get(op, {}), "fused": "str"} if op.name in FUSABLE
                                  else OP_ATTRS.get(op, {})) for op in Op})

# Attributes ``Node.make`` fills in when a frontend or pass leaves them out.
OP_DEFAULTS: Mapping[Op, Mapping[str, "AttrValue"]] = MappingProxyType(
    {**{op: {"fused": "none"} for op in Op if op.name in FUSABLE},
     Op.QUANTIZE: {"rounding": "half_even"}})
# QUANTIZE rounding: ONNX QuantizeLinear rounds half to even, TFLite's QUANTIZE half away from 0.
ROUNDINGS = ("half_even", "half_away")

# (min inputs, max inputs, outputs). CONCAT takes any number >= 1.
OP_ARITY: Mapping[Op, tuple[int, int, int]] = MappingProxyType({
    **{op: (1, 1, 1) for op in Op},
    Op.CONV: (2, 3, 1), Op.CONV_TRANSPOSE: (2, 3, 1), Op.GEMM: (2, 3, 1),
    Op.MATMUL: (2, 2, 1), Op.ADD: (2, 2, 1), Op.SUB: (2, 2, 1), Op.MUL: (2, 2, 1),
    Op.DIV: (2, 2, 1), Op.PRELU: (2, 2, 1), Op.BATCH_NORM: (5, 5, 1),
    Op.CONCAT: (1, 1 << 30, 1),
})


def fresh_name(base: str, *taken: Container[str], sep: str = "_", always: bool = False) -> str:
    """The first of ``base`` (unless ``always``), ``base<sep>1``, ``base<sep>2``, ... that is in
    none of ``taken``: how frontends, passes, the quantiser and backends name new tensors."""
    def free(name: str) -> bool:
        return not any(name in t for t in taken)
    if not always and free(base):
        return base
    k = 1
    while not free(f"{base}{sep}{k}"):
        k += 1
    return f"{base}{sep}{k}"


def _freeze(v: object) -> AttrValue:
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(i) for i in v)  # type: ignore[return-value]
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v  # type: ignore[return-value]


@dataclass(frozen=True)
class Node:
    """One op application. ``attrs`` is a name-sorted tuple of (name, value) pairs."""

    op: Op
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: tuple[tuple[str, AttrValue], ...] = ()
    name: str = ""

    @classmethod
    def make(cls, op: Op, inputs: Iterable[str], outputs: Iterable[str], *, name: str = "",
             **attrs: object) -> "Node":
        merged = {**OP_DEFAULTS.get(op, {}), **attrs}
        frozen = tuple(sorted((k, _freeze(v)) for k, v in merged.items()))
        return cls(op, tuple(inputs), tuple(outputs), frozen, name)

    def attr(self, key: str) -> AttrValue:
        for k, v in self.attrs:
            if k == key:
                return v
        raise KeyError(f"node {self.name!r} ({self.op.name}) has no attribute {key!r}")

    @property
    def attr_dict(self) -> dict[str, AttrValue]:
        return dict(self.attrs)

    # Typed accessors: the attribute, checked to be of the kind OP_ATTRS promises.
    def _typed(self, key: str, kind: str) -> Any:
        value = self.attr(key)
        if not _KIND_CHECK[kind](value):
            raise GraphError(f"{self.label()}: attribute {key!r}={value!r} is not of kind {kind}")
        return value

    def attr_int(self, key: str) -> int:
        return int(self._typed(key, "int"))

    def attr_float(self, key: str) -> float:
        return float(self._typed(key, "float"))

    def attr_number(self, key: str) -> int | float:
        value: int | float = self._typed(key, "number")
        return value

    def attr_bool(self, key: str) -> bool:
        return bool(self._typed(key, "bool"))

    def attr_str(self, key: str) -> str:
        return str(self._typed(key, "str"))

    def attr_dtype(self, key: str) -> DType:
        value: DType = self._typed(key, "dtype")
        return value

    def attr_ints(self, key: str) -> tuple[int, ...]:
        value: tuple[int, ...] = self._typed(key, "ints")
        return value

    def attr_pairs(self, key: str) -> tuple[tuple[int, int], ...]:
        value: tuple[tuple[int, int], ...] = self._typed(key, "pairs")
        return value

    def label(self) -> str:
        return f"{self.op.name} node {self.name!r}"
