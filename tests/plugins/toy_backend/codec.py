"""The ``toyir`` artifact: ``b"TOYIR1\\n"`` then an ``.npz`` holding the graph as JSON (``__graph__``)
and every constant tensor by index. The RAM the interpreter needs is our planner's arena."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

from compilers.ir import DType, Graph, Node, Op, Quant, Tensor

MAGIC = b"TOYIR1\n"


def is_toyir(data: bytes) -> bool:
    return data[:len(MAGIC)] == MAGIC


def _attr(v: Any) -> Any:
    if isinstance(v, DType):
        return {"dtype": v.value}
    if isinstance(v, tuple):
        return [_attr(x) for x in v]
    return v


def _unattr(v: Any) -> Any:
    if isinstance(v, dict):
        return DType(v["dtype"])
    if isinstance(v, list):
        return tuple(_unattr(x) for x in v)
    return v


def encode(g: Graph) -> bytes:
    names = sorted(g.tensors)
    consts = {f"c{i}": g.tensors[n].data for i, n in enumerate(names) if g.tensors[n].is_const}
    meta = {"name": g.name, "inputs": list(g.inputs), "outputs": list(g.outputs),
            "tensors": [{"name": n, "shape": list(g.tensors[n].shape), "dtype": g.tensors[n].dtype.value,
                         "quant": None if g.tensors[n].quant is None else
                         [list(g.tensors[n].quant.scale), list(g.tensors[n].quant.zero_point), g.tensors[n].quant.axis],
                         "const": f"c{i}" if g.tensors[n].is_const else None} for i, n in enumerate(names)],
            "nodes": [{"op": node.op.name, "inputs": list(node.inputs), "outputs": list(node.outputs),
                       "name": node.name, "attrs": [[k, _attr(v)] for k, v in node.attrs]} for node in g.nodes]}
    buf = io.BytesIO()
    np.savez(buf, __graph__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **consts)  # type: ignore[arg-type]
    return MAGIC + buf.getvalue()


def decode(data: bytes) -> Graph:
    if not is_toyir(data):
        raise ValueError("not a toyir artifact")
    with np.load(io.BytesIO(data[len(MAGIC):]), allow_pickle=False) as z:
        meta = json.loads(bytes(z["__graph__"]).decode())
        tensors = []
        for t in meta["tensors"]:
            q = None if t["quant"] is None else Quant(tuple(t["quant"][0]), tuple(t["quant"][1]), t["quant"][2])
            if t["const"] is not None:
                tensors.append(Tensor.const(t["name"], np.array(z[t["const"]]), q))
            else:
                tensors.append(Tensor(t["name"], tuple(t["shape"]), DType(t["dtype"]), q))
    nodes = [Node(Op[n["op"]], tuple(n["inputs"]), tuple(n["outputs"]),
                  tuple((k, _unattr(v)) for k, v in n["attrs"]), n["name"]) for n in meta["nodes"]]
    return Graph.make(meta["name"], meta["inputs"], meta["outputs"], nodes, tensors).validate()


def ram_bytes(g: Graph) -> int:
    from compilers.planner import plan

    return max(plan(g).peak, 16)
