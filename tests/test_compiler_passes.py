"""Graph passes (``compilers.passes``) and model statistics (``compilers.stats``).

Each pass on small hand-built graphs, where its effect is visible (node counts,
attributes) and ``reference.run`` gives the same outputs before and after; then every
ONNX model of the shared folder through each pass alone and through the standard
pipeline.

Tolerances. Float models: relative error (max |a-b| / max |a| per output) <= 1e-5 on
seeded random inputs. Every pass is bit-exact on them except batch-norm folding (it
regroups ``(conv(x, w) - mean) * inv`` into ``conv(x, w * inv)``; pytorch.onnx, the only
shared model with BATCH_NORM after a foldable op, moves by 2e-7) and bias folding onto an
existing bias (``(y + b) + c`` -> ``y + (b + c)``, no shared model has it). QDQ models:
bit-exact (the passes only touch their float islands, and there exactly).

Node counts before -> after the standard pipeline (asserted in ``PIPELINE_NODES``):
ad01_fp32 29 -> 10, ad01_int8 69 -> 50, kws_ref_model 68 -> 58, kws_ref_model_float32
24 -> 14, pretrainedResnet_quant 75 -> 67, vww_96_int8 176 -> 148, pretrainedResnet 24 -> 16,
vww_96_float 59 -> 31, mnist-8 (both opsets) 12 -> 6, mnist-8 QDQ 34 -> 32, atmega_mnist
5 -> 4, mnist_pytorch 5 -> 3, tfl_helloworld 8 -> 3.

MACs (``stats``) equal models.json's ``macs_conv_fc`` for every MLPerf ONNX model (via the
tflite it was converted from) and for the tflite files through the TFLite frontend
(skipped if that frontend is absent), before and after the pipeline.
"""

from __future__ import annotations


import numpy as np
import pytest

from compilers.errors import CompilerError, GraphError
from compilers.frontends import import_onnx
from compilers.ir import DType, Graph, Node, Op, Quant, Tensor
from compilers.passes import (PassError, batchnorm_folding, bias_folding, constant_folding,
                              dead_code, fuse_activations, identity_elimination, optimize,
                              run_passes, standard_pipeline, storage_noop_transposes,
                              transpose_cancel)
from compilers.reference import run
from compilers.stats import node_macs, stats

from tests.compiler_helpers import ENTRIES, INPUT_SHAPES, MODELS, ONNX, needs_models, random_feeds

F = DType.FLOAT32

PIPELINE_NODES = {
    "mlperf_tiny/onnx_converted/ad01_fp32.onnx": (29, 10),
    "mlperf_tiny/onnx_converted/ad01_int8.onnx": (69, 50),
    "mlperf_tiny/onnx_converted/kws_ref_model.onnx": (68, 58),
    "mlperf_tiny/onnx_converted/kws_ref_model_float32.onnx": (24, 14),
    "mlperf_tiny/onnx_converted/pretrainedResnet_quant.onnx": (75, 67),
    "mlperf_tiny/onnx_converted/vww_96_int8.onnx": (176, 148),
    "mlperf_tiny/pretrainedResnet.onnx": (24, 16),
    "mlperf_tiny/vww_96_float.onnx": (59, 31),
    # mnist-8's Reshape of its constant FC weight is folded at import since issue 16: 12 -> 11
    "onnx/derived/mnist-8_opset13.onnx": (11, 6),
    "onnx/derived/mnist-8_opset13_int8_qdq.onnx": (33, 32),
    "onnx/mnist-8/mnist-8.onnx": (11, 6),
    "onnx/onnx2c/atmega_mnist/mnist.simplified.onnx": (5, 4),
    "onnx/onnx2c/mnist_pytorch/pytorch.onnx": (5, 3),
    "onnx/onnx2c/tfl_helloworld/model.onnx": (8, 3),
}
FLOAT_TOLERANCE = 1e-5


# ---- helpers ----------------------------------------------------------------------------------
def _graph(inputs, outputs, nodes, tensors, name="g") -> Graph:
    return Graph.make(name, inputs, outputs, nodes, tensors).validate()


