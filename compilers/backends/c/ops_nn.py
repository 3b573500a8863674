"""Op emitters for the portable C backend, part 2: the window and reduction ops (CONV,
CONV_TRANSPOSE, GEMM, MATMUL, MAX_POOL, AVG_POOL, REDUCE_MEAN, SOFTMAX, BATCH_NORM, ARGMAX), float32 and int8.

Registered into ``emit.EMITTERS`` (with ``ops``). Windows cover any number of spatial axes (1-D and 2-D in
practice); cells outside the input are skipped (zero padding for CONV: the integer kernels
subtract the input zero point first, so a skipped cell is a padded zero point, as TFLM).
int8 parameters come from ``compilers.int8`` (``channel_multipliers``, ``activation_range``)
so the C and the reference cannot drift apart. Not done: CONV_TRANSPOSE, batched MATMUL
with broadcasting of both operands beyond equal batch shapes; integer CONV_TRANSPOSE.
"""

from __future__ import annotations

import numpy as np

from ... import int8 as I8
from ...ir import DType, Node, Op
from .context import CBackendError, Ctx, Emitter
from .ops import F, bstrides, ctype, fused_f, io, is_int, loops, offset, qparams, strides


def _window(node: Node, spatial_in: tuple[int, ...], kernel: tuple[int, ...]
            ) -> tuple[str, str, str, str, list[str]]:
    """Loops over a window: (head, tail, input spatial offset expr, in-bounds condition,
    the input position expression per spatial axis) for output index names o0.. and kernel
    index names k0.."""
    strides_, dil, pads = node.attr_ints("strides"), node.attr_ints("dilations"), node.attr_pairs("pads")
    head, tail, names = loops(kernel, "k")
    pos = [f"(o{d}*{s} - {p[0]} + {k}*{dd})" for d, (s, dd, p, k)
           in enumerate(zip(strides_, dil, pads, names, strict=True))]
    cond = " && ".join(f"{q} >= 0 && {q} < {n}" for q, n in zip(pos, spatial_in, strict=True))
    off = " + ".join(f"{q}*{s}" for q, s in zip(pos, strides(spatial_in), strict=True))
    return head, tail, off, cond, pos


