"""Op emitters for the portable C backend: ``EMITTERS[op](ctx, node) -> str`` (C statements).

Each emitter is a pure function of the node and the graph: shapes, strides and quantisation
parameters become literals. float32 follows ``compilers.reference``'s float kernels; int8
follows ``compilers.int8`` (TFLM's arithmetic): the multipliers are computed by the same
Python functions, and the int8 -> int8 element-wise ops are 256-entry tables made by
running the reference kernel on all 256 inputs (exact by construction).

Loops walk the output in row-major order; an operand's offset is a sum of ``index * stride``
with stride 0 on broadcast axes. What it does not do: float16, per-axis QUANTIZE, int8 kernels
other than those ``passes.lower_int8`` produces, or > 6-D tensors.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ... import int8 as I8
from ...fixedpoint import quantize_multiplier
from ...ir import DType, Graph, Node, Op, Tensor
from ...reference import run
from .context import C_TYPES, CBackendError, Ctx, Emitter, float_literal

F = float_literal
INT8 = (DType.INT8, DType.UINT8)


# ---- helpers ------------------------------------------------------------------------------
def strides(shape: Sequence[int]) -> list[int]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return out[::-1]


def bstrides(shape: Sequence[int], out_shape: Sequence[int]) -> list[int]:
    """Strides of ``shape`` broadcast to ``out_shape`` (0 on broadcast axes)."""
    lead = len(out_shape) - len(shape)
    st = strides(shape)
    return [0] * lead + [0 if d == 1 and o != 1 else s for d, o, s in zip(shape, out_shape[lead:], st, strict=True)]


def loops(shape: Sequence[int], var: str = "i") -> tuple[str, str, list[str]]:
    names = [f"{var}{k}" for k in range(len(shape))]
    head = "".join(f"for (int {n} = 0; {n} < {d}; {n}++) " for n, d in zip(names, shape, strict=True))
    return head + "{", "}", names


def offset(names: Sequence[str], st: Sequence[int]) -> str:
    terms = [f"{n}*{s}" if s != 1 else n for n, s in zip(names, st, strict=True) if s != 0]
    return " + ".join(terms) or "0"


def fused_f(node: Node, v: str) -> str:
    fused = node.attr_str("fused") if "fused" in node.attr_dict else "none"
    return {"none": v, "relu": f"({v} > 0.0f ? {v} : 0.0f)",
            "relu6": f"({v} < 0.0f ? 0.0f : ({v} > 6.0f ? 6.0f : {v}))",
            "relu_n1_to_1": f"({v} < -1.0f ? -1.0f : ({v} > 1.0f ? 1.0f : {v}))",
            "tanh": f"tm_tanhf({v})"}[fused]


def is_int(t: Tensor) -> bool:
    return t.dtype in INT8 and t.quant is not None


def qparams(t: Tensor) -> tuple[float, int]:
    return I8.per_tensor(t, t.name)


def io(node: Node, ctx: Ctx) -> tuple[list[Tensor], Tensor]:
    return [ctx.t(i) for i in node.inputs], ctx.t(node.outputs[0])


def ctype(t: Tensor) -> str:
    if t.dtype not in C_TYPES:
        raise CBackendError(f"tensor {t.name!r}: {t.dtype.value} has no C type in this backend")
    return C_TYPES[t.dtype]


# ---- element-wise ------------------------------------------------------------------------
UnaryF = Callable[[Node, str], str]  # (node, C expression of the input) -> C expression of the output
_UNARY_F: dict[Op, UnaryF] = {
    Op.RELU: lambda n, v: f"({v} > 0.0f ? {v} : 0.0f)",
    Op.SIGMOID: lambda n, v: f"tm_sigmoidf({v})",
    Op.TANH: lambda n, v: f"tm_tanhf({v})",
    Op.LEAKY_RELU: lambda n, v: f"({v} >= 0.0f ? {v} : {v} * {F(n.attr_float('alpha'))})",
    Op.HARD_SIGMOID: lambda n, v: (f"tm_clampf({v} * {F(n.attr_float('alpha'))} + "
                                   f"{F(n.attr_float('beta'))})"),
    Op.HARD_SWISH: lambda n, v: f"({v} * tm_clampf({v} * (1.0f/6.0f) + 0.5f))",
    # numpy's clip: the lower bound first, then the upper one (min > max gives max)
    Op.CLIP: lambda n, v: (f"(({v} < {F(n.attr_number('min'))} ? {F(n.attr_number('min'))} : {v}) > "
                           f"{F(n.attr_number('max'))} ? {F(n.attr_number('max'))} : "
                           f"({v} < {F(n.attr_number('min'))} ? {F(n.attr_number('min'))} : {v}))"),
    Op.IDENTITY: lambda n, v: v,
}


def lut_table(ctx: Ctx, node: Node) -> str:
    """The 256-entry table of an int8/uint8 -> int8/uint8 element-wise node, by running
    the reference kernel on every input value."""
    x, y = ctx.t(node.inputs[0]), ctx.t(node.outputs[0])
    info = np.iinfo(x.dtype.numpy)
    values = np.arange(info.min, info.max + 1).astype(x.dtype.numpy)
    xs = Tensor(x.name, (256,), x.dtype, x.quant)
    ys = Tensor(y.name, (256,), y.dtype, y.quant)
    single = Graph.make("lut", [x.name], [y.name], [node], [xs, ys])
    table = run(single, {x.name: values})[y.name]
    return ctx.array(np.asarray(table).astype(y.dtype.numpy))


def _unary(ctx: Ctx, node: Node) -> str:
    (x,), y = io(node, ctx)
    n = y.size
    if x.dtype is DType.FLOAT32 and y.dtype is DType.FLOAT32:
        expr = _UNARY_F[node.op](node, "v")
        return (f"  const float *x = {ctx.ptr(x.name)}; float *y = {ctx.ptr(y.name)};\n"
                f"  for (int i = 0; i < {n}; i++) {{ float v = x[i]; y[i] = {expr}; }}")
    if x.dtype in INT8 and y.dtype in INT8:
        if node.op is Op.IDENTITY and x.quant == y.quant:
            return f"  tm_copy({ctx.ptr(y.name)}, {ctx.ptr(x.name)}, {y.nbytes});"
        lut = lut_table(ctx, node)
        off = -int(np.iinfo(x.dtype.numpy).min)
        return (f"  const {ctype(x)} *x = {ctx.ptr(x.name)}; {ctype(y)} *y = {ctx.ptr(y.name)};\n"
                f"  for (int i = 0; i < {n}; i++) y[i] = {lut}[(int)x[i] + {off}];")
    raise CBackendError(f"{node.label()}: {x.dtype.value} -> {y.dtype.value} not supported")


def _quantize(ctx: Ctx, node: Node) -> str:
    (x,), y = io(node, ctx)
    if x.dtype in INT8:
        return _unary(ctx, node)  # int -> int requantisation: a table
    scale, zp = qparams(y)
    lo, hi = np.iinfo(y.dtype.numpy).min, np.iinfo(y.dtype.numpy).max
    rnd = "tm_rint" if node.attr_str("rounding") == "half_even" else "tm_round_away"
    return (f"  const float *x = {ctx.ptr(x.name)}; {ctype(y)} *y = {ctx.ptr(y.name)};\n"
            f"  for (int i = 0; i < {y.size}; i++) {{ float q = {rnd}(x[i] / {F(np.float32(scale))}); "
            f"int32_t v = (q < -1e9f ? -1000000000 : (q > 1e9f ? 1000000000 : (int32_t)q)) + {zp}; "
            f"y[i] = ({ctype(y)})tm_clamp(v, {lo}, {hi}); }}")


def _dequantize(ctx: Ctx, node: Node) -> str:
    (x,), y = io(node, ctx)
    if x.quant is None:
        raise CBackendError(f"{node.label()}: input without quantisation")
    sc, zp = x.quant.arrays(len(x.shape))
    sc = np.broadcast_to(sc, x.shape).reshape(-1)
    zp = np.broadcast_to(zp, x.shape).reshape(-1)
    if len(set(sc.tolist())) == 1 and len(set(zp.tolist())) == 1:
        return (f"  const {ctype(x)} *x = {ctx.ptr(x.name)}; float *y = {ctx.ptr(y.name)};\n"
                f"  for (int i = 0; i < {y.size}; i++) y[i] = (float)((int32_t)x[i] - {int(zp[0])}) "
                f"* {F(sc[0])};")
    s, z = ctx.array(sc.astype(np.float32)), ctx.array(zp.astype(np.int32))
    return (f"  const {ctype(x)} *x = {ctx.ptr(x.name)}; float *y = {ctx.ptr(y.name)};\n"
            f"  for (int i = 0; i < {y.size}; i++) y[i] = (float)((int32_t)x[i] - {z}[i]) * {s}[i];")


_BIN_F = {Op.ADD: "a + b", Op.SUB: "a - b", Op.MUL: "a * b", Op.DIV: "a / b"}


def _binary(ctx: Ctx, node: Node) -> str:
    (a, b), y = io(node, ctx)
    head, tail, names = loops(y.shape)
    oa, ob = offset(names, bstrides(a.shape, y.shape)), offset(names, bstrides(b.shape, y.shape))
    oy = offset(names, strides(y.shape))
    pre = (f"  const {ctype(a)} *pa = {ctx.ptr(a.name)}; const {ctype(b)} *pb = {ctx.ptr(b.name)}; "
           f"{ctype(y)} *py = {ctx.ptr(y.name)};\n")
    if y.dtype.is_float:
        expr = fused_f(node, "r")
        return (pre + f"  {head} {ctype(y)} a = pa[{oa}], b = pb[{ob}]; float r = {_BIN_F[node.op]}; "
                f"py[{oy}] = {expr}; {tail}")
    if a.quant is None and b.quant is None and y.quant is None and a.dtype is b.dtype is y.dtype:
        # plain integers: C arithmetic in the element type (wraps like numpy; DIV truncates)
        ct = ctype(y)
        div = "(b == 0 ? 0 : a / b)" if node.op is Op.DIV else _BIN_F[node.op]
        return (pre + f"  {head} {ct} a = pa[{oa}], b = pb[{ob}]; py[{oy}] = ({ct})({div}); {tail}")
    if not (is_int(a) and is_int(b) and is_int(y)) or node.op is Op.DIV:
        raise CBackendError(f"{node.label()}: mixed or unsupported integer {node.op.name}")
    s1, z1 = qparams(a)
    s2, z2 = qparams(b)
    so, zo = qparams(y)
    lo, hi = I8.activation_range(node, y)
    if node.op is Op.MUL:
        m, sh = quantize_multiplier(float(s1) * float(s2) / float(so))
        body = f"int32_t acc = tm_mbqm(((int32_t)pa[{oa}] - {z1}) * ((int32_t)pb[{ob}] - {z2}), {m}, {sh}) + {zo};"
    else:
        (m1, sh1), (m2, sh2), (mo, sho) = I8.add_multipliers(s1, s2, so)
        sign = "+" if node.op is Op.ADD else "-"
        shift = 1 << I8.ADD_LEFT_SHIFT
        body = (f"int32_t v1 = tm_mbqm(((int32_t)pa[{oa}] - {z1}) * {shift}, {m1}, {sh1}); "
                f"int32_t v2 = tm_mbqm(((int32_t)pb[{ob}] - {z2}) * {shift}, {m2}, {sh2}); "
                f"int32_t acc = tm_mbqm(v1 {sign} v2, {mo}, {sho}) + {zo};")
    return pre + f"  {head} {body} py[{oy}] = ({ctype(y)})tm_clamp(acc, {lo}, {hi}); {tail}"


def _prelu(ctx: Ctx, node: Node) -> str:
    (x, s), y = io(node, ctx)
    head, tail, names = loops(y.shape)
    ox, os_ = offset(names, bstrides(x.shape, y.shape)), offset(names, bstrides(s.shape, y.shape))
    if is_int(x) and is_int(s) and is_int(y):  # compilers.int8_act's PRELU (TFLM arithmetic)
        (sx, zx), (sa, za), (sy, zy) = qparams(x), qparams(s), qparams(y)
        m1, e1 = quantize_multiplier(float(np.float64(sx) / np.float64(sy)))
        m2, e2 = quantize_multiplier(float(np.float64(sx) * np.float64(sa) / np.float64(sy)))
        lo, hi = np.iinfo(y.dtype.numpy).min, np.iinfo(y.dtype.numpy).max
        return (f"  const {ctype(x)} *px = {ctx.ptr(x.name)}; const {ctype(s)} *ps = {ctx.ptr(s.name)}; "
                f"{ctype(y)} *py = {ctx.ptr(y.name)};\n"
                f"  {head} int32_t v = (int32_t)px[{ox}] - {zx}; int32_t a = (int32_t)ps[{os_}] - {za}; "
                f"int32_t r = v >= 0 ? tm_mbqm(v, {m1}, {e1}) : tm_mbqm(v * a, {m2}, {e2}); "
                f"py[{offset(names, strides(y.shape))}] = ({ctype(y)})tm_clamp(r + {zy}, {lo}, {hi}); "
                f"{tail}")
    if y.dtype is not DType.FLOAT32:
        raise CBackendError(f"{node.label()}: {y.dtype.value} PRELU without quantisation")
    return (f"  const float *px = {ctx.ptr(x.name)}; const float *ps = {ctx.ptr(s.name)}; "
            f"float *py = {ctx.ptr(y.name)};\n"
            f"  {head} float v = px[{ox}]; py[{offset(names, strides(y.shape))}] = "
            f"v >= 0.0f ? v : v * ps[{os_}]; {tail}")


# ---- data movement --------------------------------------------------------------------------
def _copy(ctx: Ctx, node: Node) -> str:
    (x, *_), y = io(node, ctx)
    if x.dtype is not y.dtype:
        return _cast(ctx, node)
    return f"  tm_copy({ctx.ptr(y.name)}, {ctx.ptr(x.name)}, {y.nbytes});"


def _cast(ctx: Ctx, node: Node) -> str:
    (x,), y = io(node, ctx)
    conv = "v"
    if y.dtype.is_int and x.dtype.is_float:
        conv = "(v < 0.0f ? -(float)(int64_t)(-v) : (float)(int64_t)v)"  # truncation
    if y.dtype is DType.BOOL:
        conv = "(v != 0)"
    return (f"  const {ctype(x)} *x = {ctx.ptr(x.name)}; {ctype(y)} *y = {ctx.ptr(y.name)};\n"
            f"  for (int i = 0; i < {y.size}; i++) {{ {ctype(x)} v = x[i]; y[i] = ({ctype(y)})({conv}); }}")


def _transpose(ctx: Ctx, node: Node) -> str:
    (x,), y = io(node, ctx)
    perm = node.attr_ints("perm")
    xs = strides(x.shape)
    head, tail, names = loops(y.shape)
    ox = offset(names, [xs[p] for p in perm])
    return (f"  const {ctype(x)} *x = {ctx.ptr(x.name)}; {ctype(y)} *y = {ctx.ptr(y.name)};\n"
            f"  {head} y[{offset(names, strides(y.shape))}] = x[{ox}]; {tail}")


def _concat(ctx: Ctx, node: Node) -> str:
    y = ctx.t(node.outputs[0])
    axis = node.attr_int("axis") % len(y.shape)
    out = [f"  {ctype(y)} *y = {ctx.ptr(y.name)};"]
    start = 0
    ys = strides(y.shape)
    for name in node.inputs:
        x = ctx.t(name)
        if is_int(y) and x.quant != y.quant:
            raise CBackendError(f"{node.label()}: CONCAT input {name!r} needs requantising")
        head, tail, names = loops(x.shape)
        oy = " + ".join([offset(names, ys), f"{start * ys[axis]}"])
        out.append(f"  {{ const {ctype(x)} *x = {ctx.ptr(name)}; {head} y[{oy}] = "
                   f"x[{offset(names, strides(x.shape))}]; {tail} }}")
        start += x.shape[axis]
    if y.dtype is DType.FLOAT32 and node.attr_str("fused") != "none":
        out.append(f"  for (int i = 0; i < {y.size}; i++) {{ float r = y[i]; y[i] = {fused_f(node, 'r')}; }}")
    return "\n".join(out)


def _pad(ctx: Ctx, node: Node) -> str:
    (x, *_), y = io(node, ctx)
    pads = node.attr_pairs("pads")
    mode = node.attr_str("mode")
    head, tail, names = loops(y.shape)
    if mode != "constant":
        src = {"edge": "(j < 0 ? 0 : (j >= {n} ? {n} - 1 : j))",
               "reflect": "(j < 0 ? -j : (j >= {n} ? 2*({n} - 1) - j : j))",
               "wrap": "(((j % {n}) + {n}) % {n})"}.get(mode)
        if src is None:
            raise CBackendError(f"{node.label()}: {mode} padding")
        idx = " + ".join(f"({src.replace('j', f'({v} - {b})').format(n=d)})*{s_}"
                         for v, (b, _), d, s_ in zip(names, pads, x.shape, strides(x.shape), strict=True))
        return (f"  const {ctype(x)} *x = {ctx.ptr(x.name)}; {ctype(y)} *y = {ctx.ptr(y.name)};\n"
                f"  {head} y[{offset(names, strides(y.shape))}] = x[{idx or '0'}]; {tail}")
    value = node.attr_number("value")
    val = F(value) if y.dtype.is_float else str(int(value))
    conds = " && ".join(f"{n} >= {b} && {n} < {b + d}" for n, (b, _), d in zip(names, pads, x.shape, strict=True))
    ox = " + ".join(f"({n} - {b})*{s}" for n, (b, _), s in zip(names, pads, strides(x.shape), strict=True))
    return (f"  const {ctype(x)} *x = {ctx.ptr(x.name)}; {ctype(y)} *y = {ctx.ptr(y.name)};\n"
            f"  {head} y[{offset(names, strides(y.shape))}] = ({conds or '1'}) ? x[{ox or '0'}] : "
            f"({ctype(y)}){val}; {tail}")


EMITTERS: dict[Op, Emitter] = {
    **{op: _unary for op in _UNARY_F},
    Op.ADD: _binary, Op.SUB: _binary, Op.MUL: _binary, Op.DIV: _binary, Op.PRELU: _prelu,
    Op.QUANTIZE: _quantize, Op.DEQUANTIZE: _dequantize,
    Op.RESHAPE: _copy, Op.CAST: _cast, Op.TRANSPOSE: _transpose, Op.CONCAT: _concat,
    Op.PAD: _pad,
}