def _feeds(g: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    return random_feeds(g, seed)


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return float(np.abs(a64 - b64).max() / max(float(np.abs(a64).max()), 1e-30)) if a.size else 0.0


def _same_outputs(before: Graph, after: Graph, *, exact: bool = True, seeds=range(3),
                  tol: float = FLOAT_TOLERANCE) -> float:
    worst = 0.0
    assert after.outputs == before.outputs
    for seed in seeds:
        feeds = _feeds(before, seed)
        a, b = run(before, feeds), run(after, feeds)
        for k in a:
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape
            if exact:
                np.testing.assert_array_equal(a[k], b[k], err_msg=k)
            else:
                worst = max(worst, _rel_err(a[k], b[k]))
    assert worst <= tol, worst
    return worst


def _ops(g: Graph) -> list[str]:
    return [n.op.name for n in g.nodes]


def _w(shape, seed=1, scale=0.5) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def _conv(x, w, y, name="conv", b=None, **attrs) -> Node:
    k = 2
    attrs = {"strides": (1,) * k, "dilations": (1,) * k, "pads": ((1, 1),) * k, "group": 1,
             **attrs}
    return Node.make(Op.CONV, [x, w] + ([b] if b else []), [y], name=name, **attrs)


def _gemm(a, b, y, c=None, name="fc", **attrs) -> Node:
    attrs = {"alpha": 1.0, "beta": 1.0, "trans_a": False, "trans_b": False, **attrs}
    return Node.make(Op.GEMM, [a, b] + ([c] if c else []), [y], name=name, **attrs)


def _bn_params(prefix: str, c: int, seed: int = 3) -> list[Tensor]:
    rng = np.random.default_rng(seed)
    return [Tensor.const(f"{prefix}_s", rng.uniform(0.5, 1.5, c).astype(np.float32)),
            Tensor.const(f"{prefix}_b", rng.standard_normal(c).astype(np.float32)),
            Tensor.const(f"{prefix}_m", rng.standard_normal(c).astype(np.float32)),
            Tensor.const(f"{prefix}_v", rng.uniform(0.1, 2.0, c).astype(np.float32))]


def _bn(x, y, prefix, name="bn") -> Node:
    return Node.make(Op.BATCH_NORM, [x, f"{prefix}_s", f"{prefix}_b", f"{prefix}_m",
                                     f"{prefix}_v"], [y], name=name, epsilon=1e-3)


# ---- run_passes -------------------------------------------------------------------------------
def _tiny() -> Graph:
    return _graph(["x"], ["y"], [Node.make(Op.RELU, ["x"], ["y"], name="r")],
                  [Tensor("x", (1, 4), F), Tensor("y", (1, 4), F)])


def test_run_passes_names_the_pass_that_breaks_the_graph() -> None:
    def breaks_graph(g: Graph) -> Graph:
        return Graph(g.name, g.inputs, ("nowhere",), g.nodes, g.tensors)

    def crashes(g: Graph) -> Graph:
        raise ValueError("boom")

    with pytest.raises(PassError, match="breaks_graph.*nowhere") as info:
        run_passes(_tiny(), [dead_code, breaks_graph])
    assert info.value.pass_name == "breaks_graph"
    assert isinstance(info.value, CompilerError) and isinstance(info.value, GraphError)
    with pytest.raises(PassError, match="'crashes'.*ValueError: boom"):
        run_passes(_tiny(), [crashes])
    with pytest.raises(PassError, match="returned int"):
        run_passes(_tiny(), [lambda g: 3])  # type: ignore[list-item, return-value]


def test_standard_pipeline_is_a_list_of_plain_functions() -> None:
    names = [p.__name__ for p in standard_pipeline()]
    assert names[0] == "constant_folding" and names[-1] == "dead_code"
    assert {"batchnorm_folding", "fuse_activations", "transpose_cancel",
            "identity_elimination", "bias_folding"} <= set(names)
    g = _tiny()
    assert optimize(g).nodes == g.nodes


# ---- constant folding -------------------------------------------------------------------------
def test_constant_folding_folds_chains_on_constants_with_the_reference_kernels() -> None:
    w = np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 12
    g = _graph(["x"], ["y"], [
        Node.make(Op.RESHAPE, ["w"], ["w2"], name="rs", shape=(6, 4)),
        Node.make(Op.TRANSPOSE, ["w2"], ["w3"], name="tr", perm=(1, 0)),
        Node.make(Op.RELU, ["w3"], ["w4"], name="relu"),
        Node.make(Op.MATMUL, ["x", "w4"], ["y"], name="mm"),
    ], [Tensor("x", (1, 4), F), Tensor.const("w", w), Tensor("w2", (6, 4), F),
        Tensor("w3", (4, 6), F), Tensor("w4", (4, 6), F), Tensor("y", (1, 6), F)])
    h = constant_folding(g).validate()
    assert _ops(h) == ["MATMUL"]
    np.testing.assert_array_equal(h.tensors["w4"].data, np.maximum(w.reshape(6, 4).T, 0))
    assert "w" in h.tensors  # dead constants are dead_code's job
    _same_outputs(g, h)
    assert "w" not in dead_code(h).tensors


def test_constant_folding_keeps_dequantize_of_weights_and_folds_quantize() -> None:
    q = Quant((0.05,), (0,))
    wf = _w((3, 4))
    g = _graph(["x"], ["y"], [
        Node.make(Op.QUANTIZE, ["wf"], ["wq"], name="q"),
        Node.make(Op.DEQUANTIZE, ["wq"], ["wd"], name="dq"),
        Node.make(Op.MATMUL, ["x", "wd"], ["y"], name="mm"),
    ], [Tensor("x", (2, 3), F), Tensor.const("wf", wf), Tensor("wq", (3, 4), DType.INT8, q),
        Tensor("wd", (3, 4), F), Tensor("y", (2, 4), F)])
    h = dead_code(constant_folding(g)).validate()
    assert _ops(h) == ["DEQUANTIZE", "MATMUL"]
    wq = h.tensors["wq"]
    assert wq.is_const and wq.dtype is DType.INT8 and wq.quant == q and "wf" not in h.tensors
    np.testing.assert_array_equal(wq.data, np.clip(np.rint(wf / np.float32(0.05)), -128, 127))
    _same_outputs(g, h)


def test_a_graph_output_computed_from_constants_becomes_a_constant() -> None:
    g = _graph(["x"], ["y", "c2"], [
        Node.make(Op.RELU, ["x"], ["y"], name="r"),
        Node.make(Op.ADD, ["c", "c"], ["c2"], name="twice"),
    ], [Tensor("x", (2,), F), Tensor("y", (2,), F), Tensor.const("c", np.ones(2, np.float32)),
        Tensor("c2", (2,), F)])
    h = run_passes(g, standard_pipeline())
    assert _ops(h) == ["RELU"] and h.tensors["c2"].is_const
    _same_outputs(g, h)


# ---- dead code --------------------------------------------------------------------------------
def test_dead_code_drops_unreachable_nodes_and_constants_but_keeps_inputs() -> None:
    g = _graph(["x", "unused_in"], ["y"], [
        Node.make(Op.RELU, ["x"], ["y"], name="live"),
        Node.make(Op.ADD, ["x", "c"], ["dead1"], name="dead_add"),
        Node.make(Op.TANH, ["dead1"], ["dead2"], name="dead_tanh"),
    ], [Tensor("x", (3,), F), Tensor("unused_in", (2,), F), Tensor("y", (3,), F),
        Tensor.const("c", np.ones(3, np.float32)), Tensor.const("orphan", np.ones(9, np.float32)),
        Tensor("dead1", (3,), F), Tensor("dead2", (3,), F)])
    h = dead_code(g).validate()
    assert _ops(h) == ["RELU"]
    assert set(h.tensors) == {"x", "unused_in", "y"} and h.inputs == ("x", "unused_in")
    _same_outputs(g, h)


# ---- identity elimination ---------------------------------------------------------------------
def test_identity_elimination_removes_no_ops_and_shortens_reshape_chains() -> None:
    g = _graph(["x"], ["y"], [
        Node.make(Op.IDENTITY, ["x"], ["a"], name="id"),
        Node.make(Op.RESHAPE, ["a"], ["b"], name="same", shape=(2, 6)),
        Node.make(Op.RESHAPE, ["b"], ["c"], name="r1", shape=(3, 4)),
        Node.make(Op.RESHAPE, ["c"], ["d"], name="r2", shape=(12,)),
        Node.make(Op.CAST, ["d"], ["e"], name="cast", to=F),
        Node.make(Op.TRANSPOSE, ["e"], ["f"], name="tr", perm=(0,)),
        Node.make(Op.RELU, ["f"], ["y"], name="relu"),
    ], [Tensor("x", (2, 6), F), Tensor("a", (2, 6), F), Tensor("b", (2, 6), F),
        Tensor("c", (3, 4), F), Tensor("d", (12,), F), Tensor("e", (12,), F),
        Tensor("f", (12,), F), Tensor("y", (12,), F)])
    h = identity_elimination(g).validate()
    assert _ops(h) == ["RESHAPE", "RELU"]
    assert h.nodes[0].inputs == ("x",) and h.nodes[0].attr_ints("shape") == (12,)
    _same_outputs(g, h)


def test_identity_elimination_keeps_output_names_and_requantisation_points() -> None:
    q1, q2 = Quant((0.1,), (0,)), Quant((0.2,), (3,))
    g = _graph(["x"], ["y", "z"], [
        Node.make(Op.RELU, ["x"], ["a"], name="relu"),
        Node.make(Op.IDENTITY, ["a"], ["y"], name="id_out"),       # graph output: a renamed y
        Node.make(Op.QUANTIZE, ["x"], ["q"], name="q"),
        Node.make(Op.IDENTITY, ["q"], ["q2"], name="id_requant"),  # quant differs: kept
        Node.make(Op.DEQUANTIZE, ["q2"], ["z"], name="dq"),
    ], [Tensor("x", (4,), F), Tensor("a", (4,), F), Tensor("y", (4,), F),
        Tensor("q", (4,), DType.INT8, q1), Tensor("q2", (4,), DType.INT8, q2),
        Tensor("z", (4,), F)])
    h = identity_elimination(g).validate()
    assert _ops(h) == ["RELU", "QUANTIZE", "IDENTITY", "DEQUANTIZE"]
    assert h.nodes[0].outputs == ("y",) and "a" not in h.tensors
    _same_outputs(g, h)
    # input -> IDENTITY -> output: both names are the interface, nothing to remove
    g2 = _graph(["x"], ["y"], [Node.make(Op.IDENTITY, ["x"], ["y"], name="id")],
                [Tensor("x", (4,), F), Tensor("y", (4,), F)])
    assert identity_elimination(g2).nodes == g2.nodes


# ---- transpose cancellation -------------------------------------------------------------------
NCHW_TO_NHWC, NHWC_TO_NCHW = (0, 2, 3, 1), (0, 3, 1, 2)


def test_inverse_transposes_cancel() -> None:
    g = _graph(["x"], ["y"], [
        Node.make(Op.TRANSPOSE, ["x"], ["a"], name="t1", perm=NCHW_TO_NHWC),
        Node.make(Op.TRANSPOSE, ["a"], ["b"], name="t2", perm=NHWC_TO_NCHW),
        Node.make(Op.RELU, ["b"], ["y"], name="relu"),
    ], [Tensor("x", (1, 3, 4, 5), F), Tensor("a", (1, 4, 5, 3), F), Tensor("b", (1, 3, 4, 5), F),
        Tensor("y", (1, 3, 4, 5), F)])
    h = transpose_cancel(g).validate()
    assert _ops(h) == ["RELU"] and h.nodes[0].inputs == ("x",)
    _same_outputs(g, h)


def test_two_transposes_compose_into_one() -> None:
    g = _graph(["x"], ["y"], [
        Node.make(Op.TRANSPOSE, ["x"], ["a"], name="t1", perm=(1, 2, 0)),
        Node.make(Op.TRANSPOSE, ["a"], ["y"], name="t2", perm=(1, 0, 2)),
    ], [Tensor("x", (2, 3, 4), F), Tensor("a", (3, 4, 2), F), Tensor("y", (4, 3, 2), F)])
    h = transpose_cancel(g).validate()
    assert _ops(h) == ["TRANSPOSE"] and h.nodes[0].attr_ints("perm") == (2, 1, 0)
    _same_outputs(g, h)


def test_transposes_are_pushed_through_elementwise_ops_to_cancel() -> None:
    """The tf2onnx shape: NCHW -> NHWC, activation and per-channel bias in NHWC, back."""
    c = np.arange(3, dtype=np.float32)
    g = _graph(["x"], ["y"], [
        Node.make(Op.TRANSPOSE, ["x"], ["a"], name="to_nhwc", perm=NCHW_TO_NHWC),
        Node.make(Op.RELU, ["a"], ["b"], name="relu"),
        Node.make(Op.ADD, ["b", "bias"], ["c"], name="add"),
        Node.make(Op.TRANSPOSE, ["c"], ["y"], name="to_nchw", perm=NHWC_TO_NCHW),
    ], [Tensor("x", (1, 3, 4, 5), F), Tensor("a", (1, 4, 5, 3), F), Tensor("b", (1, 4, 5, 3), F),
        Tensor.const("bias", c), Tensor("c", (1, 4, 5, 3), F), Tensor("y", (1, 3, 4, 5), F)])
    h = transpose_cancel(g).validate()
    assert _ops(h) == ["RELU", "ADD"]
    assert h.tensors[h.nodes[1].inputs[1]].shape == (1, 3, 1, 1) and "bias" not in h.tensors
    assert h.nodes[1].outputs == ("y",)
    _same_outputs(g, h)


def test_a_transposed_pair_of_operands_is_pushed_as_one() -> None:
    g = _graph(["x1", "x2"], ["y"], [
        Node.make(Op.TRANSPOSE, ["x1"], ["a1"], name="t1", perm=NCHW_TO_NHWC),
        Node.make(Op.TRANSPOSE, ["x2"], ["a2"], name="t2", perm=NCHW_TO_NHWC),
        Node.make(Op.MUL, ["a1", "a2"], ["m"], name="mul"),
        Node.make(Op.TRANSPOSE, ["m"], ["y"], name="back", perm=NHWC_TO_NCHW),
    ], [Tensor("x1", (1, 2, 3, 4), F), Tensor("x2", (1, 2, 3, 4), F), Tensor("a1", (1, 3, 4, 2), F),
        Tensor("a2", (1, 3, 4, 2), F), Tensor("m", (1, 3, 4, 2), F), Tensor("y", (1, 2, 3, 4), F)])
    h = transpose_cancel(g).validate()
    assert _ops(h) == ["MUL"] and h.nodes[0].inputs == ("x1", "x2")
    _same_outputs(g, h)


def test_a_transpose_that_moves_no_data_becomes_a_reshape() -> None:
    """pretrainedResnet.onnx: AvgPool [1,64,1,1] -> Transpose(0,2,3,1) -> Reshape [1,64]."""
    g = _graph(["x"], ["y"], [
        Node.make(Op.TRANSPOSE, ["x"], ["a"], name="t", perm=NCHW_TO_NHWC),
        Node.make(Op.RESHAPE, ["a"], ["y"], name="flatten", shape=(1, 64)),
    ], [Tensor("x", (1, 64, 1, 1), F), Tensor("a", (1, 1, 1, 64), F), Tensor("y", (1, 64), F)])
    h = transpose_cancel(g).validate()
    assert _ops(h) == ["RESHAPE", "RESHAPE"]
    assert _ops(identity_elimination(h)) == ["RESHAPE"]
    _same_outputs(g, h)


def test_a_transpose_with_no_partner_stays_where_it_is() -> None:
    g = _graph(["x"], ["y"], [
        Node.make(Op.TRANSPOSE, ["x"], ["a"], name="t", perm=NCHW_TO_NHWC),
        Node.make(Op.RELU, ["a"], ["y"], name="relu"),
    ], [Tensor("x", (1, 3, 4, 5), F), Tensor("a", (1, 4, 5, 3), F), Tensor("y", (1, 4, 5, 3), F)])
    h = transpose_cancel(g)
    assert h.nodes == g.nodes  # pushing below the RELU would gain nothing
    # nor through a QUANTIZE (int8 on one side, float on the other)
    q = Quant((0.1,), (0,))
    g2 = _graph(["x"], ["y"], [
        Node.make(Op.TRANSPOSE, ["x"], ["a"], name="t", perm=NCHW_TO_NHWC),
        Node.make(Op.QUANTIZE, ["a"], ["qa"], name="q"),
        Node.make(Op.TRANSPOSE, ["qa"], ["y"], name="back", perm=NHWC_TO_NCHW),
    ], [Tensor("x", (1, 3, 4, 5), F), Tensor("a", (1, 4, 5, 3), F),
        Tensor("qa", (1, 4, 5, 3), DType.INT8, q), Tensor("y", (1, 3, 4, 5), DType.INT8, q)])
    assert _ops(transpose_cancel(g2)) == ["TRANSPOSE", "QUANTIZE", "TRANSPOSE"]


def test_storage_noop_transposes_are_those_at_the_edge_of_the_conv_region() -> None:
    g = _graph(["x"], ["y", "z"], [
        Node.make(Op.TRANSPOSE, ["x"], ["xc"], name="in", perm=NHWC_TO_NCHW),   # free
        _conv("xc", "w", "c"),
        Node.make(Op.TRANSPOSE, ["c"], ["t"], name="out", perm=NCHW_TO_NHWC),   # free
        Node.make(Op.RESHAPE, ["t"], ["y"], name="flat", shape=(1, 80)),
        Node.make(Op.TRANSPOSE, ["c"], ["u"], name="real", perm=NCHW_TO_NHWC),  # a conv reads u
        _conv("u", "w2", "z", name="conv2"),
    ], [Tensor("x", (1, 4, 5, 2), F), Tensor("xc", (1, 2, 4, 5), F),
        Tensor.const("w", _w((4, 2, 3, 3))), Tensor("c", (1, 4, 4, 5), F),
        Tensor("t", (1, 4, 5, 4), F), Tensor("y", (1, 80), F), Tensor("u", (1, 4, 5, 4), F),
        Tensor.const("w2", _w((3, 4, 3, 3))), Tensor("z", (1, 3, 5, 4), F)])
    assert storage_noop_transposes(g) == {"xc", "t"}


# ---- batch-norm folding -----------------------------------------------------------------------
@pytest.mark.parametrize("group", [1, 2, 4])
def test_batchnorm_folds_into_conv_including_grouped_and_depthwise(group: int) -> None:
    x = Tensor("x", (1, 4, 6, 6), F)
    g = _graph(["x"], ["y"], [
        _conv("x", "w", "c", b="b", group=group),
        _bn("c", "y", "p"),
    ], [x, Tensor.const("w", _w((8, 4 // group, 3, 3))), Tensor.const("b", _w((8,), 2)),
        Tensor("c", (1, 8, 6, 6), F), Tensor("y", (1, 8, 6, 6), F), *_bn_params("p", 8)])
    h = dead_code(batchnorm_folding(g)).validate()
    assert _ops(h) == ["CONV"] and h.nodes[0].attr_int("group") == group
    assert not any(k.startswith("p_") for k in h.tensors)
    _same_outputs(g, h, exact=False)


def test_batchnorm_folds_into_conv_without_bias_and_conv_transpose() -> None:
    g = _graph(["x"], ["y", "z"], [
        _conv("x", "w", "c"),
        _bn("c", "y", "p"),
        Node.make(Op.CONV_TRANSPOSE, ["x", "wt"], ["ct"], name="deconv", strides=(2, 2),
                  dilations=(1, 1), pads=((0, 0), (0, 0)), group=2, output_padding=(0, 0)),
        _bn("ct", "z", "q", name="bn2"),
    ], [Tensor("x", (1, 4, 5, 5), F), Tensor.const("w", _w((6, 4, 3, 3))),
        Tensor("c", (1, 6, 5, 5), F), Tensor("y", (1, 6, 5, 5), F), *_bn_params("p", 6),
        Tensor.const("wt", _w((4, 3, 2, 2), 5)), Tensor("ct", (1, 6, 10, 10), F),
        Tensor("z", (1, 6, 10, 10), F), *_bn_params("q", 6, seed=9)])
    h = batchnorm_folding(g).validate()
    assert _ops(h) == ["CONV", "CONV_TRANSPOSE"] and all(len(n.inputs) == 3 for n in h.nodes)
    _same_outputs(g, h, exact=False)


@pytest.mark.parametrize("trans_b", [False, True])
def test_batchnorm_folds_into_gemm_with_alpha_beta_and_into_a_2d_matmul(trans_b: bool) -> None:
    wshape = (5, 3) if trans_b else (3, 5)
    g = _graph(["x"], ["y", "z"], [
        _gemm("x", "w", "h", c="cb", alpha=0.5, beta=2.0, trans_b=trans_b),
        _bn("h", "y", "p"),
        Node.make(Op.MATMUL, ["x", "w2"], ["m"], name="mm"),
        _bn("m", "z", "q", name="bn2"),
    ], [Tensor("x", (2, 3), F), Tensor.const("w", _w(wshape)), Tensor.const("cb", _w((1, 5), 4)),
        Tensor("h", (2, 5), F), Tensor("y", (2, 5), F), *_bn_params("p", 5),
        Tensor.const("w2", _w((3, 5), 7)), Tensor("m", (2, 5), F), Tensor("z", (2, 5), F),
        *_bn_params("q", 5, seed=8)])
    h = batchnorm_folding(g).validate()
    assert _ops(h) == ["GEMM", "GEMM"]
    assert h.nodes[0].attr_float("beta") == 1.0 and h.nodes[0].attr_float("alpha") == 0.5
    _same_outputs(g, h, exact=False)


def test_a_lone_batchnorm_stays() -> None:
    g = _graph(["x"], ["y", "z", "u"], [
        _bn("x", "y", "p"),                          # after a graph input
        _conv("x", "w", "c"), Node.make(Op.RELU, ["c"], ["r"], name="relu"),
        _bn("r", "z", "p", name="after_relu"),       # after a non-foldable op
        _conv("x", "w", "c2", name="conv2", fused="relu"),
        _bn("c2", "u", "p", name="after_fused"),     # the conv's activation comes first
    ], [Tensor("x", (1, 4, 5, 5), F), Tensor("y", (1, 4, 5, 5), F),
        Tensor.const("w", _w((4, 4, 3, 3))), Tensor("c", (1, 4, 5, 5), F),
        Tensor("r", (1, 4, 5, 5), F), Tensor("z", (1, 4, 5, 5), F), Tensor("c2", (1, 4, 5, 5), F),
        Tensor("u", (1, 4, 5, 5), F), *_bn_params("p", 4)])
    h = batchnorm_folding(g)
    assert _ops(h).count("BATCH_NORM") == 3


def test_batchnorm_after_a_conv_with_two_readers_stays() -> None:
    g = _graph(["x"], ["y", "c"], [_conv("x", "w", "c"), _bn("c", "y", "p")],
               [Tensor("x", (1, 4, 5, 5), F), Tensor.const("w", _w((4, 4, 3, 3))),
                Tensor("c", (1, 4, 5, 5), F), Tensor("y", (1, 4, 5, 5), F), *_bn_params("p", 4)])
    assert _ops(batchnorm_folding(g)) == ["CONV", "BATCH_NORM"]


# ---- bias folding -----------------------------------------------------------------------------
def test_bias_folding_moves_a_per_channel_add_into_the_conv_bias() -> None:
    """mnist-8 (CNTK) writes conv biases as Add with a [C,1,1] constant."""
    g = _graph(["x"], ["y"], [
        _conv("x", "w", "c"),
        Node.make(Op.ADD, ["cb", "c"], ["y"], name="bias_add", fused="relu"),
    ], [Tensor("x", (1, 2, 5, 5), F), Tensor.const("w", _w((4, 2, 3, 3))),
        Tensor.const("cb", _w((4, 1, 1), 3)), Tensor("c", (1, 4, 5, 5), F),
        Tensor("y", (1, 4, 5, 5), F)])
    h = bias_folding(g).validate()
    assert _ops(h) == ["CONV"] and len(h.nodes[0].inputs) == 3
    assert h.nodes[0].attr_str("fused") == "relu" and h.nodes[0].outputs == ("y",)
    _same_outputs(g, h)  # exact: the reference adds a bias as ADD does


def test_bias_folding_turns_matmul_plus_add_into_gemm() -> None:
    g = _graph(["x"], ["y", "z"], [
        Node.make(Op.MATMUL, ["x", "w"], ["m"], name="mm"),
        Node.make(Op.ADD, ["m", "b"], ["y"], name="bias"),
        Node.make(Op.MATMUL, ["x", "w"], ["m2"], name="mm2"),
        Node.make(Op.ADD, ["m2", "big"], ["z"], name="broadcasting_add"),  # grows the result
    ], [Tensor("x", (1, 3), F), Tensor.const("w", _w((3, 4))), Tensor.const("b", _w((4,), 2)),
        Tensor("m", (1, 4), F), Tensor("y", (1, 4), F), Tensor("m2", (1, 4), F),
        Tensor.const("big", _w((2, 4), 5)), Tensor("z", (2, 4), F)])
    h = bias_folding(g).validate()
    assert _ops(h) == ["GEMM", "MATMUL", "ADD"]
    _same_outputs(g, h)


def test_conv_bias_is_not_folded_when_the_add_is_not_per_channel() -> None:
    g = _graph(["x"], ["y"], [
        _conv("x", "w", "c"),
        Node.make(Op.ADD, ["c", "cb"], ["y"], name="spatial_add"),
    ], [Tensor("x", (1, 2, 5, 5), F), Tensor.const("w", _w((4, 2, 3, 3))),
        Tensor.const("cb", _w((1, 5), 3)), Tensor("c", (1, 4, 5, 5), F),
        Tensor("y", (1, 4, 5, 5), F)])
    assert _ops(bias_folding(g)) == ["CONV", "ADD"]


# ---- activation fusion ------------------------------------------------------------------------
@pytest.mark.parametrize("act,attrs,fused", [
    (Op.RELU, {}, "relu"), (Op.CLIP, {"min": 0.0, "max": 6.0}, "relu6"),
    (Op.CLIP, {"min": -1.0, "max": 1.0}, "relu_n1_to_1"), (Op.TANH, {}, "tanh"),
    (Op.CLIP, {"min": 0.0, "max": float("inf")}, "relu")])
def test_activations_fuse_into_the_op_before(act: Op, attrs: dict, fused: str) -> None:
    g = _graph(["x"], ["y"], [
        _conv("x", "w", "c", b="b"),
        Node.make(act, ["c"], ["y"], name="act", **attrs),
    ], [Tensor("x", (1, 2, 5, 5), F), Tensor.const("w", _w((3, 2, 3, 3), scale=3)),
        Tensor.const("b", _w((3,), 2)), Tensor("c", (1, 3, 5, 5), F), Tensor("y", (1, 3, 5, 5), F)])
    h = fuse_activations(g).validate()
    assert _ops(h) == ["CONV"] and h.nodes[0].attr_str("fused") == fused
    assert h.nodes[0].outputs == ("y",) and "c" not in h.tensors
    _same_outputs(g, h)  # bit-exact


def test_activations_that_cannot_fuse_stay() -> None:
    g = _graph(["x", "i"], ["y1", "y2", "y3", "c", "y4", "y5"], [
        _conv("x", "w", "c"),
        Node.make(Op.RELU, ["c"], ["y1"], name="relu_of_shared"),      # c is also an output
        Node.make(Op.MAX_POOL, ["x"], ["p"], name="pool", kernel=(2, 2), strides=(1, 1),
                  dilations=(1, 1), pads=((0, 0), (0, 0)), ceil_mode=False, fused="relu"),
        Node.make(Op.TANH, ["p"], ["y2"], name="second_act"),          # pool already fused
        Node.make(Op.CLIP, ["x"], ["y3"], name="clip_of_input", min=0.0, max=6.0),
        Node.make(Op.ADD, ["i", "i"], ["s"], name="int_add"),
        Node.make(Op.RELU, ["s"], ["y4"], name="int_relu"),            # integer tensor
        _conv("x", "w", "c5", name="conv5"),
        Node.make(Op.CLIP, ["c5"], ["y5"], name="clip05", min=0.0, max=5.0),  # no such act
    ], [Tensor("x", (1, 2, 5, 5), F), Tensor("i", (4,), DType.INT8),
        Tensor.const("w", _w((2, 2, 3, 3))), Tensor("c", (1, 2, 5, 5), F),
        Tensor("y1", (1, 2, 5, 5), F), Tensor("p", (1, 2, 4, 4), F), Tensor("y2", (1, 2, 4, 4), F),
        Tensor("y3", (1, 2, 5, 5), F), Tensor("s", (4,), DType.INT8), Tensor("y4", (4,), DType.INT8),
        Tensor("c5", (1, 2, 5, 5), F), Tensor("y5", (1, 2, 5, 5), F)])
    h = fuse_activations(g)
    assert _ops(h) == _ops(g)
    _same_outputs(g, h)


def test_fusion_in_a_qdq_graph_happens_in_the_float_island_only() -> None:
    """DQ -> CONV -> RELU -> Q fuses (float tensor between DQ and Q); after a Q/DQ pair
    (CONV -> Q -> DQ -> RELU) the RELU's input comes from DEQUANTIZE and stays."""
    qa, qw = Quant((0.02,), (-3,)), Quant((0.01,), (0,))
    tensors = [Tensor("x", (1, 2, 5, 5), DType.INT8, qa),
               Tensor.const("w", np.arange(36, dtype=np.int8).reshape(2, 2, 3, 3) - 18, qw),
               Tensor("xf", (1, 2, 5, 5), F), Tensor("wf", (2, 2, 3, 3), F),
               Tensor("c", (1, 2, 5, 5), F), Tensor("r", (1, 2, 5, 5), F),
               Tensor("q", (1, 2, 5, 5), DType.INT8, qa), Tensor("qf", (1, 2, 5, 5), F),
               Tensor("c2", (1, 2, 5, 5), F), Tensor("q2", (1, 2, 5, 5), DType.INT8, qa),
               Tensor("d2", (1, 2, 5, 5), F), Tensor("y", (1, 2, 5, 5), F)]
    g = _graph(["x"], ["y"], [
        Node.make(Op.DEQUANTIZE, ["x"], ["xf"], name="dqx"),
        Node.make(Op.DEQUANTIZE, ["w"], ["wf"], name="dqw"),
        _conv("xf", "wf", "c", name="conv1"),
        Node.make(Op.RELU, ["c"], ["r"], name="relu1"),
        Node.make(Op.QUANTIZE, ["r"], ["q"], name="q1"),
        Node.make(Op.DEQUANTIZE, ["q"], ["qf"], name="dq1"),
        _conv("qf", "wf", "c2", name="conv2"),
        Node.make(Op.QUANTIZE, ["c2"], ["q2"], name="q2"),
        Node.make(Op.DEQUANTIZE, ["q2"], ["d2"], name="dq2"),
        Node.make(Op.RELU, ["d2"], ["y"], name="relu2"),
    ], tensors)
    h = fuse_activations(g).validate()
    assert _ops(h).count("RELU") == 1
    conv1 = next(n for n in h.nodes if n.name == "conv1")
    assert conv1.attr_str("fused") == "relu" and conv1.outputs == ("r",)
    assert next(n for n in h.nodes if n.name == "conv2").attr_str("fused") == "none"
    _same_outputs(g, h)


# ---- stats ------------------------------------------------------------------------------------
def test_node_macs_by_hand() -> None:
    wt = np.ones((4, 3, 2, 2), np.float32)
    g = _graph(["x"], ["y", "t", "m"], [
        _conv("x", "w", "c", b="b"),                                     # 1*8*6*6 * 4*3*3
        _conv("c", "wd", "d", name="dw", group=8),                       # 1*8*6*6 * 1*3*3
        Node.make(Op.CONV_TRANSPOSE, ["x", "wt"], ["t"], name="deconv", strides=(2, 2),
                  dilations=(1, 1), pads=((0, 0), (0, 0)), group=2, output_padding=(0, 0)),
        Node.make(Op.RESHAPE, ["d"], ["f"], name="flat", shape=(288, 1)),
        _gemm("f", "w2", "y", trans_a=True),                             # 1 * 10 * 288
        Node.make(Op.MATMUL, ["c3", "bw"], ["m"], name="batched"),       # 2*3*5 * 4
    ], [Tensor("x", (1, 4, 6, 6), F), Tensor.const("w", _w((8, 4, 3, 3))),
        Tensor.const("b", _w((8,))), Tensor("c", (1, 8, 6, 6), F),
        Tensor.const("wd", _w((8, 1, 3, 3))), Tensor("d", (1, 8, 6, 6), F),
        Tensor.const("wt", wt), Tensor("t", (1, 6, 12, 12), F), Tensor("f", (288, 1), F),
        Tensor.const("w2", _w((288, 10))), Tensor("y", (1, 10), F),
        Tensor.const("c3", _w((2, 3, 4))), Tensor.const("bw", _w((4, 5))), Tensor("m", (2, 3, 5), F)])
    macs = {n.name: node_macs(g, n) for n in g.nodes}
    assert macs == {"conv": 288 * 36, "dw": 288 * 9, "deconv": 144 * 3 * 4, "flat": 0,
                    "fc": 2880, "batched": 30 * 4}
    s = stats(g)
    assert s.macs == sum(macs.values()) and s.ops["CONV"] == 2
    assert s.macs_by_op == {"CONV": 288 * 45, "CONV_TRANSPOSE": 1728, "GEMM": 2880, "MATMUL": 120}
    consts = [g.tensors[k] for k in ("w", "b", "wd", "wt", "w2", "c3", "bw")]
    assert s.params == sum(t.size for t in consts) and s.flash_bytes == 4 * s.params


def test_flash_counts_int8_weights_at_one_byte_and_not_their_dequantized_copy() -> None:
    q = Quant((0.1,), (0,))
    g = _graph(["x"], ["y"], [
        Node.make(Op.DEQUANTIZE, ["w"], ["wf"], name="dq"),
        Node.make(Op.MATMUL, ["x", "wf"], ["y"], name="mm"),
    ], [Tensor("x", (1, 8), F), Tensor.const("w", np.ones((8, 4), np.int8), q),
        Tensor("wf", (8, 4), F), Tensor("y", (1, 4), F)])
    s = stats(g)
    assert (s.params, s.flash_bytes, s.macs) == (32, 32, 32)


# ---- every shared model -----------------------------------------------------------------------
TFLITE = [m["path"] for m in ENTRIES if m["format"] == "tflite"]


@needs_models
@pytest.mark.parametrize("path", TFLITE)
def test_pipeline_and_macs_on_the_tflite_frontends_graphs(path: str) -> None:
    """The other frontend's graphs (int8 kernels, fused activations already set): the
    pipeline keeps them bit-exact and their MACs are models.json's."""
    tflite = pytest.importorskip("compilers.frontends.tflite")
    try:
        g = tflite.import_tflite(MODELS / path)
    except CompilerError as e:  # SVDF, LSTM: not in the IR
        pytest.skip(str(e))
    h = run_passes(g, standard_pipeline())
    _same_outputs(g, h, exact=True, seeds=range(2))
    assert len(h.nodes) <= len(g.nodes)
    listed = next(m for m in ENTRIES if m["path"] == path).get("macs_conv_fc")
    assert stats(g).macs == stats(h).macs == listed


_CACHE: dict[str, Graph] = {}


def _model(path: str) -> Graph:
    if path not in _CACHE:
        _CACHE[path] = import_onnx(MODELS / path, input_shapes=INPUT_SHAPES.get(path))
    return _CACHE[path]


def _is_qdq(g: Graph) -> bool:
    return any(n.op in (Op.QUANTIZE, Op.DEQUANTIZE) for n in g.nodes)


SINGLE_PASSES = [constant_folding, identity_elimination, transpose_cancel, batchnorm_folding,
                 bias_folding, fuse_activations, dead_code]


@needs_models
@pytest.mark.parametrize("path", ONNX)
def test_every_pass_alone_preserves_every_shared_model(path: str) -> None:
    g = _model(path)
    for p in SINGLE_PASSES:
        h = run_passes(g, [p])
        _same_outputs(g, h, exact=_is_qdq(g), seeds=range(2))


@needs_models
@pytest.mark.parametrize("path", ONNX)
def test_standard_pipeline_on_every_shared_model(path: str) -> None:
    g = _model(path)
    h = run_passes(g, standard_pipeline())
    err = _same_outputs(g, h, exact=_is_qdq(g), seeds=range(3))
    before, after = len(g.nodes), len(h.nodes)
    print(f"\n{path}: {before} -> {after} nodes, rel err {err:.1e}, ops {dict(stats(h).ops)}")
    assert (before, after) == PIPELINE_NODES[path]
    assert len(run_passes(h, standard_pipeline()).nodes) == after  # a fixed point
    # what every pipeline run must leave behind
    ops = _ops(h)
    assert "IDENTITY" not in ops and "BATCH_NORM" not in ops
    if not _is_qdq(g):
        assert not {"RELU", "CLIP", "TANH"} & set(ops), ops  # all fused on these models
    assert stats(h).macs == stats(g).macs
    assert stats(h).flash_bytes <= stats(g).flash_bytes


TFLITE_TWIN = {  # ONNX file -> the tflite it was converted from (models.json has its MACs)
    "mlperf_tiny/onnx_converted/ad01_fp32.onnx": "mlperf_tiny/ad01_fp32.tflite",
    "mlperf_tiny/onnx_converted/ad01_int8.onnx": "mlperf_tiny/ad01_int8.tflite",
    "mlperf_tiny/onnx_converted/kws_ref_model.onnx": "mlperf_tiny/kws_ref_model.tflite",
    "mlperf_tiny/onnx_converted/kws_ref_model_float32.onnx":
        "mlperf_tiny/kws_ref_model_float32.tflite",
    "mlperf_tiny/onnx_converted/pretrainedResnet_quant.onnx":
        "mlperf_tiny/pretrainedResnet_quant.tflite",
    "mlperf_tiny/onnx_converted/vww_96_int8.onnx": "mlperf_tiny/vww_96_int8.tflite",
    "mlperf_tiny/pretrainedResnet.onnx": "mlperf_tiny/pretrainedResnet.tflite",
    "mlperf_tiny/vww_96_float.onnx": "mlperf_tiny/vww_96_float.tflite",
    "onnx/onnx2c/tfl_helloworld/model.onnx": "tflm_examples/hello_world_float.tflite",
}


@needs_models
@pytest.mark.parametrize("path", sorted(TFLITE_TWIN))
def test_macs_equal_the_conv_fc_macs_listed_in_models_json(path: str) -> None:
    listed = {m["path"]: m.get("macs_conv_fc") for m in ENTRIES}
    expected = listed[TFLITE_TWIN[path]]
    g = _model(path)
    assert stats(g).macs == expected
    assert stats(optimize(g)).macs == expected