def _conv(ctx: Ctx, node: Node) -> str:
    (x, w, *b), y = io(node, ctx)
    n, c, *sp_in = x.shape
    o, cg, *kernel = w.shape
    sp_out = y.shape[2:]
    g = node.attr_int("group")
    og = o // g
    ohead, otail, onames = loops(sp_out, "o")
    khead, ktail, xoff, cond, _ = _window(node, tuple(sp_in), tuple(kernel))
    kst = strides(kernel)
    koff = offset([f"k{d}" for d in range(len(kernel))], kst)
    hw_in, hw_out, kk = int(np.prod(sp_in)), int(np.prod(sp_out)), int(np.prod(kernel))
    yoff = offset(onames, strides(sp_out))
    if y.dtype is DType.FLOAT32:
        bias = f"{ctx.ptr(b[0].name)}[oc]" if b else "0.0f"
        decl = (f"  const float *x = {ctx.ptr(x.name)}; const float *w = {ctx.ptr(w.name)}; "
                f"float *y = {ctx.ptr(y.name)};")
        return decl + f"""
  for (int b_ = 0; b_ < {n}; b_++) for (int oc = 0; oc < {o}; oc++) {{
    const int gi = oc / {og};
    {ohead}
      float acc = {bias};
      for (int ic = 0; ic < {cg}; ic++) {{
        const float *xc = x + (b_*{c} + gi*{cg} + ic)*{hw_in}; const float *wc = w + (oc*{cg} + ic)*{kk};
        {khead} if ({cond}) acc += xc[{xoff}] * wc[{koff}]; {ktail}
      }}
      y[(b_*{o} + oc)*{hw_out} + {yoff}] = {fused_f(node, 'acc')};
    {otail}
  }}"""
    if not (is_int(x) and is_int(w) and is_int(y)):
        raise CBackendError(f"{node.label()}: CONV needs float32 or int8 activations and weights")
    _, zin = qparams(x)
    _, zout = qparams(y)
    mult, shift = I8.channel_multipliers(x, w, y, o, 0, False)
    zw = np.asarray(I8.weight_zero_point(w, o), np.int32)
    lo, hi = I8.activation_range(node, y)
    m, s = ctx.array(mult.astype(np.int32)), ctx.array(shift.astype(np.int32))
    zws = ctx.array(zw) if np.any(zw) else None
    wsub = f" - {zws}[oc]" if zws else ""
    bias = f"{ctx.ptr(b[0].name)}[oc]" if b else "0"
    decl = (f"  const {ctype(x)} *x = {ctx.ptr(x.name)}; const {ctype(w)} *w = {ctx.ptr(w.name)}; "
            f"{ctype(y)} *y = {ctx.ptr(y.name)};")
    return decl + f"""
  for (int b_ = 0; b_ < {n}; b_++) for (int oc = 0; oc < {o}; oc++) {{
    const int gi = oc / {og};
    {ohead}
      int32_t acc = 0;
      for (int ic = 0; ic < {cg}; ic++) {{
        const {ctype(x)} *xc = x + (b_*{c} + gi*{cg} + ic)*{hw_in}; const {ctype(w)} *wc = w + (oc*{cg} + ic)*{kk};
        {khead} if ({cond}) acc += ((int32_t)xc[{xoff}] - {zin}) * ((int32_t)wc[{koff}]{wsub}); {ktail}
      }}
      acc = tm_mbqm(acc + {bias}, {m}[oc], {s}[oc]) + {zout};
      y[(b_*{o} + oc)*{hw_out} + {yoff}] = ({ctype(y)})tm_clamp(acc, {lo}, {hi});
    {otail}
  }}"""


def _fc(ctx: Ctx, node: Node, trans_a: bool, trans_b: bool, alpha: float, beta: float) -> str:
    """y (M, N) = alpha * op(A) op(B) + beta * C; weights emitted as (N, K) rows."""
    (a, bt, *c), y = io(node, ctx)
    m_, n_ = y.shape
    k_ = a.shape[0] if trans_a else a.shape[1]
    arow = "a + i" if trans_a else f"a + i*{k_}"
    astep = m_ if trans_a else 1
    if bt.is_const:
        wdata = np.asarray(bt.data)
        wrows = wdata if trans_b else wdata.T          # (N, K)
        wname = ctx.array(np.ascontiguousarray(wrows))
        wrow, wstep = f"{wname} + j*{k_}", 1
    else:
        wname = ctx.ptr(bt.name)
        wrow, wstep = (f"{wname} + j*{k_}", 1) if trans_b else (f"{wname} + j", n_)
    cterm = ""
    if c:
        ct = c[0]
        cst = bstrides(ct.shape, (m_, n_))
        cterm = f"{ctx.ptr(ct.name)}[i*{cst[0]} + j*{cst[1]}]"
    if y.dtype is DType.FLOAT32:
        expr = "acc" if alpha == 1.0 else f"acc * {F(alpha)}"
        if cterm:
            expr += f" + {cterm}" if beta == 1.0 else f" + {cterm} * {F(beta)}"
        return f"""  const float *a = {ctx.ptr(a.name)}; float *y = {ctx.ptr(y.name)};
  for (int i = 0; i < {m_}; i++) for (int j = 0; j < {n_}; j++) {{
    const float *ar = {arow}; const float *wr = {wrow}; float acc = 0.0f;
    for (int k = 0; k < {k_}; k++) acc += ar[k*{astep}] * wr[k*{wstep}];
    float r = {expr}; y[i*{n_} + j] = {fused_f(node, 'r')};
  }}"""
    if not (is_int(a) and is_int(bt) and is_int(y)) or alpha != 1.0 or (c and beta != 1.0):
        raise CBackendError(f"{node.label()}: integer GEMM needs int8 operands, alpha = beta = 1")
    _, zin = qparams(a)
    _, zout = qparams(y)
    w_axis = 0 if trans_b else 1
    mult, shift = I8.channel_multipliers(a, bt, y, n_, w_axis, True)
    zw = np.asarray(I8.weight_zero_point(bt, n_), np.int32)
    lo, hi = I8.activation_range(node, y)
    mm, ss = ctx.array(mult.astype(np.int32)), ctx.array(shift.astype(np.int32))
    wsub = f" - {ctx.array(zw)}[j]" if np.any(zw) else ""
    bias = f" + {cterm}" if cterm else ""
    return f"""  const {ctype(a)} *a = {ctx.ptr(a.name)}; {ctype(y)} *y = {ctx.ptr(y.name)};
  for (int i = 0; i < {m_}; i++) for (int j = 0; j < {n_}; j++) {{
    const {ctype(a)} *ar = {arow}; const {ctype(bt)} *wr = {wrow}; int32_t acc = 0;
    for (int k = 0; k < {k_}; k++) acc += ((int32_t)ar[k*{astep}] - {zin}) * ((int32_t)wr[k*{wstep}]{wsub});
    acc = tm_mbqm(acc{bias}, {mm}[j], {ss}[j]) + {zout};
    y[i*{n_} + j] = ({ctype(y)})tm_clamp(acc, {lo}, {hi});
  }}"""


