"""Shared helpers for the compiler tests: the shared models' catalogue and random feeds."""

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
