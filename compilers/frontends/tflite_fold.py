"""Import-time constant evaluation for the TFLite frontend: the shape arithmetic that Keras 3
(TensorFlow 2.16+) ``TFLiteConverter`` exports keep around ``Flatten`` when the batch is
``None`` (``SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE``), and any other operator whose inputs
are all constants, becomes constant data before it is converted.

What it does: ``FOLDERS`` maps a builtin operator to a NumPy function of its constant
inputs (and options) giving its outputs; ``fold(ctx)`` applies it when every input is a
constant (``SHAPE`` needs only its input's static shape) and stores the results as the
outputs' constant values, so the readers (a RESHAPE's new-shape input) see constants. The
functions follow TFLite's reference kernels (``strided_slice.cc``'s mask rules, ``pack``,
``gather``); only what shape arithmetic uses is there.

Why our own: no library folds TFLite graphs short of TensorFlow itself, far too heavy here.

What it does not do: fold float activations (``passes.constant_folding`` does that on the
IR), STRIDED_SLICE with ellipsis or new-axis masks (refused by name).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
from ai_edge_litert import schema_py_generated as S

if TYPE_CHECKING:
    from .tflite_ops import OpCtx

B = S.BuiltinOperator
Folder = Callable[[Any, Sequence[np.ndarray], "OpCtx"], list[np.ndarray]]


def _shape(o: Any, xs: Sequence[np.ndarray], ctx: "OpCtx") -> list[np.ndarray]:
    out_type = getattr(o, "outType", S.TensorType.INT32) if o is not None else S.TensorType.INT32
    dtype = np.int64 if out_type == S.TensorType.INT64 else np.int32
    return [np.asarray(ctx.b.shape(ctx.input(0)), dtype)]


def _strided_slice(o: Any, xs: Sequence[np.ndarray], ctx: "OpCtx") -> list[np.ndarray]:
    x, begin, end, strides = xs[0], xs[1].reshape(-1), xs[2].reshape(-1), xs[3].reshape(-1)

    def get(k: str) -> int:
        return int(getattr(o, k, 0) or 0) if o is not None else 0

    if get("ellipsisMask") or get("newAxisMask"):
        raise ctx.unsupported("STRIDED_SLICE with an ellipsis or new-axis mask")
    index: list[slice | int] = []
    for k in range(len(begin)):
        b, e, s = int(begin[k]), int(end[k]), int(strides[k])
        if get("shrinkAxisMask") >> k & 1:
            index.append(b)
            continue
        index.append(slice(None if get("beginMask") >> k & 1 else b,
                           None if get("endMask") >> k & 1 else e, s))
    return [np.ascontiguousarray(x[tuple(index)])]


def _pack(o: Any, xs: Sequence[np.ndarray], ctx: "OpCtx") -> list[np.ndarray]:
    return [np.stack(xs, axis=int(o.axis) if o is not None else 0)]


def _concat(o: Any, xs: Sequence[np.ndarray], ctx: "OpCtx") -> list[np.ndarray]:
    return [np.concatenate([np.atleast_1d(x) for x in xs], axis=int(o.axis))]


def _gather(o: Any, xs: Sequence[np.ndarray], ctx: "OpCtx") -> list[np.ndarray]:
    return [np.take(xs[0], xs[1].astype(np.int64), axis=int(o.axis) if o is not None else 0)]


def _cast(o: Any, xs: Sequence[np.ndarray], ctx: "OpCtx") -> list[np.ndarray]:
    return [xs[0].astype(ctx.b.dtype(ctx.output()).numpy)]


def _reshape(o: Any, xs: Sequence[np.ndarray], ctx: "OpCtx") -> list[np.ndarray]:
    return [xs[0].reshape(ctx.b.shape(ctx.output()))]


def _arith(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Folder:
    def fold(o: Any, xs: Sequence[np.ndarray], ctx: "OpCtx") -> list[np.ndarray]:
        return [np.asarray(fn(xs[0], xs[1])).astype(xs[0].dtype)]
    return fold


def _floor_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    q: np.ndarray = np.floor_divide(a, b)
    return q


FOLDERS: dict[int, Folder] = {
    B.SHAPE: _shape, B.STRIDED_SLICE: _strided_slice, B.PACK: _pack,
    B.CONCATENATION: _concat, B.GATHER: _gather, B.CAST: _cast,
    B.RESHAPE: _reshape, B.SQUEEZE: _reshape, B.EXPAND_DIMS: _reshape,
    B.ADD: _arith(np.add), B.SUB: _arith(np.subtract), B.MUL: _arith(np.multiply),
    B.FLOOR_DIV: _arith(_floor_div), B.MAXIMUM: _arith(np.maximum),
    B.MINIMUM: _arith(np.minimum),
}
ONLY_SHAPE = frozenset({B.SHAPE})  # needs its input's shape, not its value
INTEGER_ONLY = frozenset({B.ADD, B.SUB, B.MUL, B.CONCATENATION, B.CAST, B.RESHAPE,
                          B.SQUEEZE, B.EXPAND_DIMS, B.GATHER})  # float ones stay IR ops


def foldable(ctx: "OpCtx", builtin: int) -> bool:
    """Whether ``ctx``'s operator folds: a folder exists and its inputs are constants (for
    the ops that also exist as IR ops, only integer shape arithmetic is folded here)."""
    if builtin not in FOLDERS:
        return False
    if builtin in ONLY_SHAPE:
        return True
    ins = [i for i in ctx.inputs() if i >= 0]
    if not ins or not all(ctx.b.is_const(i) for i in ins):
        return False
    if builtin in INTEGER_ONLY:
        return all(ctx.b.dtype(i).is_int and ctx.b.quant(i) is None for i in ins)
    return True


def fold(ctx: "OpCtx", builtin: int) -> None:
    """Store the outputs of a foldable operator as constants."""
    xs = [] if builtin in ONLY_SHAPE else [ctx.b.const(i) for i in ctx.inputs() if i >= 0]
    results = FOLDERS[builtin](ctx.options, xs, ctx)  # type: ignore[arg-type]
    for k, value in zip(ctx.outputs(), results, strict=True):
        ctx.b.set_const(k, np.asarray(value, ctx.b.dtype(k).numpy).reshape(ctx.b.shape(k)))


__all__ = ["FOLDERS", "fold", "foldable"]