def _gemm(ctx: Ctx, node: Node) -> str:
    return _fc(ctx, node, node.attr_bool("trans_a"), node.attr_bool("trans_b"),
               node.attr_float("alpha"), node.attr_float("beta"))


def _matmul(ctx: Ctx, node: Node) -> str:
    (a, b), y = io(node, ctx)
    if len(a.shape) == 2 and len(b.shape) == 2:
        return _fc(ctx, node, False, False, 1.0, 1.0)
    if y.dtype is not DType.FLOAT32:
        raise CBackendError(f"{node.label()}: integer batched MATMUL")
    a2 = (1,) + a.shape if len(a.shape) == 1 else a.shape
    b2 = b.shape + (1,) if len(b.shape) == 1 else b.shape
    m_, k_, n_ = a2[-2], a2[-1], b2[-1]
    batch = tuple(np.broadcast_shapes(a2[:-2], b2[:-2]))
    head, tail, names = loops(batch, "bb")
    ab = offset(names, bstrides(a2[:-2], batch)) if batch else "0"
    bb = offset(names, bstrides(b2[:-2], batch)) if batch else "0"
    yb = offset(names, strides(batch)) if batch else "0"
    return f"""  const float *a = {ctx.ptr(a.name)}; const float *b = {ctx.ptr(b.name)}; float *y = {ctx.ptr(y.name)};
  {head}
    const float *ab = a + ({ab})*{m_ * k_}; const float *bb = b + ({bb})*{k_ * n_}; float *yb = y + ({yb})*{m_ * n_};
    for (int i = 0; i < {m_}; i++) for (int j = 0; j < {n_}; j++) {{
      float acc = 0.0f; for (int k = 0; k < {k_}; k++) acc += ab[i*{k_} + k] * bb[k*{n_} + j];
      yb[i*{n_} + j] = {fused_f(node, 'acc')};
    }}
  {tail}"""


