"""TFLM backend C emitters (``compilers.backends.tflm.sources``) and arena sizing
(``compilers.backends.tflm.arena``) on models round-tripped through our own compiler
(import_tflite -> optimize -> to_tflite)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

pytest.importorskip("ai_edge_litert")

from compilers.backends.tflm.emit import to_tflite  # noqa: E402
from compilers.backends.tflm.emitter import BackendError  # noqa: E402
from compilers.backends.tflm.sources import (TFLM_METHODS, MissingOperators, c_array,  # noqa: E402
                                       check_operators, model_operators, op_resolver)
from compilers.frontends.tflite import import_tflite  # noqa: E402
from compilers.passes import optimize  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "models"
HELLO = "tflm_examples/hello_world_int8.tflite"
KWS = "mlperf_tiny/kws_ref_model.tflite"
KWS_OPS = ["AVERAGE_POOL_2D", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "RESHAPE", "SOFTMAX"]


@lru_cache(maxsize=None)
def ours(rel: str) -> bytes:
    return to_tflite(optimize(import_tflite((SHARED / rel).read_bytes())))


def _cxx(tmp: Path, src: Path, *includes: Path) -> None:
    pytest.importorskip("ziglang")
    cmd = [sys.executable, "-m", "ziglang", "c++", "-std=c++17", "-Wall", "-Werror",
           *[f"-I{i}" for i in includes], "-c", str(src), "-o", str(tmp / (src.stem + ".o"))]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------- c_array

def test_c_array_compiles_and_round_trips(tmp_path: Path) -> None:
    model = ours(HELLO)
    files = c_array("hello_world", model)
    assert set(files) == {"hello_world_model_data.h", "hello_world_model_data.cc"}
    h, cc = files["hello_world_model_data.h"], files["hello_world_model_data.cc"]
    assert "#ifndef HELLO_WORLD_MODEL_DATA_H_" in h and "#define HELLO_WORLD_MODEL_DATA_H_" in h
    assert "extern const unsigned char g_hello_world_model_data[];" in h
    assert "extern const int g_hello_world_model_data_size;" in h
    assert "alignas(16) const unsigned char g_hello_world_model_data[] = {" in cc
    assert f"const int g_hello_world_model_data_size = {len(model)};" in cc
    rows = [ln for ln in cc.splitlines() if ln.strip().startswith("0x")]
    assert all(len(re.findall(r"0x[0-9a-f]{2}", r)) == 12 for r in rows[:-1])
    assert 1 <= len(re.findall(r"0x[0-9a-f]{2}", rows[-1])) <= 12
    body = cc[cc.index("{"):cc.index("};")]
    assert bytes(int(x, 16) for x in re.findall(r"0x([0-9a-f]{2})", body)) == model
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    _cxx(tmp_path, tmp_path / "hello_world_model_data.cc", tmp_path)


@pytest.mark.parametrize("bad", ["", "1model", "hello-world", "a b", "int", "class", "x;y", "ü"])
def test_c_array_rejects_bad_names(bad: str) -> None:
    with pytest.raises(ValueError, match="C identifier"):
        c_array(bad, b"\0" * 4)


# ---------------------------------------------------------------- operators

_STUB = """#pragma once
typedef enum { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;
#define TF_LITE_ENSURE_STATUS(a) do { TfLiteStatus s_ = (a); if (s_ != kTfLiteOk) return s_; } while (0)
namespace tflite {
template <unsigned int tOpCount> class MicroMutableOpResolver {
 public:
  unsigned int registered = 0;
%s
};
}  // namespace tflite
"""


def test_resolver_for_kws(tmp_path: Path) -> None:
    model = ours(KWS)
    # ours has no RESHAPE: FULLY_CONNECTED flattens its input (Keras' Flatten is not emitted)
    assert model_operators(model) == [op for op in KWS_OPS if op != "RESHAPE"]
    assert model_operators((SHARED / KWS).read_bytes()) == KWS_OPS
    snippet = op_resolver("kws", model)
    assert "TfLiteStatus RegisterKwsOps(tflite::MicroMutableOpResolver<5>& resolver)" in snippet
    calls = re.findall(r"resolver\.(Add\w+)\(\)", snippet)
    assert calls == [TFLM_METHODS[op] for op in model_operators(model)]
    assert calls == ["AddAveragePool2D", "AddConv2D", "AddDepthwiseConv2D", "AddFullyConnected",
                     "AddSoftmax"]
    # compile against a stub MicroMutableOpResolver that refuses more than N registrations
    methods = "\n".join(f"  TfLiteStatus {m}() {{ return ++registered <= tOpCount ? kTfLiteOk : kTfLiteError; }}"
                        for m in sorted(set(TFLM_METHODS.values())))
    inc = tmp_path / "tensorflow" / "lite" / "micro"
    inc.mkdir(parents=True)
    (inc / "micro_mutable_op_resolver.h").write_text(_STUB % methods)
    (tmp_path / "kws_ops.cc").write_text(snippet)
    _cxx(tmp_path, tmp_path / "kws_ops.cc", tmp_path)


def test_resolver_hello_world_and_name() -> None:
    snippet = op_resolver("hello_world", ours(HELLO))
    assert "TfLiteStatus RegisterHelloWorldOps(tflite::MicroMutableOpResolver<1>& resolver)" in snippet
    assert re.findall(r"resolver\.(Add\w+)\(\)", snippet) == ["AddFullyConnected"]
    with pytest.raises(ValueError):
        op_resolver("9x", ours(HELLO))


def test_check_operators() -> None:
    model = ours(KWS)
    check_operators(model, KWS_OPS)
    check_operators(model, [op.lower() for op in KWS_OPS] + ["ADD", "MEAN"])
    check_operators(model, TFLM_METHODS)
    with pytest.raises(MissingOperators) as e:
        check_operators(model, ["CONV_2D", "FULLY_CONNECTED", "RESHAPE", "SOFTMAX"])
    assert isinstance(e.value, BackendError)
    assert e.value.missing == ["AVERAGE_POOL_2D", "DEPTHWISE_CONV_2D"]
    assert str(e.value).startswith("model needs AVERAGE_POOL_2D, DEPTHWISE_CONV_2D; "
                                   "this TFLM build registers only CONV_2D, FULLY_CONNECTED, RESHAPE, SOFTMAX")


def test_not_a_flatbuffer() -> None:
    with pytest.raises(BackendError):
        model_operators(b"not a model")


# ---------------------------------------------------------------- arena

def _official_total(rel: str) -> int:
    info = json.loads((SHARED / "models.json").read_text())
    return next(m for m in info["models"] if m["path"] == rel)["tflm_arena_measured"]["total"]


@pytest.mark.parametrize("rel", [HELLO, KWS])
def test_recommended_arena(rel: str) -> None:
    pytest.importorskip("tflite_micro.python.tflite_micro.runtime")
    from compilers.backends.tflm.arena import ALIGN, _works, recommended_arena

    model = ours(rel)
    rep = recommended_arena(model)
    official = recommended_arena((SHARED / rel).read_bytes())
    print(f"{rel}: ours {rep}; official file {official}; models.json total {_official_total(rel)}")
    assert rep.recommended % ALIGN == 0
    assert rep.head + rep.tail == rep.recorded_total
    # the smallest working arena rounded up to 16: it works, 16 bytes less does not
    assert _works(model, rep.recommended, 20.0)
    assert not _works(model, rep.recommended - ALIGN, 20.0)
    assert not _works(model, rep.recommended - 1, 20.0)
    # the official file's recorded total (models.json), minus a little slack
    assert official.recorded_total == _official_total(rel)
    assert rep.recommended >= _official_total(rel) - 256
    assert rep.recommended >= rep.recorded_total - 256
