"""Every .tflite model in the shared folder through ``import_tflite`` + the reference
interpreter, against ai-edge-litert and the tflite-micro runtime; the frontend's errors on
bad input; the layout it produces.

The model list comes from ``shared/models/models.json`` (every ``.tflite`` entry), so a
model added there is tested here; one the frontend refuses must be listed in ``REFUSED``
with the op that makes it so.

* Float models: relative error (max |a-b| / max |b|) <= 1e-4 against LiteRT on seeded
  random inputs. Observed: <= 5e-6 (hello_world_float 4.5e-6, the rest <= 5e-7).
* The hybrid model (int8 weights, float activations) imports with DEQUANTIZE nodes on its
  weights and is compared with onnxruntime on ``onnx_converted/kws_ref_model_float32.onnx``
  (tf2onnx ``--dequantize``: the same float graph): <= 1e-4 (observed ~1e-6). LiteRT's
  hybrid kernels quantise activations on the fly: up to ~0.3 relative away on the softmax
  output with these inputs, so only the argmax is compared with it.
* int8 models, seeded random int8 inputs: against the tflite-micro runtime (our default
  "tflm" target) every output must be bit-exact; against LiteRT's reference kernels
  (``use_target("litert")``) every tensor of the model (``experimental_preserve_all_tensors``)
  must be bit-exact. The brief's bar (>= 99% of outputs within 1 LSB) is asserted for the
  default target against LiteRT too, and the numbers are printed (``pytest -s``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from compilers import int8 as I
from compilers.errors import CompilerError, ModelFormatError, UnsupportedOp
from compilers.frontends import import_tflite
from compilers.ir import DType, Op
from compilers.reference import run

from test_compiler_int8 import S, TinyModel

try:
    from tflite_micro.python.tflite_micro import runtime as tflm_runtime
except ImportError:  # pragma: no cover
    tflm_runtime = None

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
if not (MODELS / "models.json").is_file():
    pytest.skip(f"shared models not found at {MODELS}", allow_module_level=True)

ENTRIES = {m["path"]: m for m in json.loads((MODELS / "models.json").read_text())["models"]
           if m["format"] == "tflite"}
REFUSED = {  # path -> (error, op named in it)
    "tflm_examples/trained_lstm.tflite": (UnsupportedOp, "UNIDIRECTIONAL_SEQUENCE_LSTM"),
    "tflm_examples/trained_lstm_int8.tflite": (UnsupportedOp, "UNIDIRECTIONAL_SEQUENCE_LSTM"),
    "tflm_examples/keyword_scrambled_8bit.tflite": (UnsupportedOp, "SVDF"),
}
HYBRID = {"mlperf_tiny/kws_ref_model_float32.tflite":
          "mlperf_tiny/onnx_converted/kws_ref_model_float32.onnx"}
LITERT_REJECTS = {  # LiteRT refuses to load these; TFLM runs them
    "tflm_examples/person_detect.tflite": "biases with quantized_dimension 3",
}
SEEDS = range(5)


def _imported(path: str) -> list[str]:
    return [p for p in ENTRIES if p not in REFUSED]


FLOAT = [p for p in _imported("") if p not in HYBRID
         and all(i["dtype"] == "float32" for i in ENTRIES[p]["inputs"])]
INT8 = [p for p in _imported("") if all(i["dtype"] == "int8" for i in ENTRIES[p]["inputs"])]


def _litert(path: str, preserve: bool = False) -> Interpreter:
    li = Interpreter(model_path=str(MODELS / path), experimental_preserve_all_tensors=preserve,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    li.allocate_tensors()
    return li


def _inputs(entry: dict, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for i in entry["inputs"]:
        if i["dtype"] == "float32":
            out.append(rng.standard_normal(i["shape"]).astype(np.float32))
        else:
            out.append(rng.integers(-128, 128, size=i["shape"]).astype(np.int8))
    return out


def _rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    diff = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
    return float(diff.max() / max(float(np.abs(ref).max()), 1e-30))


# ---- import ---------------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(ENTRIES))
def test_imports_or_is_refused(path: str) -> None:
    entry = ENTRIES[path]
    if path in REFUSED:
        error, op = REFUSED[path]
        with pytest.raises(error) as info:
            import_tflite(MODELS / path)
        msg = str(info.value)
        assert op in msg and "version" in msg and "operator" in msg, msg
        return
    g = import_tflite(MODELS / path).validate()
    assert len(g.inputs) == len(entry["inputs"]) and len(g.outputs) == len(entry["outputs"])
    for names, specs in ((g.inputs, entry["inputs"]), (g.outputs, entry["outputs"])):
        for name, spec in zip(names, specs, strict=True):
            t = g.tensors[name]
            assert t.shape == tuple(spec["shape"]), (name, t.shape, spec["shape"])   # NHWC kept
            assert t.dtype is DType(spec["dtype"])
            if "scale" in spec:
                assert t.quant is not None
                assert t.quant.scale[0] == pytest.approx(spec["scale"], rel=1e-7)
                assert t.quant.zero_point[0] == spec["zero_point"]


def test_layout_is_nchw_inside() -> None:
    """vww_96_int8: NHWC interface, NCHW convolutions with OIHW weights, depthwise as
    grouped CONV, per-channel quantisation on the output-channel axis, int32 biases."""
    g = import_tflite(MODELS / "mlperf_tiny/vww_96_int8.tflite")
    assert g.tensors[g.inputs[0]].shape == (1, 96, 96, 3)
    first = g.nodes[0]
    assert first.op is Op.TRANSPOSE and first.attr_ints("perm") == (0, 3, 1, 2)
    convs = [n for n in g.nodes if n.op is Op.CONV]
    assert len(convs) == 27
    depthwise = [n for n in convs if n.attr_int("group") > 1]
    assert len(depthwise) == 13
    for n in convs:
        x, w = g.tensors[n.inputs[0]], g.tensors[n.inputs[1]]
        assert x.shape[1] == w.shape[1] * n.attr_int("group")          # NCHW / OIHW
        assert w.quant is not None and w.quant.axis in (None, 0)
        assert g.tensors[n.inputs[2]].dtype is DType.INT32
    transposes = [n for n in g.nodes if n.op is Op.TRANSPOSE]
    assert len(transposes) == 1   # only at the input; [1,1,1,C] -> [1,C] is a RESHAPE


def test_hybrid_model_is_imported_with_dequantised_weights() -> None:
    g = import_tflite(MODELS / "mlperf_tiny/kws_ref_model_float32.tflite")
    deq = [n for n in g.nodes if n.op is Op.DEQUANTIZE]
    assert deq and all(g.tensors[n.inputs[0]].is_const and
                       g.tensors[n.inputs[0]].dtype is DType.INT8 for n in deq)
    assert all(g.tensors[n.outputs[0]].dtype is DType.FLOAT32 for n in g.nodes)


# ---- numbers -------------------------------------------------------------------------------
@pytest.mark.parametrize("path", FLOAT)
def test_float_model_matches_litert(path: str) -> None:
    g = import_tflite(MODELS / path)
    li = _litert(path)
    worst = 0.0
    for seed in SEEDS:
        xs = _inputs(ENTRIES[path], seed)
        for d, x in zip(li.get_input_details(), xs, strict=True):
            li.set_tensor(d["index"], x)
        li.invoke()
        ours = run(g, dict(zip(g.inputs, xs, strict=True)))
        for d, name in zip(li.get_output_details(), g.outputs, strict=True):
            worst = max(worst, _rel_err(ours[name], li.get_tensor(d["index"])))
    print(f"\n{path}: relative error vs LiteRT {worst:.2e}")
    assert worst <= 1e-4


@pytest.mark.parametrize("path", sorted(HYBRID))
def test_hybrid_model_matches_its_dequantised_onnx(path: str) -> None:
    ort = pytest.importorskip("onnxruntime")
    g = import_tflite(MODELS / path)
    sess = ort.InferenceSession(str(MODELS / HYBRID[path]), providers=["CPUExecutionProvider"])
    li = _litert(path)
    vs_onnx = vs_litert = 0.0
    for seed in SEEDS:
        x = (np.random.default_rng(seed).standard_normal(ENTRIES[path]["inputs"][0]["shape"])
             * 20).astype(np.float32)
        ours = run(g, {g.inputs[0]: x})[g.outputs[0]]
        ref = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        li.set_tensor(li.get_input_details()[0]["index"], x)
        li.invoke()
        lite = li.get_tensor(li.get_output_details()[0]["index"])
        vs_onnx, vs_litert = max(vs_onnx, _rel_err(ours, ref)), max(vs_litert, _rel_err(ours, lite))
        assert ours.argmax() == ref.argmax() == lite.argmax()
    print(f"\n{path}: vs dequantised ONNX {vs_onnx:.2e}, vs LiteRT hybrid kernels {vs_litert:.2e}")
    assert vs_onnx <= 1e-4   # LiteRT's hybrid path differs by design: argmax only (above)


@pytest.mark.parametrize("path", INT8)
def test_int8_model_bit_exact_with_tflm(path: str) -> None:
    if tflm_runtime is None:
        pytest.skip("tflite-micro is not installed")
    g = import_tflite(MODELS / path)
    tm = tflm_runtime.Interpreter.from_file(str(MODELS / path))
    diffs = []
    for seed in SEEDS:
        xs = _inputs(ENTRIES[path], seed)
        for k, x in enumerate(xs):
            tm.set_input(x, k)
        tm.invoke()
        ours = run(g, dict(zip(g.inputs, xs, strict=True)))
        for k, name in enumerate(g.outputs):
            diffs.append(np.abs(ours[name].astype(np.int64) - tm.get_output(k)).reshape(-1))
    d = np.concatenate(diffs)
    print(f"\n{path}: vs TFLM max {d.max()} LSB, exact {np.mean(d == 0):.4f}")
    assert np.mean(d <= 1) >= 0.99
    assert d.max() == 0


@pytest.mark.parametrize("path", [p for p in INT8 if p not in LITERT_REJECTS])
def test_int8_model_matches_litert(path: str) -> None:
    """Outputs with the default (TFLM) target: the brief's bar; every tensor of the model
    with the LiteRT target: bit-exact."""
    g = import_tflite(MODELS / path)
    li = _litert(path, preserve=True)
    details = li.get_tensor_details()
    out_diffs, tensor_worst, compared = [], 0, 0
    for seed in SEEDS:
        xs = _inputs(ENTRIES[path], seed)
        for d, x in zip(li.get_input_details(), xs, strict=True):
            li.set_tensor(d["index"], x)
        li.invoke()
        feeds = dict(zip(g.inputs, xs, strict=True))
        ours = run(g, feeds)
        for d, name in zip(li.get_output_details(), g.outputs, strict=True):
            out_diffs.append(np.abs(ours[name].astype(np.int64) - li.get_tensor(d["index"])).reshape(-1))
        with I.use_target("litert"):
            env = run(g, feeds, return_all=True)
        for d in details:
            name = d["name"]
            if name in env:
                mine = env[name]
            elif f"{name}@nchw" in env:
                mine = env[f"{name}@nchw"].transpose(0, 2, 3, 1)
            else:
                continue
            theirs = li.get_tensor(d["index"])
            if mine.dtype != theirs.dtype or mine.shape != theirs.shape:
                continue
            compared += 1
            tensor_worst = max(tensor_worst, int(np.abs(mine.astype(np.int64) - theirs).max()))
    d = np.concatenate(out_diffs)
    print(f"\n{path}: outputs vs LiteRT (tflm target) max {d.max()} LSB, exact "
          f"{np.mean(d == 0):.4f}; {compared // len(SEEDS)} tensors vs LiteRT (litert "
          f"target) max {tensor_worst} LSB")
    assert np.mean(d <= 1) >= 0.99
    assert compared >= len(SEEDS) * 3
    assert tensor_worst == 0


# ---- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.3, 0.6, 0.9, 0.999])
def test_truncated_file_is_a_model_format_error(fraction: float) -> None:
    raw = (MODELS / "mlperf_tiny/kws_ref_model.tflite").read_bytes()
    with pytest.raises(ModelFormatError):
        import_tflite(raw[:int(len(raw) * fraction)])


def test_junk_bytes_are_a_model_format_error(tmp_path: Path) -> None:
    junk = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    with pytest.raises(ModelFormatError, match="not a TFLite flatbuffer"):
        import_tflite(junk)
    with pytest.raises(ModelFormatError):
        import_tflite(junk[:4] + b"TFL3" + junk[8:])   # right identifier, garbage inside
    with pytest.raises(ModelFormatError, match="cannot read"):
        import_tflite(tmp_path / "missing.tflite")


def test_unsupported_op_names_op_version_and_index() -> None:
    m = TinyModel()
    x = m.tensor("x", [1, 4], np.float32)
    y = m.tensor("y", [1, 4], np.float32)
    z = m.tensor("z", [1, 4], np.float32)
    m.op(S.BuiltinOperator.RELU, [x], [y])
    m.op(S.BuiltinOperator.FLOOR, [y], [z], version=2)
    with pytest.raises(UnsupportedOp) as info:
        import_tflite(m.build([x], [z]))
    e = info.value
    assert e.op_type == "FLOOR" and e.version == 2 and e.index == 1  # type: ignore[attr-defined]
    assert "FLOOR" in str(e) and "version 2" in str(e) and "operator 1" in str(e)


def test_a_zero_stride_or_zero_width_weights_are_malformed_not_a_crash() -> None:
    """Found by the million-input fuzz run (tests/test_fuzz.py, models): a SAME pool with stride 0
    and a FULLY_CONNECTED whose weights have 0 columns divided by zero during import."""
    m = TinyModel()
    x = m.tensor("x", [1, 4, 4, 1], np.float32)
    y = m.tensor("y", [1, 2, 2, 1], np.float32)
    m.op(S.BuiltinOperator.MAX_POOL_2D, [x], [y], S.BuiltinOptions.Pool2DOptions,
         _opt(S.Pool2DOptionsT, padding=S.Padding.SAME, strideH=0, strideW=2, filterHeight=2, filterWidth=2))
    with pytest.raises(ModelFormatError, match=r"MAX_POOL_2D#0: strides \(0, 2\).*must be 1 or more"):
        import_tflite(m.build([x], [y]))
    m = TinyModel()
    x = m.tensor("x", [1, 4], np.float32)
    w = m.tensor("w", [3, 0], np.float32, data=np.zeros((3, 0), np.float32))
    y = m.tensor("y", [1, 3], np.float32)
    m.op(S.BuiltinOperator.FULLY_CONNECTED, [x, w], [y], S.BuiltinOptions.FullyConnectedOptions,
         S.FullyConnectedOptionsT())
    with pytest.raises(CompilerError, match=r"does not fit weights \(3, 0\)"):
        import_tflite(m.build([x], [y]))


def test_errors_are_compiler_errors() -> None:
    for bad in (b"", b"\x00" * 64):
        with pytest.raises(CompilerError):
            import_tflite(bad)


# ---- the layout machinery on a float chain of many ops -----------------------------------------
def _opt(cls, **fields):  # type: ignore[no-untyped-def]
    o = cls()
    for k, v in fields.items():
        setattr(o, k, v)
    return o


def _float_chain() -> bytes:
    """CONV -> ADD(broadcast const) -> DIV -> HARD_SWISH -> CONCATENATION(channels) -> PAD ->
    MAX_POOL -> PRELU -> TRANSPOSE -> MEAN -> EXPAND_DIMS -> DEPTHWISE -> SQUEEZE -> TANH ->
    RESHAPE -> FULLY_CONNECTED -> SOFTMAX, with a second, 4-D output taken mid-way (NCHW
    inside, so it leaves through a TRANSPOSE) and RELU6/LEAKY_RELU/SUB/MUL/LOGISTIC/AVG_POOL
    on a side branch."""
    rng = np.random.default_rng(5)
    f32 = np.float32
    m = TinyModel()
    B, Opt, A = S.BuiltinOperator, S.BuiltinOptions, S.ActivationFunctionType
    t = lambda name, shape, data=None: m.tensor(name, shape, f32, data=None if data is None else np.asarray(data, f32))  # noqa: E731
    x = t("x", [1, 6, 5, 3])
    w = t("w", [4, 3, 3, 3], rng.standard_normal((4, 3, 3, 3)))
    b = t("b", [4], rng.standard_normal(4))
    c1 = t("c1", [1, 6, 5, 4])
    m.op(B.CONV_2D, [x, w, b], [c1], Opt.Conv2DOptions,
         _opt(S.Conv2DOptionsT, padding=S.Padding.SAME, strideH=1, strideW=1, dilationHFactor=1,
              dilationWFactor=1, fusedActivationFunction=A.RELU))
    k = t("k", [4], rng.standard_normal(4))
    a1 = t("a1", [1, 6, 5, 4])
    m.op(B.ADD, [c1, k], [a1], Opt.AddOptions, _opt(S.AddOptionsT))
    two = t("two", [], 2.0)
    d1 = t("d1", [1, 6, 5, 4])
    m.op(B.DIV, [a1, two], [d1], Opt.DivOptions, _opt(S.DivOptionsT))
    h1 = t("h1", [1, 6, 5, 4])
    m.op(B.HARD_SWISH, [d1], [h1])
    cat = t("cat", [1, 6, 5, 8])
    m.op(B.CONCATENATION, [h1, c1], [cat], Opt.ConcatenationOptions,
         _opt(S.ConcatenationOptionsT, axis=-1))
    pads = m.tensor("pads", [4, 2], np.int32, data=np.array([[0, 0], [1, 1], [0, 2], [0, 0]]))
    p1 = t("p1", [1, 8, 7, 8])
    m.op(B.PAD, [cat, pads], [p1])
    mp = t("mp", [1, 4, 3, 8])
    m.op(B.MAX_POOL_2D, [p1], [mp], Opt.Pool2DOptions,
         _opt(S.Pool2DOptionsT, padding=S.Padding.VALID, strideH=2, strideW=2, filterHeight=2,
              filterWidth=2))
    alpha = t("alpha", [8], rng.uniform(0.1, 0.3, 8))
    pr = t("pr", [1, 4, 3, 8])
    m.op(B.PRELU, [mp, alpha], [pr])
    perm = m.tensor("perm", [4], np.int32, data=np.array([0, 2, 1, 3]))
    tr = t("tr", [1, 3, 4, 8])
    m.op(B.TRANSPOSE, [pr, perm], [tr])
    axes = m.tensor("axes", [1], np.int32, data=np.array([1]))
    mean = t("mean", [1, 4, 8])
    m.op(B.MEAN, [tr, axes], [mean], Opt.ReducerOptions, _opt(S.ReducerOptionsT, keepDims=False))
    ax2 = m.tensor("ax2", [], np.int32, data=np.array(2))
    ex = t("ex", [1, 4, 1, 8])
    m.op(B.EXPAND_DIMS, [mean, ax2], [ex])
    dw = t("dw", [1, 3, 1, 8], rng.standard_normal((1, 3, 1, 8)))
    dwb = t("dwb", [8], rng.standard_normal(8))
    dwo = t("dwo", [1, 4, 1, 8])
    m.op(B.DEPTHWISE_CONV_2D, [ex, dw, dwb], [dwo], Opt.DepthwiseConv2DOptions,
         _opt(S.DepthwiseConv2DOptionsT, padding=S.Padding.SAME, strideH=1, strideW=1,
              depthMultiplier=1, dilationHFactor=1, dilationWFactor=1))
    sq = t("sq", [1, 4, 8])
    m.op(B.SQUEEZE, [dwo], [sq], Opt.SqueezeOptions, _opt(S.SqueezeOptionsT, squeezeDims=[2]))
    th = t("th", [1, 4, 8])
    m.op(B.TANH, [sq], [th])
    rs = t("rs", [1, 32])
    m.op(B.RESHAPE, [th], [rs], Opt.ReshapeOptions, _opt(S.ReshapeOptionsT, newShape=[1, 32]))
    fw = t("fw", [5, 32], rng.standard_normal((5, 32)))
    fc = t("fc", [1, 5])
    m.op(B.FULLY_CONNECTED, [rs, fw, -1], [fc], Opt.FullyConnectedOptions,
         _opt(S.FullyConnectedOptionsT))
    sm = t("sm", [1, 5])
    m.op(B.SOFTMAX, [fc], [sm], Opt.SoftmaxOptions, _opt(S.SoftmaxOptionsT, beta=1.0))
    # side branch on the NCHW tensor c1
    r6 = t("r6", [1, 6, 5, 4])
    m.op(B.RELU6, [a1], [r6])
    lk = t("lk", [1, 6, 5, 4])
    m.op(B.LEAKY_RELU, [r6], [lk], Opt.LeakyReluOptions, _opt(S.LeakyReluOptionsT, alpha=0.1))
    sb = t("sb", [1, 6, 5, 4])
    m.op(B.SUB, [lk, c1], [sb], Opt.SubOptions, _opt(S.SubOptionsT))
    ml = t("ml", [1, 6, 5, 4])
    m.op(B.MUL, [sb, d1], [ml], Opt.MulOptions, _opt(S.MulOptionsT))
    lg = t("lg", [1, 6, 5, 4])
    m.op(B.LOGISTIC, [ml], [lg])
    ap = t("ap", [1, 3, 3, 4])
    m.op(B.AVERAGE_POOL_2D, [lg], [ap], Opt.Pool2DOptions,
         _opt(S.Pool2DOptionsT, padding=S.Padding.SAME, strideH=2, strideW=2, filterHeight=3,
              filterWidth=3))
    return m.build([x], [sm, mp, ap])


def test_float_chain_of_ops_matches_litert() -> None:
    buf = _float_chain()
    g = import_tflite(buf)
    li = Interpreter(model_content=buf, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    li.allocate_tensors()
    assert [g.tensors[o].shape for o in g.outputs] == [(1, 5), (1, 4, 3, 8), (1, 3, 3, 4)]
    assert {n.op for n in g.nodes} >= {Op.CONV, Op.CONCAT, Op.PAD, Op.MAX_POOL, Op.PRELU,
                                       Op.REDUCE_MEAN, Op.HARD_SWISH, Op.AVG_POOL, Op.TANH}
    for seed in range(3):
        x = np.random.default_rng(seed).standard_normal((1, 6, 5, 3)).astype(np.float32)
        li.set_tensor(li.get_input_details()[0]["index"], x)
        li.invoke()
        ours = run(g, {g.inputs[0]: x})
        for d, name in zip(li.get_output_details(), g.outputs, strict=True):
            ref = li.get_tensor(d["index"])
            assert _rel_err(ours[name], ref) <= 1e-5, name
