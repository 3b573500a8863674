"""Calibration for post-training quantisation: sample inputs in, one float range per tensor out.

What it does:

* ``load_calibration(path, graph)`` reads a user's ``.npz`` of sample inputs. Keys are the
  graph's input names; a graph with one input may instead use a single unnamed array
  (``np.savez(path, x)`` stores it as ``arr_0``). The first axis of every array counts
  samples: an input of shape ``(1, 49, 10, 1)`` takes ``(N, 1, 49, 10, 1)`` or, since the
  batch is 1, ``(N, 49, 10, 1)`` (generally: ``(N * B, *shape[1:])`` for a batch ``B``).
  Float inputs take any float array (it is cast to the input's dtype); integer inputs take
  exactly their dtype. Every problem (unreadable file, no arrays, a wrong or missing key,
  a wrong shape or dtype, no samples, NaN/inf, sample counts that differ between inputs)
  is one ``CalibrationError`` naming the input, what was expected and what was given.
  ``check_calibration(graph, mapping)`` applies the same checks to arrays already in
  memory and returns them as ``name -> (N, *shape)`` in the input's dtype.
* ``synthetic_calibration(graph)``: what ``quantize`` uses when the user gives no data:
  ``SYNTHETIC_SAMPLES`` seeded (``SYNTHETIC_SEED``) samples, uniform in ``SYNTHETIC_RANGE``
  = [-1, 1] for float inputs (0 or 1 for integer and bool inputs). The ranges it yields say
  nothing about real data, so ``quantize`` raises a ``SyntheticCalibrationWarning`` with it.
* ``calibrate(graph, samples, method)`` runs the float reference interpreter
  (``reference.run(..., return_all=True)``) once per sample and keeps, for every float
  tensor that is a graph input or a node output, its exact min and max and a histogram
  (``BINS`` bins over ``[-R, R]``; ``R`` doubles, merging bin pairs, whenever a value falls
  outside, so one pass suffices and memory is fixed). It returns ``name -> (lo, hi)``:

  - ``minmax``: the exact minimum and maximum seen.
  - ``percentile``: the ``100 - p`` and ``p`` percentiles of the values (both tails;
    ``p = 99.99`` by default), from the histogram, clamped to the exact min/max.
  - ``mse``: the range (with 0 inside it) that minimises the int8 quantisation error
    (rounding error integrated exactly over each histogram bin, values taken as spread
    evenly in it; values outside the range cost their squared distance to it; exact zeros
    cost nothing) over candidates ``lo * 2**(-k/8)``, ``hi * 2**(-k/8)`` (``k < GRID``):
    first one factor for both bounds, then the upper and the lower bound on their own.

  The ranges are raw statistics: ``quantize`` then puts 0 inside, narrows by fused
  activations and turns them into scale and zero point.
* From ranges to ``Quant`` and back, shared with ``quantize``: ``activation_quant(lo, hi)``
  (per-tensor asymmetric int8 with 0 exactly representable), ``symmetric_weights`` (int8
  in [-127, 127], zero point 0, per channel or per tensor), ``quantize_array`` /
  ``dequantize_array`` (ONNX QuantizeLinear/DequantizeLinear: round half to even,
  saturate), ``quantize_inputs`` / ``dequantize_outputs`` (a quantised graph's int8 I/O).

What it does not do: no entropy (KL) calibration, no per-channel activation ranges, no
batching of samples (the IR's batch size is static: a batch-1 graph runs one sample at a
time), no data augmentation.
"""

from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from .errors import CompilerError
from .ir import DType, Graph, Quant, Tensor
from .reference import run

METHODS = ("minmax", "percentile", "mse")
BINS = 4096  # histogram bins over [-R, R]; a multiple of 4 (bin pairs merge when R doubles)
GRID = 64  # MSE candidates: a bound times 2**(-k/8), k < GRID (down to ~1/240)
MSE_BINS = 1024  # the histogram is merged to this many bins for the MSE search
SYNTHETIC_SAMPLES = 32
SYNTHETIC_SEED = 0
SYNTHETIC_RANGE = (-1.0, 1.0)

INT8_MIN, INT8_MAX = -128, 127
WEIGHT_MAX = 127  # symmetric weights use [-127, 127] (TFLite/TFLM)
MIN_RANGE = 1e-8  # a tensor that is always 0 still gets a positive scale

Samples = dict[str, np.ndarray]  # graph input name -> (N, *input shape)


class CalibrationError(CompilerError):
    """Calibration data that does not fit the graph (names the input, what was expected
    and what was given)."""


class SyntheticCalibrationWarning(UserWarning):
    """Quantisation ran on synthetic random inputs: its ranges do not reflect real data."""


