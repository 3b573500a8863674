"""A small, freely licensed model shipped with tinymlaas, and inputs to try it with.

``mnist-8.onnx`` is the ONNX Model Zoo's MNIST digit classifier (a CNTK conv net, MIT
licence, ``LICENSE-MIT.txt`` next to it; source and sha256 in ``README.md``), byte for byte
the zoo file ``validated/vision/classification/mnist/model/mnist-8.onnx`` of
github.com/onnx/models. Input ``Input3`` [1,1,28,28] float32 holding pixel values 0..255
(white digit on black), output ``Plus214_Output_0`` [1,10] float32 logits (not
probabilities; their magnitudes reach several thousand).

Why this one: it is small (26 KB, 5,998 parameters) and real (two Conv + MaxPool stages and
an FC), so it exercises the compiler and a device's arena check: built for TFLM at int8 it
is ~9 KB of flatbuffer needing a ~10 KB arena (9,984 bytes recommended), at float32 ~33 KB,
so a SAMD21 (32 KB SRAM, ~8 KB left for the arena after firmware and runtime) cannot take it
while the larger boards can.

``digits.npz`` holds the zoo's three test cases (``test_data_set_{0,1,2}``), converted from
ONNX TensorProtos so nothing here parses protobuf at run time: ``x`` (3,1,28,28) float32,
``y`` the zoo's expected outputs (3,10) float32, ``labels`` their argmax (2, 0, 9).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["HERE", "MNIST", "LICENSE", "DIGITS", "digits", "sample_input", "decode_output"]

HERE = Path(__file__).resolve().parent
MNIST = HERE / "mnist-8.onnx"
LICENSE = HERE / "LICENSE-MIT.txt"
DIGITS = HERE / "digits.npz"
MNIST_SHA256 = "2f06e72de813a8635c9bc0397ac447a601bdbfa7df4bebc278723b958831c9bf"

_INT8 = np.iinfo(np.int8)


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three zoo test cases: x (3,1,28,28) float32, expected logits (3,10) float32,
    labels (3,) int64."""
    with np.load(DIGITS, allow_pickle=False) as d:
        return d["x"].astype(np.float32), d["y"].astype(np.float32), d["labels"].astype(np.int64)


def _quant(quant: tuple[float, int] | None, what: str) -> tuple[np.float32, int]:
    if quant is None:
        raise ValueError(f"an int8 {what} needs its (scale, zero_point)")
    scale, zp = quant
    if not scale > 0:
        raise ValueError(f"scale must be positive, not {scale!r}")
    return np.float32(scale), int(zp)


def sample_input(index: int, precision: str, quant: tuple[float, int] | None = None) -> bytes:
    """The raw bytes of digit ``index`` (0..2) as a device's input tensor [1,1,28,28].

    float32: the pixels as they are, little-endian. int8: ``clip(round_half_even(x / scale)
    + zero_point, -128, 127)`` with ``quant = (scale, zero_point)`` (as ONNX QuantizeLinear
    and ``compilers.calibration.quantize_array``).
    """
    x: np.ndarray = digits()[0][index][None]  # (1,1,28,28)
    if precision == "float32":
        return x.astype("<f4").tobytes()
    if precision == "int8":
        scale, zp = _quant(quant, "input")
        q = np.rint(x / scale).astype(np.float64) + zp
        return np.clip(q, _INT8.min, _INT8.max).astype(np.int8).tobytes()
    raise ValueError(f"unknown precision {precision!r} (float32 or int8)")


def decode_output(raw: bytes, dtype: str, quant: tuple[float, int] | None = None) -> np.ndarray:
    """A device's raw output tensor as float32 values (1-D): float32 little-endian as it is,
    int8 dequantised as ``(q - zero_point) * scale``."""
    if dtype == "float32":
        return np.frombuffer(raw, "<f4").astype(np.float32)
    if dtype == "int8":
        scale, zp = _quant(quant, "output")
        q = np.frombuffer(raw, np.int8).astype(np.int64)
        return ((q - zp).astype(np.float32) * scale).astype(np.float32)
    raise ValueError(f"unknown dtype {dtype!r} (float32 or int8)")
