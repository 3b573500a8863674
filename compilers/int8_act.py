"""Integer HARD_SWISH and PRELU, as TFLite's / TFLM's reference kernels compute them; registered
into ``compilers.int8.INT_KERNELS`` (``int8`` imports this module: imports go downward).

* **HARD_SWISH** (``reference_ops::HardSwish<int8_t>``, TFLM ``hard_swish``): per value, in
  int16 fixed point: the input minus its zero point on a "hires" scale (``<< 7``), once
  multiplied to the output scale (``output_multiplier``, an int32 multiplier downscaled to
  int16 by ``DownScaleInt32ToInt16Multiplier``) and once to the "reluish" scale on which
  3.0 is 32768 (``reluish_multiplier``, with TFLite's careful saturating left shifts),
  then mapped from [-1, 1] to [0, 1], multiplied with ``SaturatingDoublingHighMul`` (no
  rounding, on purpose in TFLite) and shifted to the output. An element-wise function of
  an int8 value: evaluated once for all 256 inputs into a table.
* **PRELU** (``reference_ops::BroadcastPrelu4DSlow``): ``x - zp_x`` requantised by
  ``s_x / s_y`` where it is >= 0, else ``(x - zp_x) * (alpha - zp_alpha)`` requantised by
  ``s_x * s_alpha / s_y`` (both multipliers computed in double as TFLM's ``PreluPrepare``),
  plus ``zp_y``, clamped. The slope broadcasts (NumPy rules, as the reference's 4-D slow
  broadcast).

What it does not do: int16 variants, uint8 HARD_SWISH (the float fallback runs instead).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .errors import ExecutionError
from .fixedpoint import multiply_by_quantized_multiplier, quantize_multiplier
from .ir import DType, Node, Op, Tensor
from .kernels import NodeIO

I16_MIN, I16_MAX = -(1 << 15), (1 << 15) - 1


def _q(t: Tensor, what: str) -> tuple[float, int]:
    q = t.quant
    if q is None or (q.axis is not None and (len(set(q.scale)) > 1 or len(set(q.zero_point)) > 1)):
        raise ExecutionError(f"tensor {t.name!r} ({what}) must be quantised per tensor")
    return float(np.float32(q.scale[0])), int(q.zero_point[0])


def _sat16(v: int) -> int:
    return max(I16_MIN, min(I16_MAX, v))


def _c_div(a: int, b: int) -> int:
    """C integer division (toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def srdhm16(a: int, b: int) -> int:
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` on int16."""
    if a == b == I16_MIN:
        return I16_MAX
    ab = a * b
    nudge = (1 << 14) if ab >= 0 else 1 - (1 << 14)
    return _sat16(_c_div(ab + nudge, 1 << 15))


def sdhm16(a: int, b: int) -> int:
    """TFLite's ``SaturatingDoublingHighMul`` on int16 (no rounding)."""
    if a == b == I16_MIN:
        return I16_MAX
    return _sat16(_c_div(a * b, 1 << 15))


def rdbp16(x: int, e: int) -> int:
    mask = (1 << e) - 1
    remainder, threshold = x & mask, (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if remainder > threshold else 0)


def sat_left_shift16(v: int, amount: int) -> int:
    return _sat16(v * (1 << amount))


def downscale_to_int16(m32: int) -> int:
    """TFLite's ``DownScaleInt32ToInt16Multiplier``."""
    if m32 >= (1 << 31) - 1 - (1 << 15):
        return I16_MAX
    return (m32 + (1 << 15)) >> 16


def hard_swish_params(s_in: float, s_out: float) -> tuple[int, int, int, int]:
    """(output multiplier int16, output exponent, reluish multiplier int16, reluish
    exponent), as TFLM's ``HardSwishPrepare`` (float arithmetic as there)."""
    hires = np.float32(np.float32(1.0 / 128.0) * np.float32(s_in))
    out_m, out_e = quantize_multiplier(float(np.float32(hires / np.float32(s_out))))
    rel_m, rel_e = quantize_multiplier(float(np.float32(hires / np.float32(3.0 / 32768.0))))
    return downscale_to_int16(out_m), out_e, downscale_to_int16(rel_m), rel_e


def hard_swish_value(raw: int, z_in: int, z_out: int, params: tuple[int, int, int, int],
                     lo: int, hi: int) -> int:
    out_m, out_e, rel_m, rel_e = params
    v = raw - z_in
    hires = _sat16(v * (1 << 7))
    pre_out = srdhm16(hires, out_m)
    reluish = hires
    if rel_e > 0:
        reluish = sat_left_shift16(reluish, rel_e - 1)
    reluish = srdhm16(reluish, rel_m)
    if rel_e > 0:
        reluish = sat_left_shift16(reluish, 1)
    if rel_e < 0:
        reluish = rdbp16(reluish, -rel_e)
    reluish = _sat16((reluish + (1 << 15)) >> 1)
    out = rdbp16(sdhm16(reluish, pre_out), -out_e) + z_out
    return min(max(out, lo), hi)


def _hard_swish(node: Node, io: NodeIO, x: np.ndarray) -> np.ndarray:
    xt, yt = io.inputs[0], io.outputs[0]
    if xt.dtype is not DType.INT8 or yt.dtype is not DType.INT8:
        raise ExecutionError(f"{node.label()}: integer HARD_SWISH is int8 -> int8")
    s_in, z_in = _q(xt, "input")
    s_out, z_out = _q(yt, "output")
    params = hard_swish_params(s_in, s_out)
    if params[1] > 0:
        raise ExecutionError(f"{node.label()}: output multiplier exponent {params[1]} > 0 "
                             f"(TFLM refuses it: the output scale is too small)")
    table = np.asarray([hard_swish_value(r, z_in, z_out, params, -128, 127)
                        for r in range(-128, 128)], np.int64)
    return table[x.astype(np.int64) + 128].astype(np.int8)


def _prelu(node: Node, io: NodeIO, x: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    xt, at, yt = io.inputs[0], io.inputs[1], io.outputs[0]
    s_x, z_x = _q(xt, "input")
    s_a, z_a = _q(at, "alpha")
    s_y, z_y = _q(yt, "output")
    m1, e1 = quantize_multiplier(float(np.float64(s_x) / np.float64(s_y)))
    m2, e2 = quantize_multiplier(float(np.float64(s_x) * np.float64(s_a) / np.float64(s_y)))
    v = x.astype(np.int64) - z_x
    a = np.broadcast_to(alpha.astype(np.int64) - z_a, np.broadcast_shapes(x.shape, alpha.shape))
    v = np.broadcast_to(v, a.shape)
    acc = np.where(v >= 0, multiply_by_quantized_multiplier(v, m1, e1),
                   multiply_by_quantized_multiplier(v * a, m2, e2)) + z_y
    info = np.iinfo(yt.dtype.numpy)
    y: np.ndarray = np.clip(acc, info.min, info.max).astype(yt.dtype.numpy)
    return y


KERNELS: dict[Op, Callable[..., np.ndarray]] = {Op.HARD_SWISH: _hard_swish, Op.PRELU: _prelu}

__all__ = ["KERNELS", "hard_swish_params", "hard_swish_value"]
