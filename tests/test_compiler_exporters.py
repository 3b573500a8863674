"""Real exporter output through import and the TFLM build (issue 16's "Must show").

The set: scikit-learn + skl2onnx made here (an MLPClassifier, label path and ZipMap
included); the real torch 2.13 exports in ``tests/exporters/`` (NCHW CNN with
``x.view(x.size(0), -1)``, ``F.pad``, Conv1d, DS-CNN KWS with explicit pads, PReLU +
ConvTranspose2d); and imitations written with ``onnx.helper`` / the TFLite schema
(``tests/exporter_models.py``: tf2onnx's Keras CNN with a ``None`` batch and Conv1D, Keras 3
TFLiteConverter's ``SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE`` Flatten, onnxconverter-common's
float16 with and without float16 I/O), plus a model with external data saved by onnx.

Each is built for TFLM against a bundled profile's operator list, run in the real
tflite-micro interpreter with the measured arena, and compared with onnxruntime on the
source file (LiteRT for the TFLite one): float32 within 1e-5; int8 bit-exact with our
reference interpreter (TFLM's arithmetic) and, on real data (digits), within 1 point of the
float model's top-1 accuracy.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from compilers.backends.tflm.arena import recommended_arena
from compilers.backends.tflm.build import build_tflm
from compilers.backends.tflm.emit import to_tflite
from compilers.backends.tflm.sources import check_operators, model_operators
from compilers.errors import ImportNote, ModelFormatError, ShapeError, UnsupportedOp, UnsupportedOps
from compilers.frontends import import_onnx, import_tflite
from compilers.precision import prepare
from compilers.reference import run
from device_profiles import get_profile, load_profiles
from tests import exporter_models as E
from tests.compiler_helpers import litert_outputs, tflm_outputs

HERE = Path(__file__).resolve().parent / "exporters"
TORCH = sorted(p.name for p in HERE.glob("torch_*.onnx"))
FLOAT_TOL = 1e-5


def _ort(model: onnx.ModelProto | str | Path, xs: list[np.ndarray], output: int = 0) -> np.ndarray:
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    s = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return np.stack([s.run(None, {name: x})[output] for x in xs])


def _inputs(shape: tuple[int, ...], n: int = 4, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, shape).astype(np.float32) for _ in range(n)]


def _profile_for(ops: tuple[str, ...]) -> str:
    """The first bundled profile (smallest boards first) whose TFLM list has ``ops``."""
    profiles = sorted(load_profiles().values(), key=lambda p: (p.sram_total, p.name))
    for p in profiles:
        if set(ops) <= set(p.operators):
            return p.name
    raise AssertionError(f"no bundled profile registers {ops}")


def _build(graph, precision: str = "float32", **kw):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = build_tflm(graph, precision, offline_plan=False, **kw)
    profile = _profile_for(b.operators)
    check_operators(b.flatbuffer, get_profile(profile).operators)
    return b, profile


def _tflm(b, xs: list[np.ndarray]) -> np.ndarray:  # type: ignore[no-untyped-def]
    return tflm_outputs(b.flatbuffer, b.arena.recommended, xs)


# ---- scikit-learn through skl2onnx ------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_mlp():  # type: ignore[no-untyped-def]
    pytest.importorskip("skl2onnx")
    return E.skl2onnx_digits_mlp()


def test_skl2onnx_mlp_classifier_label_path_and_zipmap(digits_mlp) -> None:  # type: ignore[no-untyped-def]
    model, xtr, xte, yte, clf = digits_mlp
    assert {n.op_type for n in model.graph.node} >= {"ArgMax", "ArrayFeatureExtractor", "ZipMap"}
    with pytest.raises(ShapeError, match=r"input 'X' dimension 0 is unknown.*input_shapes=\{'X': \(1, 64\)\}"):
        import_onnx(model)
    with pytest.warns(ImportNote, match="ZipMap"):
        g = import_onnx(model, input_shapes={"X": (1, 64)})
    assert g.outputs == ("output_label", "output_probability")
    b, profile = _build(g)
    assert "ARG_MAX" in b.operators
    xs = [x.reshape(1, 64) for x in xte[:40]]
    from tflite_micro.python.tflite_micro import runtime
    it = runtime.Interpreter.from_bytes(b.flatbuffer, arena_size=b.arena.recommended)
    labels, probs = [], []
    for x in xs:
        it.set_input(x, 0)
        it.invoke()
        labels.append(int(np.asarray(it.get_output(0)).reshape(-1)[0]))
        probs.append(np.array(it.get_output(1), copy=True))
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = [s.run(None, {"X": x}) for x in xs]
    assert labels == [int(w[0][0]) for w in want] == list(clf.predict(xte[:40]))
    theirs = np.stack([[w[1][0][k] for k in range(10)] for w in want])  # ZipMap's maps
    np.testing.assert_allclose(np.concatenate(probs), theirs, atol=FLOAT_TOL)


def test_skl2onnx_mlp_int8_within_one_point(digits_mlp) -> None:  # type: ignore[no-untyped-def]
    model, xtr, xte, yte, clf = digits_mlp
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImportNote)
        g = import_onnx(model, input_shapes={"X": (1, 64)})
    b, _ = _build(g, "int8", calibration={"X": xtr[:200].reshape(200, 1, 64)})
    xin = g.tensors["X"]
    assert b.operators == tuple(sorted(set(b.operators)))
    q = b.graph.tensors["X"].quant
    assert q is not None
    from tflite_micro.python.tflite_micro import runtime
    it = runtime.Interpreter.from_bytes(b.flatbuffer, arena_size=b.arena.recommended)
    got = []
    for x in xte:
        xi = np.clip(np.round(x / q.scale[0]) + q.zero_point[0], -128, 127).astype(np.int8)
        it.set_input(xi.reshape(xin.shape), 0)
        it.invoke()
        got.append(int(np.asarray(it.get_output(0)).reshape(-1)[0]))
    float_acc = float(np.mean(clf.predict(xte) == yte))
    int8_acc = float(np.mean(np.asarray(got) == yte))
    assert int8_acc >= float_acc - 0.01, (float_acc, int8_acc)


def test_skl2onnx_string_labels_are_dropped_with_a_note() -> None:
    skl2onnx = pytest.importorskip("skl2onnx")
    from sklearn.neural_network import MLPClassifier
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 4)).astype(np.float32)
    y = np.where(x[:, 0] > 0, "up", "down")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier((8,), max_iter=50, random_state=0).fit(x, y)
    model = skl2onnx.to_onnx(clf, x[:1], options={"zipmap": False})
    with pytest.warns(ImportNote, match=r"output 'label' is not imported.*STRING.*'down'"):
        g = import_onnx(model, input_shapes={"X": (1, 4)})
    assert g.outputs == ("probabilities",)
    b, _ = _build(g)
    xs = [r.reshape(1, 4) for r in x[:5]]
    np.testing.assert_allclose(_tflm(b, xs), _ort(model, xs, output=1), atol=FLOAT_TOL)


# ---- Keras 3: TFLiteConverter and tf2onnx with a None batch ----------------------------------
def test_keras_tflite_none_batch_flatten_folds() -> None:
    buf = E.keras_tflite_cnn()
    assert {"SHAPE", "STRIDED_SLICE", "PACK"} <= set(model_operators(buf))
    g = import_tflite(buf)
    b, profile = _build(g)
    assert not {"SHAPE", "STRIDED_SLICE", "PACK", "TRANSPOSE"} & set(b.operators)
    assert len(b.flatbuffer) <= len(buf)
    xs = _inputs((1, 28, 28, 1))
    np.testing.assert_allclose(_tflm(b, xs), litert_outputs(buf, xs), atol=FLOAT_TOL)


def test_tf2onnx_keras_cnn_none_batch() -> None:
    m = E.tf2onnx_keras_cnn()
    with pytest.raises(ShapeError, match=r"symbolic 'unk__6'.*\(1, 28, 28, 1\)"):
        import_onnx(m)
    g = import_onnx(m, input_shapes={"conv2d_input": (1, 28, 28, 1)})
    assert not {"SHAPE", "GATHER", "CONCAT", "SLICE"} & {n.op.name for n in g.nodes}
    b, profile = _build(g)
    assert "TRANSPOSE" not in b.operators
    xs = _inputs((1, 28, 28, 1))
    np.testing.assert_allclose(_tflm(b, xs), _ort(m, xs), atol=FLOAT_TOL)


def test_tf2onnx_conv1d_transposes_cancel() -> None:
    m = E.tf2onnx_keras_conv1d()
    g = import_onnx(m)
    b, profile = _build(g)
    assert "CONV_2D" in b.operators and "TRANSPOSE" not in b.operators
    xs = _inputs((1, 40, 8))
    np.testing.assert_allclose(_tflm(b, xs), _ort(m, xs), atol=FLOAT_TOL)


# ---- torch ------------------------------------------------------------------------------------
EXPECT = {  # what each torch export must (not) become
    "torch_autoencoder.onnx": ({"TRANSPOSE_CONV", "PRELU", "LOGISTIC", "PAD"}, {"PADV2"}),
    "torch_conv1d.onnx": ({"CONV_2D", "TANH", "MAX_POOL_2D"}, {"PADV2"}),
    "torch_dscnn_kws.onnx": ({"PAD", "DEPTHWISE_CONV_2D"}, {"PADV2", "TRANSPOSE"}),
    "torch_nchw_cnn.onnx": ({"HARD_SWISH", "MEAN"}, {"PADV2"}),
    "torch_pad_cnn.onnx": ({"PAD", "LOGISTIC", "TANH", "LEAKY_RELU"}, {"PADV2", "TRANSPOSE"}),
}


@pytest.mark.parametrize("name", TORCH)
def test_torch_export_float32(name: str) -> None:
    path = HERE / name
    g = import_onnx(path)
    b, profile = _build(g)
    must, never = EXPECT[name]
    assert must <= set(b.operators) and not never & set(b.operators), b.operators
    xs = _inputs(g.tensors[g.inputs[0]].shape)
    np.testing.assert_allclose(_tflm(b, xs), _ort(path, xs), atol=FLOAT_TOL)


def test_torch_nchw_input_as_nhwc_needs_no_transpose() -> None:
    path = HERE / "torch_nchw_cnn.onnx"
    g = prepare(import_onnx(path), "float32").graph
    nchw, nhwc = to_tflite(g), to_tflite(g, input_layout="nhwc")
    assert "TRANSPOSE" in model_operators(nchw) and "TRANSPOSE" not in model_operators(nhwc)
    check_operators(nhwc, get_profile("nrf5340").operators)
    xs = _inputs((1, 3, 16, 16))
    arena = recommended_arena(nhwc).recommended
    got = tflm_outputs(nhwc, arena, [x.transpose(0, 2, 3, 1) for x in xs])
    np.testing.assert_allclose(got, _ort(path, xs), atol=FLOAT_TOL)


INT8_OPS = {"torch_nchw_cnn.onnx": "HARD_SWISH", "torch_pad_cnn.onnx": "LEAKY_RELU",
            "torch_conv1d.onnx": "TANH", "prelu": "PRELU"}


@pytest.mark.parametrize("name", sorted(INT8_OPS))
def test_torch_int8_is_tflm_exact(name: str) -> None:
    """HARD_SWISH, PRELU, LEAKY_RELU, LOGISTIC, TANH (and the rest) at int8: tflite-micro
    equals our reference interpreter bit for bit."""
    g = import_onnx(E.prelu_cnn() if name == "prelu" else HERE / name)
    b, _ = _build(g, "int8")
    assert INT8_OPS[name] in b.operators
    ref = b.graph
    feeds = [np.random.default_rng(k).integers(-128, 128, ref.tensors[ref.inputs[0]].shape).astype(np.int8)
             for k in range(4)]
    want = np.stack([run(ref, {ref.inputs[0]: x})[ref.outputs[0]] for x in feeds])
    got = tflm_outputs(b.flatbuffer, b.arena.recommended, feeds)
    np.testing.assert_array_equal(got, want)


def _fits(b, profile) -> bool:  # type: ignore[no-untyped-def]
    tflm = profile.runtime("tflm")
    return (set(b.operators) <= set(profile.operators)
            and b.arena.recommended + tflm.ram <= profile.sram_free
            and len(b.flatbuffer) + tflm.flash <= profile.flash_free)


@pytest.mark.parametrize("source", ["mlperf", "torch"])
def test_dscnn_kws_int8_builds_with_pad_only(source: str) -> None:
    """DS-CNN KWS int8, MLPerf's file and a torch export with explicit pads: no PADV2, and it
    builds on every bundled profile with the RAM, flash and operators (the torch one's first
    conv needs PAD, which every profile with convolutions registers)."""
    from tests.compiler_helpers import MODELS
    if source == "mlperf":
        path = MODELS / "mlperf_tiny" / "kws_ref_model.tflite"
        if not path.exists():
            pytest.skip("shared models not found")
        g = import_tflite(path)
    else:
        g = import_onnx(HERE / "torch_dscnn_kws.onnx")
    b, _ = _build(g, "int8")
    assert "PADV2" not in b.operators
    assert ("PAD" in b.operators) == (source == "torch")
    boards = [p for p in load_profiles().values() if _fits(b, p)]
    names = sorted(p.name for p in boards)
    assert {"nrf52840", "rp2040", "apollo3", "stm32l4r5"} <= set(names), names
    for p in boards:
        check_operators(b.flatbuffer, p.operators)


# ---- float16 and external data ----------------------------------------------------------------
@pytest.mark.parametrize("keep_io", [True, False], ids=["float32-io", "float16-io"])
def test_float16_model_is_upcast(keep_io: bool) -> None:
    src = E.small_float_cnn()
    m = E.to_float16(src, keep_io_types=keep_io)
    g = import_onnx(m)
    if keep_io:
        b, _ = _build(g)
    else:
        with pytest.warns(ImportNote, match="input 'x' was float16"):
            b = build_tflm(g, "float32", offline_plan=False)
    writer_types = {t.type for t in onnx_free_tensors(b.flatbuffer)}
    assert 1 not in writer_types  # TFLite TensorType FLOAT16 = 1: nothing float16 is written
    xs = _inputs((1, 1, 12, 12))
    got = _tflm(b, xs)
    np.testing.assert_allclose(got, _ort(E.rounded_to_float16(src), xs), atol=FLOAT_TOL)
    half = [x.astype(np.float16) for x in xs] if not keep_io else xs
    np.testing.assert_allclose(got, _ort(m, half).astype(np.float32), atol=2e-2)


def onnx_free_tensors(buf: bytes):  # type: ignore[no-untyped-def]
    from ai_edge_litert import schema_py_generated as S
    m = S.ModelT.InitFromObj(S.Model.GetRootAsModel(buf, 0))
    return m.subgraphs[0].tensors


def test_external_data_next_to_the_model(tmp_path: Path) -> None:
    m = E.small_float_cnn()
    path = tmp_path / "cnn.onnx"
    onnx.save(E.small_float_cnn(), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="cnn.onnx.data", size_threshold=0)
    assert (tmp_path / "cnn.onnx.data").exists()
    g = import_onnx(path)
    b, _ = _build(g)
    xs = _inputs((1, 1, 12, 12))
    np.testing.assert_allclose(_tflm(b, xs), _ort(m, xs), atol=FLOAT_TOL)
    raw = path.read_bytes()
    with pytest.raises(ModelFormatError, match=r"external data \(cnn\.onnx\.data\).*base_dir"):
        import_onnx(raw)
    assert import_onnx(raw, base_dir=tmp_path).nodes == g.nodes


@pytest.mark.parametrize("where", ["parent", "absolute", "symlink", "missing"])
def test_external_data_outside_the_directory_is_refused(tmp_path: Path, where: str) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    outside = tmp_path / "secret.bin"
    m = E.small_float_cnn()
    onnx.save(m, str(tmp_path / "x.onnx"), save_as_external_data=True, location="secret.bin",
              size_threshold=0)
    proto = onnx.load(str(tmp_path / "x.onnx"), load_external_data=False)
    location = {"parent": "../secret.bin", "absolute": str(outside), "symlink": "link.bin",
                "missing": "nothing.bin"}[where]
    if where == "symlink":
        (model_dir / "link.bin").symlink_to(outside)
    for t in proto.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    path = model_dir / "m.onnx"
    path.write_bytes(proto.SerializeToString())
    reason = {"parent": "leaves the model's directory", "absolute": "absolute path",
              "symlink": "leaves the model's directory", "missing": "does not exist"}[where]
    with pytest.raises(ModelFormatError, match=reason):
        import_onnx(path)


# ---- every unsupported op at once ---------------------------------------------------------------
def test_every_unsupported_op_is_listed_once() -> None:
    from onnx import TensorProto, helper
    nodes = [helper.make_node("Relu", ["x"], ["a"], "ok"),
             helper.make_node("Erf", ["a"], ["b"], "erf_1"),
             helper.make_node("Resize", ["b", "", "scales"], ["c"], "upsample_2"),
             helper.make_node("GlobalMaxPool", ["c"], ["y"], "gmp_3")]
    scales = onnx.numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 1, 1])], [scales])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedOps) as info:
        import_onnx(m)
    e = info.value
    assert isinstance(e, UnsupportedOp)
    assert [(o.op_type, o.opset, o.node) for o in e.ops] == [
        ("Erf", 17, "erf_1"), ("Resize", 17, "upsample_2"), ("GlobalMaxPool", 17, "gmp_3")]
    text = str(e)
    assert text.startswith("3 unsupported ops:")
    assert "instead: ConvTranspose" in text and "instead: MaxPool with kernel_shape" in text


# ---- the same models in the portable C backend, run as Wasm -------------------------------------
WASM = ["torch_conv1d.onnx", "torch_pad_cnn.onnx", "torch_autoencoder.onnx", "tf2onnx_conv1d",
        "fp16"]


@pytest.mark.parametrize("name", WASM)
def test_exporter_models_in_wasmtime(name: str) -> None:
    """1-D convolutions (native N-d windows), F.pad, PRELU, ConvTranspose, float16 weights:
    the C backend's module in wasmtime within 1e-5 of onnxruntime."""
    pytest.importorskip("wasmtime")
    pytest.importorskip("ziglang")
    from compilers.backends.wasm.build import build_wasm
    from compilers.backends.wasm.host import run_wasmtime
    src: onnx.ModelProto | Path
    if name == "tf2onnx_conv1d":
        src = E.tf2onnx_keras_conv1d()
    elif name == "fp16":
        src = E.to_float16(E.small_float_cnn(), keep_io_types=True)
    else:
        src = HERE / name
    g = import_onnx(src)
    b = build_wasm(g, "float32")
    xs = _inputs(g.tensors[g.inputs[0]].shape, n=2)
    got = [np.frombuffer(run_wasmtime(b.module, [x.tobytes()])[0], np.float32) for x in xs]
    ref = E.rounded_to_float16(E.small_float_cnn()) if name == "fp16" else src
    want = _ort(ref, xs)
    np.testing.assert_allclose(np.stack(got).reshape(want.shape), want, atol=FLOAT_TOL)