def _pool(ctx: Ctx, node: Node) -> str:
    (x,), y = io(node, ctx)
    n, c, *sp_in = x.shape
    sp_out = y.shape[2:]
    kernel = node.attr_ints("kernel")
    ohead, otail, onames = loops(sp_out, "o")
    khead, ktail, xoff, cond, pos = _window(node, tuple(sp_in), tuple(kernel))
    hw_in, hw_out = int(np.prod(sp_in)), int(np.prod(sp_out))
    yoff = offset(onames, strides(sp_out))
    is_max = node.op is Op.MAX_POOL
    pre = f"  const {ctype(x)} *x = {ctx.ptr(x.name)}; {ctype(y)} *y = {ctx.ptr(y.name)};\n"
    if is_int(x):
        if x.quant != y.quant:
            raise CBackendError(f"{node.label()}: integer pool with requantisation")
        lo, hi = I8.activation_range(node, y)
        if is_max:
            inner = (f"int32_t acc = -2147483647; {khead} if ({cond}) {{ int32_t v = xc[{xoff}]; "
                     f"if (v > acc) acc = v; }} {ktail}")
        else:
            inner = (f"int32_t acc = 0, cnt = 0; {khead} if ({cond}) {{ acc += xc[{xoff}]; cnt++; }} {ktail} "
                     f"if (cnt < 1) cnt = 1; acc = acc > 0 ? (acc + cnt / 2) / cnt : -((-acc + cnt / 2) / cnt);")
        store = f"({ctype(y)})tm_clamp(acc, {lo}, {hi})"
    else:
        if is_max:
            inner = f"float acc = -__builtin_inff(); {khead} if ({cond}) {{ acc = tm_fmaxf(acc, xc[{xoff}]); }} {ktail}"
        else:
            pads = node.attr_pairs("pads")
            ccond = (" && ".join(f"{q} >= -{p[0]} && {q} < {nn + p[1]}"
                                 for q, p, nn in zip(pos, pads, sp_in, strict=True))
                     if node.attr_bool("count_include_pad") else cond)
            inner = (f"float acc = 0.0f; int cnt = 0; {khead} if ({ccond}) cnt++; "
                     f"if ({cond}) acc += xc[{xoff}]; {ktail} "
                     f"acc = acc / (float)(cnt < 1 ? 1 : cnt);")
        store = fused_f(node, "acc")
    return pre + f"""  for (int p = 0; p < {n * c}; p++) {{
    const {ctype(x)} *xc = x + p*{hw_in};
    {ohead} {inner} y[p*{hw_out} + {yoff}] = {store}; {otail}
  }}"""


def _reduce_mean(ctx: Ctx, node: Node) -> str:
    (x,), y = io(node, ctx)
    axes = sorted(a % len(x.shape) for a in node.attr_ints("axes"))
    keep_axes = [d for d in range(len(x.shape)) if d not in axes]
    xs = strides(x.shape)
    ohead, otail, onames = loops([x.shape[d] for d in keep_axes], "o")
    rhead, rtail, rnames = loops([x.shape[d] for d in axes], "r")
    xoff = " + ".join([f"{o}*{xs[d]}" for o, d in zip(onames, keep_axes, strict=True)]
                      + [f"{r}*{xs[d]}" for r, d in zip(rnames, axes, strict=True)]) or "0"
    yoff = offset(onames, strides([x.shape[d] for d in keep_axes]))
    count = int(np.prod([x.shape[d] for d in axes]))
    pre = f"  const {ctype(x)} *x = {ctx.ptr(x.name)}; {ctype(y)} *y = {ctx.ptr(y.name)};\n"
    if y.dtype is DType.FLOAT32:
        return pre + (f"  {ohead} float acc = 0.0f; {rhead} acc += x[{xoff}]; {rtail} "
                      f"y[{yoff}] = acc / {F(float(count))}; {otail}")
    s_in, z_in = qparams(x)
    s_out, z_out = qparams(y)
    mult, shift = I8.mean_multiplier(s_in, s_out, count)
    lo, hi = np.iinfo(y.dtype.numpy).min, np.iinfo(y.dtype.numpy).max
    return pre + (f"  {ohead} int32_t acc = 0; {rhead} acc += (int32_t)x[{xoff}] - {z_in}; {rtail} "
                  f"acc = tm_mbqm(acc, {mult}, {shift}) + {z_out}; "
                  f"y[{yoff}] = ({ctype(y)})tm_clamp(acc, {lo}, {hi}); {otail}")


