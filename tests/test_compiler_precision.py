"""``precision.prepare`` and ``passes.dequantize``: the float32 twin, the int8 refusal of a
graph that would keep float nodes, the ``per_channel`` choice, and their clear errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from compilers.errors import CompilerError
from compilers.ir import DType, Graph, Node, Op, Quant, Tensor
from compilers.passes.dequantize import dequantize_graph
from compilers.precision import prepare, source_kind
from compilers.quantize import quantize
from compilers.reference import run

F = DType.FLOAT32


def _conv_gemm() -> Graph:
    rng = np.random.default_rng(0)
    ts = [Tensor("x", (1, 2, 4, 4), F),
          Tensor.const("w", rng.standard_normal((3, 2, 3, 3)).astype(np.float32)),
          Tensor("c", (1, 3, 2, 2), F), Tensor("f", (1, 12), F),
          Tensor.const("shape", np.asarray([1, 12], np.int64)),
          Tensor.const("g", rng.standard_normal((12, 5)).astype(np.float32)),
          Tensor("y", (1, 5), F)]
    nodes = [Node.make(Op.CONV, ["x", "w"], ["c"], strides=(1, 1), dilations=(1, 1),
                       pads=((0, 0), (0, 0)), group=1),
             Node.make(Op.RESHAPE, ["c"], ["f"], shape=(1, 12)),
             Node.make(Op.GEMM, ["f", "g"], ["y"], alpha=1.0, beta=1.0, trans_a=False, trans_b=False)]
    return Graph.make("cg", ["x"], ["y"], nodes, [t for t in ts if t.name != "shape"]).validate()


def _quantised_weights(g: Graph) -> dict[str, Quant]:
    return {t.name: t.quant for t in g.tensors.values()
            if t.is_const and t.dtype is DType.INT8 and t.quant is not None}


def test_per_channel_conv_only_and_bad_value() -> None:
    g = _conv_gemm()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        both = _quantised_weights(quantize(g, None))
        conv_only = _quantised_weights(quantize(g, None, per_channel="conv"))
    assert {q.axis for q in both.values()} == {0, 1}            # conv axis 0, GEMM axis 1
    axes = {name.split("_")[0]: q.axis for name, q in conv_only.items()}
    assert axes["w"] == 0 and axes["g"] is None                # GEMM per tensor
    with pytest.raises(CompilerError, match="per_channel='fc'"):
        quantize(g, None, per_channel="fc")


def test_int8_refuses_a_graph_that_keeps_float_nodes() -> None:
    # DIV by a computed divisor (a division by a constant is a MUL since issue 16)
    ts = [Tensor("x", (1, 4), F), Tensor("d", (1, 4), F), Tensor("y", (1, 4), F)]
    g = Graph.make("div", ["x", "d"], ["y"], [Node.make(Op.DIV, ["x", "d"], ["y"], name="the_div")], ts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CompilerError, match=r"cannot run in int8: 1 node\(s\).*'the_div'"):
            prepare(g, "int8")
    with pytest.raises(CompilerError, match="precision 'int16'"):
        prepare(g, "int16")


def test_float_twin_of_a_quantised_graph() -> None:
    g = _conv_gemm()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = prepare(g, "int8")
    assert q.source == "float" and q.quantised_here
    twin = prepare(q.graph, "float32")
    assert twin.source == "quantised" and not twin.quantised_here
    gt = twin.graph
    assert all(t.dtype is not DType.INT8 for t in gt.tensors.values())
    assert not any(n.op in (Op.QUANTIZE, Op.DEQUANTIZE) for n in gt.nodes)
    # the twin computes with the quantised weights' values: close to the float model
    x = np.random.default_rng(1).uniform(-1, 1, (1, 2, 4, 4)).astype(np.float32)
    want = run(g, {"x": x})["y"]
    got = run(gt, {"x": x})["y"]
    assert np.abs(got - want).max() <= 0.05 * np.abs(want).max()


def test_dequantize_refuses_an_integer_tensor_without_parameters() -> None:
    ts = [Tensor("x", (4,), DType.INT8), Tensor("y", (4,), F)]
    g = Graph.make("raw", ["x"], ["y"], [Node.make(Op.DEQUANTIZE, ["x"], ["y"])], ts)
    assert source_kind(g) == "quantised"
    with pytest.raises(CompilerError, match="input 'x' must be an integer tensor with quant"):
        dequantize_graph(g)
