"""The IR on its own (no ONNX): construction, immutability, ``Graph.validate`` naming the
node and the problem, topological order, and a few reference kernels checked by hand."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from compilers.errors import CompilerError, ExecutionError, GraphError, UnsupportedDType
from compilers.ir import DType, Graph, Node, Op, Quant, Tensor
from compilers.reference import run
from compilers.shapes import window_out

F = DType.FLOAT32


def _mlp(**override) -> Graph:
    """x[1,4] -> GEMM(w, b) -> RELU -> y[1,3]."""
    tensors = [
        Tensor("x", (1, 4), F),
        Tensor.const("w", np.arange(12, dtype=np.float32).reshape(4, 3) / 10),
        Tensor.const("b", np.ones(3, np.float32)),
        Tensor("h", (1, 3), F),
        Tensor("y", (1, 3), F),
    ]
    nodes = [
        Node.make(Op.GEMM, ["x", "w", "b"], ["h"], name="fc", alpha=1.0, beta=1.0,
                  trans_a=False, trans_b=False),
        Node.make(Op.RELU, ["h"], ["y"], name="act"),
    ]
    parts = {"name": "mlp", "inputs": ["x"], "outputs": ["y"], "nodes": nodes, "tensors": tensors}
    parts.update(override)
    return Graph.make(**parts)


def test_a_good_graph_validates_and_runs() -> None:
    g = _mlp().validate()
    x = np.array([[1, -2, 3, -4]], np.float32)
    y = run(g, {"x": x})["y"]
    np.testing.assert_allclose(y, np.maximum(x @ g.tensors["w"].data + 1, 0), rtol=1e-6)


def test_ir_objects_are_frozen_and_hashable() -> None:
    g = _mlp()
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.nodes[0].op = Op.RELU  # type: ignore[misc]
    with pytest.raises(TypeError):
        g.tensors["x"] = Tensor("x", (1,), F)  # type: ignore[index]
    with pytest.raises(ValueError):
        g.tensors["w"].data[0, 0] = 5  # type: ignore[index]
    assert hash(g.nodes[0]) == hash(Node.make(Op.GEMM, ["x", "w", "b"], ["h"], name="fc", alpha=1.0,
                                              beta=1.0, trans_a=False, trans_b=False))
    assert g.nodes[0].attr("alpha") == 1.0 and g.nodes[0].attr_dict["trans_b"] is False


def test_constants_are_copied_not_aliased() -> None:
    a = np.zeros(3, np.float32)
    t = Tensor.const("c", a)
    a[0] = 1
    assert t.data[0] == 0


@pytest.mark.parametrize("mutate, message", [
    (lambda g: dataclasses.replace(g, nodes=(Node.make(Op.RELU, ["nope"], ["y"], name="act"),)),
     "RELU node 'act': undefined input 'nope'"),
    (lambda g: dataclasses.replace(g, nodes=g.nodes + (Node.make(Op.RELU, ["h"], ["y"], name="again"),)),
     "RELU node 'again': duplicate output 'y'"),
    (lambda g: dataclasses.replace(g, tensors={**g.tensors, "y": Tensor("y", (1, 4), F)}),
     "RELU node 'act': output 'y' has shape (1, 4), op gives (1, 3)"),
    (lambda g: dataclasses.replace(g, tensors={**g.tensors, "y": Tensor("y", (1, 3), DType.INT8)}),
     "RELU node 'act': output 'y' is int8, op gives float32"),
    (lambda g: dataclasses.replace(g, tensors={**g.tensors, "b": Tensor.const("b", np.ones(3, np.int8))}),
     "GEMM node 'fc': bias is int8; expected float32"),
    (lambda g: dataclasses.replace(g, tensors={**g.tensors, "w": Tensor.const("w", np.ones((5, 3), np.float32))}),
     "GEMM node 'fc': inner dimensions differ"),
    (lambda g: dataclasses.replace(g, nodes=(Node.make(Op.GEMM, ["x", "w", "b"], ["h"], name="fc",
                                                       alpha=1.0, beta=1.0, trans_a=False),) + g.nodes[1:]),
     "GEMM node 'fc': attributes"),
    (lambda g: dataclasses.replace(g, nodes=(Node.make(Op.GEMM, ["x", "w", "b"], ["h"], name="fc",
                                                       alpha=1, beta=1.0, trans_a=False, trans_b=False),)
                                   + g.nodes[1:]),
     "GEMM node 'fc': attribute 'alpha'=1 is not of kind float"),
    (lambda g: dataclasses.replace(g, outputs=("zzz",)), "graph output 'zzz' is never defined"),
    (lambda g: dataclasses.replace(g, nodes=(Node.make(Op.ADD, ["x"], ["h"], name="half"),) + g.nodes[1:]),
     "ADD node 'half': 1 inputs, ADD takes 2..2"),
])
def test_validate_names_node_and_problem(mutate, message: str) -> None:
    with pytest.raises(GraphError) as e:
        mutate(_mlp()).validate()
    assert message in str(e.value)


def test_cycle_is_found() -> None:
    tensors = [Tensor("x", (2,), F), Tensor("a", (2,), F), Tensor("b", (2,), F)]
    nodes = [Node.make(Op.ADD, ["x", "b"], ["a"], name="n1"), Node.make(Op.RELU, ["a"], ["b"], name="n2")]
    with pytest.raises(GraphError, match="cycle"):
        Graph.make("loop", ["x"], ["b"], nodes, tensors).validate()


def test_topological_order_and_helpers() -> None:
    g = _mlp()
    backwards = dataclasses.replace(g, nodes=g.nodes[::-1])
    assert [n.name for n in backwards.topological_order()] == ["fc", "act"]
    assert backwards.toposorted().validate().nodes == g.nodes
    assert g.producers()["h"].name == "fc"
    assert [n.name for n in g.consumers()["h"]] == ["act"]
    assert set(g.constants) == {"w", "b"}


def test_quant_checks() -> None:
    with pytest.raises(GraphError, match="per-tensor quantisation with 2 scales"):
        Quant((0.1, 0.2), (0, 0))
    with pytest.raises(GraphError, match="does not fit shape"):
        Tensor("w", (4, 3), DType.INT8, Quant((0.1, 0.2), (0, 0), axis=0))
    q = Quant((0.5, 0.25), (1, -1), axis=1)
    scale, zp = q.arrays(3)
    assert scale.shape == (1, 2, 1) and zp.tolist() == [[[1], [-1]]]


def test_unknown_numpy_dtype_is_unsupported() -> None:
    with pytest.raises(UnsupportedDType):
        DType.from_numpy(np.complex64)
    assert issubclass(UnsupportedDType, CompilerError)


def test_quantize_rounds_half_to_even_and_saturates() -> None:
    x = np.array([0.5, 1.5, 2.5, -0.5, -2.5, 1000, -1000, 0.26], np.float32)
    q = Quant((0.5,), (3,))
    tensors = [Tensor("x", (8,), F), Tensor("q", (8,), DType.INT8, q), Tensor("y", (8,), F)]
    nodes = [Node.make(Op.QUANTIZE, ["x"], ["q"], name="q"), Node.make(Op.DEQUANTIZE, ["q"], ["y"], name="dq")]
    g = Graph.make("qdq", ["x"], ["q", "y"], nodes, tensors).validate()
    out = run(g, {"x": x})
    # x / 0.5 = 1, 3, 5, -1, -5, 2000, -2000, 0.52 -> round half even: 1 3 5 -1 -5 ... 1
    assert out["q"].tolist() == [4, 6, 8, 2, -2, 127, -128, 4]
    np.testing.assert_array_equal(out["y"], (out["q"].astype(np.float32) - 3) * 0.5)


def test_quantize_needs_quant_on_its_output() -> None:
    tensors = [Tensor("x", (2,), F), Tensor("q", (2,), DType.INT8)]
    g = Graph.make("q", ["x"], ["q"], [Node.make(Op.QUANTIZE, ["x"], ["q"], name="q")], tensors)
    with pytest.raises(GraphError, match="QUANTIZE node 'q': output 'q' must be an integer tensor with quant"):
        g.validate()


def test_run_checks_its_inputs() -> None:
    g = _mlp()
    with pytest.raises(ExecutionError, match="missing inputs"):
        run(g, {})
    with pytest.raises(ExecutionError, match="float64"):
        run(g, {"x": np.zeros((1, 4))})
    with pytest.raises(ExecutionError, match=r"\[1, 4\]"):
        run(g, {"x": np.zeros((2, 4), np.float32)})


def test_window_out_matches_onnx_formula() -> None:
    assert window_out(7, 3, 2, 1, 0, 0) == 3
    assert window_out(8, 3, 2, 1, 0, 0, ceil_mode=True) == 4
    # ceil mode drops a last window that would start in the end padding
    assert window_out(2, 3, 3, 1, 1, 1, ceil_mode=True) == 1
    assert window_out(5, 3, 1, 2, 0, 0) == 1


def test_compilers_never_import_upward() -> None:
    """compilers/ sits below the server, the simulator and the device profiles."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "compilers"
    pattern = re.compile(r"^\s*(from|import)\s+(tinymlaas|simulator|device_profiles)\b", re.M)
    offenders = [str(p) for p in root.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_fused_activation_defaults_and_applies() -> None:
    g = _mlp().validate()
    assert g.nodes[0].attr("fused") == "none"  # Node.make fills the default
    fused = Graph.make(name="mlp-fused", inputs=["x"], outputs=["h"], tensors=list(g.tensors.values())[:4],
                       nodes=[Node.make(Op.GEMM, ["x", "w", "b"], ["h"], name="fc", alpha=1.0, beta=1.0,
                                        trans_a=False, trans_b=False, fused="relu")]).validate()
    x = np.array([[1, -2, 3, -4]], np.float32)
    np.testing.assert_array_equal(run(fused, {"x": x})["h"], run(g, {"x": x})["y"])
    bad = dataclasses.replace(fused, nodes=(Node.make(Op.GEMM, ["x", "w", "b"], ["h"], name="fc", alpha=1.0,
                                                     beta=1.0, trans_a=False, trans_b=False, fused="gelu"),))
    with pytest.raises(GraphError, match="fused activation 'gelu'"):
        bad.validate()