def _argmax(ctx: Ctx, node: Node) -> str:
    """ONNX ArgMax: the first index of the maximum (``>`` keeps the first; ``>=`` the last
    with ``select_last_index``), for float and integer inputs alike (order-preserving)."""
    (x,), y = io(node, ctx)
    axis = node.attr_int("axis")
    keep = [d for d in range(len(x.shape)) if d != axis]
    xs = strides(x.shape)
    ohead, otail, onames = loops([x.shape[d] for d in keep], "o")
    xoff = " + ".join([f"{o}*{xs[d]}" for o, d in zip(onames, keep, strict=True)]) or "0"
    yoff = offset(onames, strides([x.shape[d] for d in keep]))
    cmp = ">=" if node.attr_bool("select_last_index") else ">"
    return (f"  const {ctype(x)} *x = {ctx.ptr(x.name)}; {ctype(y)} *y = {ctx.ptr(y.name)};\n"
            f"  {ohead} const {ctype(x)} *p = x + {xoff}; int best = 0; "
            f"for (int r = 1; r < {x.shape[axis]}; r++) "
            f"if (p[r*{xs[axis]}] {cmp} p[best*{xs[axis]}]) best = r; "
            f"y[{yoff}] = ({ctype(y)})best; {otail}")


def _softmax(ctx: Ctx, node: Node) -> str:
    (x,), y = io(node, ctx)
    axis = node.attr_int("axis") % len(x.shape)
    d = x.shape[axis]
    inner = int(np.prod(x.shape[axis + 1:]))
    outer = int(np.prod(x.shape[:axis]))
    pre = (f"  const {ctype(x)} *x = {ctx.ptr(x.name)}; {ctype(y)} *y = {ctx.ptr(y.name)};\n"
           f"  for (int o = 0; o < {outer}; o++) for (int q = 0; q < {inner}; q++) {{\n"
           f"    const int base = o*{d * inner} + q;\n")
    if y.dtype is DType.FLOAT32:
        return pre + (f"    float mx = x[base]; for (int i = 1; i < {d}; i++) mx = tm_fmaxf(mx, x[base + i*{inner}]);\n"
                      f"    float sum = 0.0f; for (int i = 0; i < {d}; i++) {{ "
                      f"float e = tm_expf(x[base + i*{inner}] - mx); "
                      f"y[base + i*{inner}] = e; sum += e; }}\n"
                      f"    for (int i = 0; i < {d}; i++) y[base + i*{inner}] /= sum;\n  }}")
    s_in, _ = qparams(x)
    s_out, z_out = qparams(y)
    if x.dtype is not DType.INT8 or y.dtype is not DType.INT8 or abs(s_out - 1 / 256) > 1e-9 or z_out != -128:
        raise CBackendError(f"{node.label()}: int8 softmax needs output scale 1/256, zero point -128")
    table, diff_min = I8.softmax_exp_table(s_in)
    exps = ctx.array(table.astype(np.int32))
    head = (f"    int32_t mx = x[base]; for (int i = 1; i < {d}; i++) "
            f"if (x[base + i*{inner}] > mx) mx = x[base + i*{inner}];\n"
            f"    int32_t sum = 0;\n"
            f"    for (int i = 0; i < {d}; i++) {{ int32_t df = (int32_t)x[base + i*{inner}] - mx; "
            f"if (df >= {diff_min}) sum = (int32_t)((uint32_t)sum + (uint32_t)tm_rdbp({exps}[-df], 12)); }}\n")
    return pre + head + f"""    int hr = __builtin_clz((uint32_t)sum);
    int bits_over = 12 - hr;
    int32_t shifted = (int32_t)(((uint32_t)sum << hr) - 2147483648u);
    int32_t recip = tm_one_over_one_plus_x(shifted);
    for (int i = 0; i < {d}; i++) {{
      int32_t df = (int32_t)x[base + i*{inner}] - mx;
      int32_t v = df >= {diff_min} ? tm_rdbp(tm_srdhm(recip, {exps}[-df]), bits_over + 31 - 8) - 128 : -128;
      y[base + i*{inner}] = (int8_t)tm_clamp(v, -128, 127);
    }}
  }}"""


