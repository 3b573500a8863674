"""Shared helpers for the compiler tests: the shared models' catalogue, random feeds, and
running a flatbuffer in tflite-micro and ai-edge-litert."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import SHARED_MODELS

MODELS = SHARED_MODELS
ENTRIES = ([m for m in json.loads((MODELS / "models.json").read_text())["models"]]
           if (MODELS / "models.json").is_file() else [])
ONNX = [m["path"] for m in ENTRIES if m["format"] == "onnx"]
# Models whose inputs have a symbolic batch dimension: the shapes they are compiled for.
INPUT_SHAPES = {"onnx/onnx2c/tfl_helloworld/model.onnx": {"dense_2_input": (1, 1)}}
needs_models = pytest.mark.skipif(not ONNX, reason=f"shared models not found at {MODELS}")


def random_feeds(graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs for every graph input: uniform [-1, 1] floats, full-range integers."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name in graph.inputs:
        t = graph.tensors[name]
        if t.dtype.is_float:
            feeds[name] = rng.uniform(-1, 1, t.shape).astype(t.dtype.numpy)
        else:
            info = np.iinfo(t.dtype.numpy)
            feeds[name] = rng.integers(info.min, info.max, t.shape, endpoint=True).astype(t.dtype.numpy)
    return feeds


def tflm_outputs(model: bytes, arena: int, xs: list[np.ndarray]) -> np.ndarray:
    """Output 0 of ``model`` in the tflite-micro interpreter for each input ``x`` (stacked)."""
    from tflite_micro.python.tflite_micro import runtime
    it = runtime.Interpreter.from_bytes(model, arena_size=arena)
    outs = []
    for x in xs:
        it.set_input(x, 0)
        it.invoke()
        outs.append(np.array(it.get_output(0), copy=True))
    return np.stack(outs)


def litert_outputs(model: bytes, xs: list[np.ndarray]) -> np.ndarray:
    """Output 0 of ``model`` in ai-edge-litert's reference kernels for each input (stacked)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    li = Interpreter(model_content=model, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    li.allocate_tensors()
    i, o = li.get_input_details()[0]["index"], li.get_output_details()[0]["index"]
    outs = []
    for x in xs:
        li.set_tensor(i, x)
        li.invoke()
        outs.append(np.array(li.get_tensor(o), copy=True))
    return np.stack(outs)
