"""The bundled model (``tinymlaas.bundled``): the zoo's mnist-8 unchanged, its test digits,
and the raw tensor bytes a device takes and gives back.

onnxruntime's logits differ from the zoo's expected outputs by up to 8e-4 absolute (3e-6
relative on a logit of 75) because the logits reach ~6,600 and float32 sums round at that
scale: an atol of 1e-4 alone cannot hold, so the bound is 1e-4 + 1e-6 * max |expected|
(observed 1.2e-7 of it), the relative measure the compiler tests use.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from tinymlaas import bundled

SHARED = Path(__file__).resolve().parents[2] / "shared" / "models" / "onnx" / "mnist-8"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="shared/models is absent")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_files_are_there() -> None:
    assert bundled.MNIST.name == "mnist-8.onnx" and bundled.MNIST.stat().st_size == 26454
    assert sha256(bundled.MNIST) == bundled.MNIST_SHA256
    assert "MIT License" in bundled.LICENSE.read_text()
    assert bundled.MNIST_SHA256 in (bundled.HERE / "README.md").read_text()


@needs_shared
def test_bundled_files_equal_the_shared_ones() -> None:
    assert sha256(bundled.MNIST) == sha256(SHARED / "mnist-8.onnx")
    assert bundled.LICENSE.read_bytes() == (SHARED / "LICENSE-MIT.txt").read_bytes()


@needs_shared
def test_digits_are_the_zoo_test_data() -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    def tensor(path: Path) -> np.ndarray:
        t = onnx.TensorProto()
        t.ParseFromString(path.read_bytes())
        return numpy_helper.to_array(t)

    x, y, labels = bundled.digits()
    for k in range(3):
        assert np.array_equal(x[k][None], tensor(SHARED / f"test_data_set_{k}" / "input_0.pb"))
        assert np.array_equal(y[k][None], tensor(SHARED / f"test_data_set_{k}" / "output_0.pb"))


def test_digits_shapes_and_labels() -> None:
    x, y, labels = bundled.digits()
    assert x.shape == (3, 1, 28, 28) and x.dtype == np.float32
    assert y.shape == (3, 10) and y.dtype == np.float32
    assert labels.tolist() == [2, 0, 9] and np.array_equal(labels, y.argmax(axis=1))
    assert x.min() == 0.0 and x.max() == 255.0  # pixel values, not 0..1


def test_onnxruntime_reproduces_the_expected_outputs() -> None:
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # IR 3: initializers are also listed as graph inputs
    session = ort.InferenceSession(str(bundled.MNIST), options, providers=["CPUExecutionProvider"])
    [inp], [out] = session.get_inputs(), session.get_outputs()
    assert (inp.name, out.name) == ("Input3", "Plus214_Output_0")
    x, y, labels = bundled.digits()
    got = np.concatenate([session.run(None, {inp.name: x[k][None]})[0] for k in range(3)])
    assert np.abs(got - y).max() <= 1e-4 + 1e-6 * np.abs(y).max()
    assert np.array_equal(got.argmax(axis=1), labels)


def test_float32_bytes_round_trip() -> None:
    x, y, _ = bundled.digits()
    for k in range(3):
        raw = bundled.sample_input(k, "float32", None)
        assert len(raw) == 784 * 4 and raw == x[k].astype("<f4").tobytes()
        assert np.array_equal(bundled.decode_output(raw, "float32", None), x[k].ravel())
    assert np.array_equal(bundled.decode_output(y[1].astype("<f4").tobytes(), "float32", None), y[1])


@pytest.mark.parametrize("quant", [(1.0, -128), (255 / 254, -127), (0.0078428565, -1), (2.5, 3)])
def test_int8_input_round_trip(quant: tuple[float, int]) -> None:
    """Within half a scale wherever the value is representable; clipped elsewhere."""
    scale, zp = quant
    x, _, _ = bundled.digits()
    lo, hi = (-128 - zp) * scale, (127 - zp) * scale
    for k in range(3):
        raw = bundled.sample_input(k, "int8", quant)
        assert len(raw) == 784
        back = bundled.decode_output(raw, "int8", quant)
        want = x[k].ravel()
        inside = (want >= lo) & (want <= hi)
        assert np.all(np.abs(back[inside] - want[inside]) <= scale / 2 * (1 + 1e-6))
        assert np.all(np.abs(back[~inside] - np.clip(want[~inside], lo, hi)) <= scale / 2 * (1 + 1e-6))
    assert bundled.sample_input(0, "int8", (1.0, -128)) == (x[0] - 128).astype(np.int8).tobytes()


def test_int8_output_is_dequantised() -> None:
    raw = np.array([-128, -2, 0, 127], np.int8).tobytes()
    got = bundled.decode_output(raw, "int8", (0.5, -2))
    assert got.dtype == np.float32 and got.tolist() == [-63.0, 0.0, 1.0, 64.5]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="needs its"):
        bundled.sample_input(0, "int8", None)
    with pytest.raises(ValueError, match="unknown precision"):
        bundled.sample_input(0, "float16", None)
    with pytest.raises(ValueError, match="unknown dtype"):
        bundled.decode_output(b"\0\0", "int16", (1.0, 0))
    with pytest.raises(IndexError):
        bundled.sample_input(3, "float32", None)