def _batch_norm(ctx: Ctx, node: Node) -> str:
    (x, sc, bi, mean, var), y = io(node, ctx)
    if y.dtype is not DType.FLOAT32:
        raise CBackendError(f"{node.label()}: integer BATCH_NORM")
    eps = F(node.attr_float("epsilon"))
    c = x.shape[1]
    hw = int(np.prod(x.shape[2:]))
    return (f"  const float *x = {ctx.ptr(x.name)}; float *y = {ctx.ptr(y.name)};\n"
            f"  const float *sc = {ctx.ptr(sc.name)}, *bi = {ctx.ptr(bi.name)}, *mu = {ctx.ptr(mean.name)}, "
            f"*va = {ctx.ptr(var.name)};\n"
            f"  for (int i = 0; i < {x.size}; i++) {{ int ch = (i / {hw}) % {c}; "
            f"y[i] = (x[i] - mu[ch]) * (sc[ch] / __builtin_sqrtf(va[ch] + {eps})) + bi[ch]; }}")


def _conv_transpose(ctx: Ctx, node: Node) -> str:
    """float32 only: each output cell gathers the input cells whose stride grid lands on
    it (``i*s - pad + k*d == o``)."""
    (x, w, *b), y = io(node, ctx)
    if y.dtype is not DType.FLOAT32:
        raise CBackendError(f"{node.label()}: integer CONV_TRANSPOSE")
    n, c, *sp_in = x.shape
    _, og, *kernel = w.shape
    sp_out = y.shape[2:]
    g = node.attr_int("group")
    cg, o = c // g, og * g
    st, dil, pads = node.attr_ints("strides"), node.attr_ints("dilations"), node.attr_pairs("pads")
    ohead, otail, onames = loops(sp_out, "o")
    khead, ktail, knames = loops(kernel, "k")
    nums = [f"({on} + {p[0]} - {kn}*{dd})" for on, p, kn, dd in zip(onames, pads, knames, dil, strict=True)]
    cond = " && ".join(f"{q} >= 0 && {q} % {s_} == 0 && {q} / {s_} < {ni}"
                       for q, s_, ni in zip(nums, st, sp_in, strict=True))
    xoff = " + ".join(f"({q} / {s_})*{xs}" for q, s_, xs in zip(nums, st, strides(sp_in), strict=True))
    koff = offset(knames, strides(kernel))
    hw_in, hw_out, kk = int(np.prod(sp_in)), int(np.prod(sp_out)), int(np.prod(kernel))
    bias = f"{ctx.ptr(b[0].name)}[oc]" if b else "0.0f"
    return f"""  const float *x = {ctx.ptr(x.name)}; const float *w = {ctx.ptr(w.name)}; float *y = {ctx.ptr(y.name)};
  for (int b_ = 0; b_ < {n}; b_++) for (int oc = 0; oc < {o}; oc++) {{
    const int gi = oc / {og}, oo = oc % {og};
    {ohead}
      float acc = {bias};
      for (int ic = 0; ic < {cg}; ic++) {{
        const float *xc = x + (b_*{c} + gi*{cg} + ic)*{hw_in}; const float *wc = w + ((gi*{cg} + ic)*{og} + oo)*{kk};
        {khead} if ({cond}) acc += xc[{xoff}] * wc[{koff}]; {ktail}
      }}
      y[(b_*{o} + oc)*{hw_out} + {offset(onames, strides(sp_out))}] = {fused_f(node, 'acc')};
    {otail}
  }}"""


EMITTERS: dict[Op, Emitter] = {Op.CONV: _conv, Op.CONV_TRANSPOSE: _conv_transpose, Op.GEMM: _gemm,
                               Op.MATMUL: _matmul, Op.MAX_POOL: _pool, Op.AVG_POOL: _pool,
                               Op.REDUCE_MEAN: _reduce_mean, Op.SOFTMAX: _softmax,
                               Op.BATCH_NORM: _batch_norm, Op.ARGMAX: _argmax}