# ---- from ranges to Quant (ONNX QuantizeLinear/DequantizeLinear semantics) ----------------
def quantize_array(x: np.ndarray, quant: Quant, dtype: DType = DType.INT8) -> np.ndarray:
    """``saturate(round_half_even(x / scale) + zero_point)``, as the reference QUANTIZE."""
    x = np.asarray(x)
    scale, zp = quant.arrays(x.ndim)
    q = np.rint(x.astype(np.float32) / scale).astype(np.float64) + zp
    info = np.iinfo(dtype.numpy)
    y: np.ndarray = np.clip(q, info.min, info.max).astype(dtype.numpy)
    return y


def dequantize_array(q: np.ndarray, quant: Quant) -> np.ndarray:
    """``(q - zero_point) * scale`` in float32, as the reference DEQUANTIZE."""
    q = np.asarray(q)
    scale, zp = quant.arrays(q.ndim)
    x: np.ndarray = ((q.astype(np.int64) - zp).astype(np.float32) * scale).astype(np.float32)
    return x


def quantize_inputs(graph: Graph, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Float inputs -> what a quantised graph takes (int8 inputs are quantised with their
    ``Quant``; other inputs pass through)."""
    out = {}
    for name, x in inputs.items():
        t, x = graph.tensor(name), np.asarray(x)
        quantise = t.quant is not None and x.dtype != t.dtype.numpy
        out[name] = quantize_array(x, t.quant, t.dtype) if quantise else x  # type: ignore[arg-type]
    return out


def dequantize_outputs(graph: Graph, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A quantised graph's outputs -> floats (integer outputs with a ``Quant`` are
    dequantised; others pass through)."""
    out = {}
    for name, v in outputs.items():
        quant = graph.tensor(name).quant
        out[name] = dequantize_array(v, quant) if quant is not None else np.asarray(v)
    return out


def activation_quant(lo: float, hi: float) -> Quant:
    """Per-tensor asymmetric int8 ``Quant`` for the range [lo, hi] (0 is put inside it)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not np.isfinite(lo) or not np.isfinite(hi):
        lo, hi = 0.0, 0.0
    if hi - lo < MIN_RANGE:
        hi = lo + MIN_RANGE
    scale = (hi - lo) / (INT8_MAX - INT8_MIN)
    zp = int(np.clip(round(INT8_MIN - lo / scale), INT8_MIN, INT8_MAX))
    return Quant((scale,), (zp,))


def symmetric_weights(w: np.ndarray, axis: int | None, min_scale: np.ndarray | None = None
               ) -> tuple[np.ndarray, Quant]:
    """int8 weights in [-127, 127], zero point 0, per channel along ``axis`` (or per tensor);
    scales at least ``min_scale`` (one per channel) where given."""
    w = np.asarray(w, np.float64)
    if axis is None:
        m = np.array([np.abs(w).max(initial=0.0)])
    else:
        m = np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)).max(axis=1, initial=0.0)
    scale = np.where(m > 0, m / WEIGHT_MAX, 1.0)
    if min_scale is not None:
        scale = np.maximum(scale, min_scale)
    quant = Quant(tuple(scale.astype(np.float32).tolist()), (0,) * scale.size, axis)
    s, _ = quant.arrays(w.ndim)
    q = np.clip(np.rint(w / s.astype(np.float64)), -WEIGHT_MAX, WEIGHT_MAX).astype(np.int8)
    return q, quant


# ---- loading and checking -----------------------------------------------------------------
def _expected(t: Tensor) -> str:
    shape = list(t.shape)
    alt = f" or (N*{shape[0]}, {', '.join(map(str, shape[1:]))})" if shape else ""
    return f"{t.dtype.value} array of shape (N, {', '.join(map(str, shape))}){alt}"


def _samples_of(t: Tensor, arr: np.ndarray, where: str) -> np.ndarray:
    """``arr`` as ``(N, *t.shape)`` in ``t``'s dtype, or a CalibrationError."""
    arr = np.asarray(arr)
    want = t.dtype.numpy
    if arr.dtype.kind in "OSUVMm" or (t.dtype.is_float and arr.dtype.kind not in "f") or (
            not t.dtype.is_float and arr.dtype != want):
        raise CalibrationError(f"calibration {where} for input {t.name!r}: got a {arr.dtype} "
                               f"array, expected {_expected(t)}")
    shape = t.shape
    if arr.ndim == len(shape) + 1 and arr.shape[1:] == shape:
        out = arr
    elif shape and arr.ndim == len(shape) and arr.shape[1:] == shape[1:] and shape[0] > 0 \
            and arr.shape[0] % shape[0] == 0:
        out = arr.reshape((arr.shape[0] // shape[0],) + shape)
    else:
        raise CalibrationError(f"calibration {where} for input {t.name!r}: got shape "
                               f"{tuple(arr.shape)}, expected {_expected(t)}")
    if out.shape[0] == 0:
        raise CalibrationError(f"calibration {where} for input {t.name!r}: no samples "
                               f"(shape {tuple(arr.shape)})")
    out = out.astype(want, copy=False)
    if t.dtype.is_float and not np.all(np.isfinite(out)):
        raise CalibrationError(f"calibration {where} for input {t.name!r}: contains NaN or "
                               f"infinite values")
    return out


def check_calibration(graph: Graph, data: Mapping[str, np.ndarray], *,
                      where: str = "data") -> Samples:
    """Check sample arrays against the graph's inputs; return ``name -> (N, *shape)``."""
    names = list(data)
    if not names:
        raise CalibrationError(f"calibration {where} holds no arrays; expected one per graph "
                               f"input {list(graph.inputs)}")
    if names == ["arr_0"] and len(graph.inputs) == 1 and graph.inputs[0] != "arr_0":
        data = {graph.inputs[0]: data["arr_0"]}
    unknown = sorted(set(data) - set(graph.inputs))
    missing = [i for i in graph.inputs if i not in data]
    if unknown or missing:
        detail = f"unknown keys {unknown}" if unknown else ""
        if missing:
            detail += ("; " if detail else "") + f"missing inputs {missing}"
        hint = " (or one unnamed array for a single-input graph)" if len(graph.inputs) == 1 else ""
        raise CalibrationError(f"calibration {where}: {detail}; keys must be the graph's input "
                               f"names {list(graph.inputs)}{hint}, got {names}")
    out = {i: _samples_of(graph.tensors[i], data[i], where) for i in graph.inputs}
    counts = {i: a.shape[0] for i, a in out.items()}
    if len(set(counts.values())) > 1:
        raise CalibrationError(f"calibration {where}: inputs have different sample counts "
                               f"{counts}")
    return out


def load_calibration(path: str | os.PathLike[str], graph: Graph) -> Samples:
    """Read and check a ``.npz`` of calibration samples (see the module docstring)."""
    where = f"file {os.fspath(path)!r}"
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise CalibrationError(f"calibration {where} is a single .npy array, not an "
                                       f".npz archive; save it with numpy.savez")
            arrays = {k: npz[k] for k in npz.files}
    except CalibrationError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise CalibrationError(f"cannot read calibration {where} as .npz: {e}") from e
    return check_calibration(graph, arrays, where=where)


def synthetic_calibration(graph: Graph, n: int = SYNTHETIC_SAMPLES,
                          seed: int = SYNTHETIC_SEED) -> Samples:
    """``n`` seeded random samples per input: uniform in ``SYNTHETIC_RANGE`` for floats."""
    rng = np.random.default_rng(seed)
    out: Samples = {}
    for name in graph.inputs:
        t = graph.tensors[name]
        shape = (n,) + t.shape
        if t.dtype.is_float:
            out[name] = rng.uniform(*SYNTHETIC_RANGE, size=shape).astype(t.dtype.numpy)
        else:
            out[name] = rng.integers(0, 2, size=shape).astype(t.dtype.numpy)
    return out


# ---- statistics ---------------------------------------------------------------------------
@dataclass
class Histogram:
    """Counts of one tensor's values over ``[-r, r]`` in ``BINS`` bins, plus exact extremes
    and the number of exact zeros."""

    r: float = 0.0
    counts: np.ndarray = field(default_factory=lambda: np.zeros(BINS, np.int64))
    lo: float = math.inf
    hi: float = -math.inf
    zeros: int = 0

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64).reshape(-1)
        if not x.size:
            return
        lo, hi = float(x.min()), float(x.max())
        self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
        self.zeros += int(np.count_nonzero(x == 0))
        top = max(-lo, hi)
        if self.r == 0.0:
            self.r = 2.0 ** math.ceil(math.log2(top)) if top > 0 else 0.0
            if self.r == 0.0:
                self.counts[BINS // 2] += x.size  # all zeros: they sit in [0, w) once r > 0
                return
        while top > self.r:
            self.counts = np.concatenate([np.zeros(BINS // 4, np.int64),
                                          self.counts.reshape(-1, 2).sum(axis=1),
                                          np.zeros(BINS // 4, np.int64)])
            self.r *= 2
        idx = np.floor((x + self.r) * (BINS / (2 * self.r))).astype(np.int64)
        self.counts += np.bincount(np.clip(idx, 0, BINS - 1), minlength=BINS)

    def centers(self) -> np.ndarray:
        w = 2 * self.r / BINS
        return -self.r + (np.arange(BINS) + 0.5) * w

    def percentile_range(self, p: float) -> tuple[float, float]:
        if self.r == 0.0:
            return self.lo, self.hi
        total = self.counts.sum()
        cdf = np.cumsum(self.counts) / total
        edges = -self.r + np.arange(BINS + 1) * (2 * self.r / BINS)

        def at(q: float) -> float:
            k = int(np.searchsorted(cdf, q, side="left"))
            k = min(k, BINS - 1)
            before = cdf[k - 1] if k else 0.0
            inside = cdf[k] - before
            frac = (q - before) / inside if inside > 0 else 0.0
            return float(edges[k] + frac * (edges[k + 1] - edges[k]))

        lo, hi = at(1 - p / 100), at(p / 100)
        return max(self.lo, min(lo, self.hi)), min(self.hi, max(hi, self.lo))

    def mse_range(self) -> tuple[float, float]:
        lo, hi = min(self.lo, 0.0), max(self.hi, 0.0)
        if self.r == 0.0 or hi == lo:
            return lo, hi
        merge = BINS // MSE_BINS
        c = self.counts.astype(np.float64)
        c[BINS // 2] = max(c[BINS // 2] - self.zeros, 0.0)  # exact zeros cost nothing
        c = c.reshape(MSE_BINS, merge).sum(axis=1)
        w = 2 * self.r / MSE_BINS
        v = -self.r + (np.arange(MSE_BINS) + 0.5) * w

        def cost(los: np.ndarray, his: np.ndarray) -> np.ndarray:
            """Squared error of each candidate range (vectors of bounds), the values spread
            evenly inside their bins."""
            scale = (his - los)[:, None] / (INT8_MAX - INT8_MIN)

            def integral(x: np.ndarray) -> np.ndarray:  # of (x - scale * round(x / scale))**2
                k = np.floor(x / scale + 0.5)
                y = x - k * scale
                area: np.ndarray = k * scale ** 3 / 12 + (y ** 3 + scale ** 3 / 8) / 3
                return area

            rounding = (integral(v + w / 2) - integral(v - w / 2)) / w
            clipped = (v - np.clip(v, los[:, None], his[:, None])) ** 2 + w * w / 12
            inside = (v >= los[:, None]) & (v <= his[:, None])
            costs: np.ndarray = (np.where(inside, rounding, clipped) * c).sum(axis=1)
            return costs

        f = 2.0 ** (-np.arange(GRID) / 8)
        best_lo, best_hi = lo, hi
        for step in ("both", "hi", "lo"):  # a common factor, then each side on its own
            los = lo * f if step != "hi" else np.full(GRID, best_lo)
            his = hi * f if step != "lo" else np.full(GRID, best_hi)
            if step == "lo" and lo == 0.0:
                break
            k = int(np.argmin(cost(los, his)))
            best_lo, best_hi = float(los[k]), float(his[k])
        return best_lo, best_hi


def collect(graph: Graph, samples: Mapping[str, np.ndarray]) -> dict[str, Histogram]:
    """Run every sample through the float reference and histogram every float activation
    (graph inputs and node outputs)."""
    names = [n for n in graph.inputs if graph.tensors[n].dtype.is_float]
    names += [o for node in graph.nodes for o in node.outputs
              if graph.tensors[o].dtype.is_float and not graph.tensors[o].is_const]
    hists = {n: Histogram() for n in names}
    count = next(iter(samples.values())).shape[0] if samples else 1
    for k in range(count):
        env = run(graph, {i: samples[i][k] for i in graph.inputs}, return_all=True)
        for n, h in hists.items():
            h.add(env[n])
    return hists


def ranges_from(hists: Mapping[str, Histogram], method: str = "minmax",
                percentile: float = 99.99) -> dict[str, tuple[float, float]]:
    """The range each histogram gives under ``method`` (see the module docstring)."""
    if method not in METHODS:
        raise CompilerError(f"unknown calibration method {method!r}; expected one of {METHODS}")
    if not 50 < percentile <= 100:
        raise CompilerError(f"percentile {percentile} must be in (50, 100]")
    out: dict[str, tuple[float, float]] = {}
    for name, h in hists.items():
        if method == "minmax" or h.r == 0.0:
            out[name] = (h.lo, h.hi)
        elif method == "percentile":
            out[name] = h.percentile_range(percentile)
        else:
            out[name] = h.mse_range()
    return out


def calibrate(graph: Graph, samples: Mapping[str, np.ndarray], method: str = "minmax", *,
              percentile: float = 99.99) -> dict[str, tuple[float, float]]:
    """``tensor name -> (lo, hi)`` for every float graph input and node output, from the
    float reference run over ``samples`` (``name -> (N, *shape)``, e.g. from
    ``load_calibration``)."""
    checked = check_calibration(graph, samples)
    return ranges_from(collect(graph, checked), method, percentile)
