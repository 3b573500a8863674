"""TFLite's / TFLM's fixed-point arithmetic, as NumPy and Python integer functions.

What it is: ``quantize_multiplier`` (a real multiplier as int32 + shift),
``multiply_by_quantized_multiplier`` (SaturatingRoundingDoublingHighMul then
RoundingDivideByPOT, with TFLM's double rounding or TFLITE_SINGLE_ROUNDING), TfLiteRound, and
gemmlowp's fixed-point exp / logistic / tanh / reciprocal that TFLM's int8 softmax and LUT
activations are built from. ``use_target``/``use_rounding`` select the runtime whose rounding
the kernels reproduce. The kernels that use these are in ``compilers.int8``.

What it is not: no kernels, no graphs; nothing here knows about tensors.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Iterator

import numpy as np

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


# ---- fixed-point helpers (TFLite's quantization_util / common.h, gemmlowp) ------------------
def tflite_round(x: np.ndarray | float | np.floating) -> np.ndarray:
    """``TfLiteRound`` / ``std::round``: half away from zero."""
    x = np.asarray(x)
    y: np.ndarray = np.sign(x) * np.floor(np.abs(x) + 0.5)
    return y


# MultiplyByQuantizedMultiplier's rounding: "double" (TFLM, the default) or "single"
# (TFLITE_SINGLE_ROUNDING). ``use_target`` picks it per op the way each runtime does.
_ROUNDING: contextvars.ContextVar[str] = contextvars.ContextVar("tflite_rounding",
                                                                default="double")


def rounding_mode() -> str:
    return _ROUNDING.get()


_TARGET: contextvars.ContextVar[str] = contextvars.ContextVar("tflite_target", default="tflm")
TARGETS = ("tflm", "litert")


def target() -> str:
    return _TARGET.get()


@contextlib.contextmanager
def use_target(name: str) -> Iterator[None]:
    """Reproduce ``"tflm"`` (the default: the tflite-micro reference kernels) or
    ``"litert"`` (ai-edge-litert 2.x's reference kernels: the same, except that its
    FULLY_CONNECTED rounds once, see the module docstring) inside this block."""
    if name not in TARGETS:
        raise ValueError(f"target {name!r}, expected one of {TARGETS}")
    token = _TARGET.set(name)
    try:
        yield
    finally:
        _TARGET.reset(token)


@contextlib.contextmanager
def use_rounding(mode: str) -> Iterator[None]:
    """Run integer kernels with ``"double"`` (TFLM) or ``"single"`` (TFLITE_SINGLE_ROUNDING,
    LiteRT's wheels) rounding inside this block."""
    if mode not in ("double", "single"):
        raise ValueError(f"rounding mode {mode!r}, expected 'double' or 'single'")
    token = _ROUNDING.set(mode)
    try:
        yield
    finally:
        _ROUNDING.reset(token)


def quantize_multiplier(m: float, *, single_rounding: bool | None = None) -> tuple[int, int]:
    """TFLite's ``QuantizeMultiplier``: ``m ~= q * 2**(shift - 31)`` with ``q`` in
    [2**30, 2**31); ``(0, 0)`` for 0 and for multipliers below ~2**-31. Single-rounding
    builds also saturate shifts above 30."""
    if single_rounding is None:
        single_rounding = rounding_mode() == "single"
    if m == 0.0:
        return 0, 0
    q, shift = math.frexp(m)
    q_fixed = int(tflite_round(q * (1 << 31)))
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if single_rounding and shift > 30:
        return (1 << 31) - 1, 30
    return q_fixed, shift


def _wrap32(x: np.ndarray) -> np.ndarray:
    """Two's-complement wrap of int64 values to int32's range (C's int32 overflow)."""
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def saturating_rounding_doubling_high_mul(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` on int32 values (held in int64)."""
    a64, b64 = np.asarray(a, np.int64), np.asarray(b, np.int64)
    overflow = (a64 == b64) & (a64 == INT32_MIN)
    ab = a64 * b64
    ab = ab + np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    high = np.where(ab >= 0, ab >> 31, -((-ab) >> 31))  # C division: toward zero
    return np.where(overflow, np.int64(INT32_MAX), high)


def rounding_divide_by_pot(x: np.ndarray | int, exponent: np.ndarray | int) -> np.ndarray:
    """gemmlowp ``RoundingDivideByPOT``: x / 2**exponent rounded half away from zero."""
    x64, e = np.asarray(x, np.int64), np.asarray(exponent, np.int64)
    mask = (np.int64(1) << e) - 1
    remainder = x64 & mask
    threshold = (mask >> 1) + (x64 < 0)
    return (x64 >> e) + (remainder > threshold)


def multiply_by_quantized_multiplier(x: np.ndarray | int, multiplier: np.ndarray | int,
                                     shift: np.ndarray | int, *,
                                     single_rounding: bool | None = None) -> np.ndarray:
    """TFLite's ``MultiplyByQuantizedMultiplier(int32 x, q, shift)``: double rounding
    (TFLM, the default) or the TFLITE_SINGLE_ROUNDING variant; None = ``rounding_mode()``."""
    if single_rounding is None:
        single_rounding = rounding_mode() == "single"
    x64 = np.asarray(x, np.int64)
    m, s = np.asarray(multiplier, np.int64), np.asarray(shift, np.int64)
    if single_rounding:
        total = 31 - s
        return (x64 * m + (np.int64(1) << (total - 1))) >> total
    left = np.maximum(s, 0)
    right = np.maximum(-s, 0)
    return rounding_divide_by_pot(
        saturating_rounding_doubling_high_mul(_wrap32(x64 << left), m), right)


def multiply_by_quantized_multiplier_greater_than_one(x: np.ndarray | int, multiplier: int,
                                                      left_shift: int) -> np.ndarray:
    if rounding_mode() == "single":
        return multiply_by_quantized_multiplier(x, multiplier, left_shift)
    return saturating_rounding_doubling_high_mul(
        _wrap32(np.asarray(x, np.int64) << left_shift), multiplier)


def calculate_input_radius(input_integer_bits: int, input_left_shift: int,
                           total_signed_bits: int = 31) -> int:
    max_rescaled = (1.0 * ((1 << input_integer_bits) - 1)
                    * (1 << (total_signed_bits - input_integer_bits)) / (1 << input_left_shift))
    return int(math.floor(max_rescaled))


# Scalar gemmlowp fixed point (Python ints emulating int32), for the table-driven kernels.
def _s32(v: int) -> int:
    return ((v + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def _srdhm(a: int, b: int) -> int:
    return int(saturating_rounding_doubling_high_mul(a, b))


def _rdbp(x: int, e: int) -> int:
    return int(rounding_divide_by_pot(x, e))


def _sat_mul_pot(x: int, exponent: int) -> int:
    """gemmlowp ``SaturatingRoundingMultiplyByPOT<exponent>`` on int32."""
    if exponent == 0:
        return x
    if exponent < 0:
        return _rdbp(x, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    if x > threshold:
        return INT32_MAX
    if x < -threshold:
        return INT32_MIN
    return _s32(x << exponent)


def _rescale(x: int, src_bits: int, dst_bits: int) -> int:
    return _sat_mul_pot(x, src_bits - dst_bits)


def _exp_on_interval(a: int) -> int:
    """exp(a) for a in [-1/4, 0), Q0.31 in and out."""
    constant_term, one_third = 1895147668, 715827883
    x = _s32(a + (1 << 28))
    x2 = _srdhm(x, x)
    x3 = _srdhm(x2, x)
    x4 = _srdhm(x2, x2)
    x4_over_4 = _sat_mul_pot(x4, -2)
    poly = _sat_mul_pot(_s32(_srdhm(_s32(x4_over_4 + x3), one_third) + x2), -1)
    return _s32(constant_term + _srdhm(constant_term, _s32(x + poly)))


_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
               (2, 39332535), (3, 720401), (4, 242))


def exp_on_negative_values(a: int, integer_bits: int) -> int:
    """gemmlowp ``exp_on_negative_values`` of a Q(integer_bits) value; result Q0.31."""
    frac = 31 - integer_bits
    one_quarter = 1 << (frac - 2)
    mask = one_quarter - 1
    a_mod = _s32((a & mask) - one_quarter)
    result = _exp_on_interval(_rescale(a_mod, integer_bits, 0))
    remainder = _s32(a_mod - a)
    for exponent, multiplier in _EXP_BARREL:
        if integer_bits > exponent:
            shift = frac + exponent
            if remainder & (1 << shift):
                result = _srdhm(result, multiplier)
    if integer_bits > 5:
        clamp = -(1 << (36 - integer_bits))
        if a < clamp:
            result = 0
    if a == 0:
        result = INT32_MAX
    return result


def _newton_reciprocal(a: int) -> int:
    """The Newton-Raphson core shared by gemmlowp's 1/(1+x) and (1-x)/(1+x): x in Q2.29
    approximating 1 / half_denominator, for a in (0, 1) Q0.31."""
    total = a + INT32_MAX                      # RoundingHalfSum(a, One()) in int64
    total += 1 if total >= 0 else -1
    half_denominator = total // 2 if total >= 0 else -((-total) // 2)   # C division
    c48_17, cneg32_17 = 1515870810, -1010580540
    one_f2 = 1 << 29
    x = _s32(c48_17 + _srdhm(half_denominator, cneg32_17))
    for _ in range(3):
        hdx = _srdhm(half_denominator, x)
        one_minus = _s32(one_f2 - hdx)
        x = _s32(x + _rescale(_srdhm(x, one_minus), 4, 2))
    return x


def one_over_one_plus_x_for_x_in_0_1(a: int) -> int:
    x = _newton_reciprocal(a)
    return _rescale(x, 1, 0)  # ExactMulByPot<-1> (Q2 -> Q1), then Rescale<0>


def one_minus_x_over_one_plus_x_for_x_in_0_1(a: int) -> int:
    x = _newton_reciprocal(a)
    return _rescale(_s32(x - (1 << 29)), 2, 0)


def gemmlowp_logistic(a: int, integer_bits: int) -> int:
    if a == 0:
        return 1 << 30
    pos = a > 0
    abs_a = a if pos else _s32(-a)
    r = one_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(_s32(-abs_a), integer_bits))
    return r if pos else _s32(INT32_MAX - r)


def gemmlowp_tanh(a: int, integer_bits: int) -> int:
    if a == 0:
        return 0
    neg = a < 0
    n = a if neg else _s32(-a)
    # exp_on_negative_values(ExactMulByPot<1>(n)): same raw value, one more integer bit
    t = one_minus_x_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(n, integer_bits + 1))
    return _s32(-t) if neg else t


def get_reciprocal(x: int, x_integer_digits: int) -> tuple[int, int]:
    """TFLite's ``GetReciprocal``: (1/x in Q0.31 scaled, num_bits_over_unit)."""
    headroom_plus_one = 32 - int(x & 0xFFFFFFFF).bit_length()
    num_bits_over_unit = x_integer_digits - headroom_plus_one
    shifted_sum_minus_one = _s32(((x & 0xFFFFFFFF) << headroom_plus_one) - (1 << 31))
    return one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one), num_bits_over_unit