def test_skl2onnx_label_path_in_wasmtime(digits_mlp) -> None:  # type: ignore[no-untyped-def]
    """ARGMAX in the C backend: the label and the probabilities, as onnxruntime."""
    pytest.importorskip("wasmtime")
    from compilers.backends.wasm.build import build_wasm
    from compilers.backends.wasm.host import run_wasmtime
    model, xtr, xte, yte, clf = digits_mlp
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImportNote)
        g = import_onnx(model, input_shapes={"X": (1, 64)})
    b = build_wasm(g, "float32")
    x = xte[:1].reshape(1, 64)
    label, probs = run_wasmtime(b.module, [x.tobytes()])
    want = ort.InferenceSession(model.SerializeToString()).run(None, {"X": x})
    assert int(np.frombuffer(label, np.int64)[0]) == int(want[0][0])
    np.testing.assert_allclose(np.frombuffer(probs, np.float32),
                               [want[1][0][k] for k in range(10)], atol=FLOAT_TOL)


@pytest.mark.parametrize("name", ["prelu", "torch_nchw_cnn.onnx"])
def test_int8_prelu_and_hard_swish_in_wasm_equal_the_reference(name: str) -> None:
    """The C backend's int8 PRELU (TFLM's arithmetic in C) and HARD_SWISH (a table made by
    the reference kernel) equal the reference interpreter exactly."""
    pytest.importorskip("wasmtime")
    from compilers.backends.wasm.build import build_wasm
    from compilers.backends.wasm.host import run_wasmtime
    g = import_onnx(E.prelu_cnn() if name == "prelu" else HERE / name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = build_wasm(g, "int8")
    ref = b.graph
    assert {n.op.name for n in ref.nodes} & {"PRELU", "HARD_SWISH"}
    x = np.random.default_rng(3).integers(-128, 128, ref.tensors[ref.inputs[0]].shape).astype(np.int8)
    want = run(ref, {ref.inputs[0]: x})[ref.outputs[0]]
    got = np.frombuffer(run_wasmtime(b.module, [x.tobytes()])[0], np.int8).reshape(want.shape)
    np.testing.assert_array_equal(got, want)


def test_tflite_dynamic_input_dimension_needs_input_shapes() -> None:
    """A TFLite input whose stored shape is dynamic (-1, not only its shape_signature) is
    refused naming the dimension, and fixed by ``input_shapes``."""
    from ai_edge_litert import schema_py_generated as S
    buf = E.keras_tflite_cnn()
    m = S.ModelT.InitFromObj(S.Model.GetRootAsModel(buf, 0))
    m.subgraphs[0].tensors[0].shape = np.array([-1, 28, 28, 1], np.int32)
    import flatbuffers
    fb = flatbuffers.Builder(1024)
    fb.Finish(m.Pack(fb), file_identifier=b"TFL3")
    dynamic = bytes(fb.Output())
    with pytest.raises(ShapeError, match=r"dimension 0 is dynamic.*\(1, 28, 28, 1\)"):
        import_tflite(dynamic)
    g = import_tflite(dynamic, input_shapes={"serving_default_keras_tensor:0": (1, 28, 28, 1)})
    assert g.tensors[g.inputs[0]].shape == (1, 28, 28, 1)
