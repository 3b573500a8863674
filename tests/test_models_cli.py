"""``tinymlaas models add/list/inspect``: the registry on disk and in the database, no server.

The figures inspect prints come from the compiler (checked in the compiler tests); here:
content addressing, versions, refusals that write nothing, and the fit against a profile.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from tinymlaas.cli.main import app
from tests.conftest import SHARED_MODELS

MNIST = SHARED_MODELS / "onnx" / "mnist-8" / "mnist-8.onnx"
KWS = SHARED_MODELS / "mlperf_tiny" / "kws_ref_model.tflite"
pytestmark = pytest.mark.skipif(not MNIST.exists(), reason="shared models not present")


def cli(home: Path, *args: str):
    result = CliRunner().invoke(app, list(args), env={"TINYMLAAS_HOME": str(home), "COLUMNS": "200"})
    return result


def test_add_list_versions_and_content_addressing(tmp_path):
    home = tmp_path / "home"
    for expected in ("1", "2"):
        r = cli(home, "models", "add", str(MNIST), "--name", "mnist", "--json")
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["version"] == expected
    r = cli(home, "models", "add", str(KWS), "--json")
    assert json.loads(r.stdout)["name"] == "kws_ref_model"
    stored = sorted(p.name for p in (home / "models").iterdir())
    assert len(stored) == 2 and stored[0].endswith((".onnx", ".tflite"))  # one file per content
    listed = json.loads(cli(home, "models", "list", "--json").stdout)
    assert [(m["name"], m["version"]) for m in listed] == [("kws_ref_model", "1"), ("mnist", "1"), ("mnist", "2")]
    r = cli(home, "models", "add", str(MNIST), "--name", "mnist", "--version", "2")
    assert r.exit_code == 1 and "exists already" in r.output


def test_refusals_write_nothing(tmp_path):
    home = tmp_path / "home"
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"hello, not a model")
    r = cli(home, "models", "add", str(junk))
    assert r.exit_code == 1 and "not an ONNX or TFLite model" in r.output
    einsum = helper.make_model(helper.make_graph(
        [helper.make_node("Einsum", ["a", "b"], ["c"], equation="ij,jk->ik", name="mix")], "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 2]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [2, 2])]), opset_imports=[helper.make_opsetid("", 13)])
    bad = tmp_path / "einsum.onnx"
    onnx.save(einsum, bad)
    r = cli(home, "models", "add", str(bad))
    assert r.exit_code == 1 and "Einsum" in r.output and "13" in r.output and "Traceback" not in r.output
    r = cli(home, "models", "add", str(MNIST), "--calibration", str(junk))
    assert r.exit_code == 1 and ".npz" in r.output
    assert json.loads(cli(home, "models", "list", "--json").stdout) == []
    assert not (home / "models").exists() or not any((home / "models").iterdir())


def test_add_with_calibration(tmp_path):
    home = tmp_path / "home"
    cal = tmp_path / "cal.npz"
    np.savez(cal, Input3=np.zeros((4, 1, 1, 28, 28), np.float32))
    r = cli(home, "models", "add", str(MNIST), "--calibration", str(cal))
    assert r.exit_code == 0, r.output
    assert json.loads(cli(home, "models", "list", "--json").stdout)[0]["calibration"] is True


def test_inspect_with_and_without_profile(tmp_path):
    home = tmp_path / "home"
    cli(home, "models", "add", str(SHARED_MODELS / "mlperf_tiny" / "pretrainedResnet.onnx"), "--name", "resnet")
    cli(home, "models", "add", str(KWS), "--name", "kws")
    r = cli(home, "models", "inspect", "resnet", "--profile", "nrf52840", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["macs"] == 12_501_632 and rep["params"] == 77_706
    assert rep["footprints"]["float32"]["arena"] == 196_608 and rep["footprints"]["int8"]["arena"] == 49_152
    fits = {(f["backend"], f["precision"]): f for f in rep["fits"]}  # every backend, built and measured
    assert set(fits) == {(b, p) for b in ("tflm", "wasm", "c") for p in ("float32", "int8")}
    assert fits[("tflm", "float32")]["fits"] is False and fits[("c", "int8")]["fits"] is True
    assert fits[("tflm", "int8")]["ram_bytes"] == 55_952 + 4096  # tflite-micro's measured arena + TFLM's RAM
    # the planner's estimate (49,152 B) fits, but the real flatbuffer of an NCHW ONNX model needs a
    # TRANSPOSE this board's TFLM build does not register: the verdict is the build's
    assert fits[("tflm", "int8")]["problems"] == ["TFLM build lacks operators TRANSPOSE"]
    # declared channels-last, the same model needs no TRANSPOSE and fits: a property of the version
    cli(home, "models", "add", str(SHARED_MODELS / "mlperf_tiny" / "pretrainedResnet.onnx"), "--name", "resnet",
        "--input-layout", "nhwc")
    rep = json.loads(cli(home, "models", "inspect", "resnet:2", "--profile", "nrf52840", "--backend", "tflm",
                         "--json").stdout)
    assert rep["input_layout"] == "nhwc" and rep["footprints"]["int8"]["arena"] == 49_152
    nhwc = {f["precision"]: f for f in rep["fits"]}
    assert nhwc["int8"]["fits"] is True and "TRANSPOSE" not in " ".join(nhwc["int8"]["problems"])
    r = cli(home, "models", "inspect", "kws", "--profile", "samd21")
    assert r.exit_code == 0 and "SRAM short by" in r.stdout and "int8" in r.stdout
    assert "TFLM build lacks operators" in r.stdout  # the board's op resolver, judged on the real flatbuffer
    rep = json.loads(cli(home, "models", "inspect", "kws", "--profile", "samd21", "--json").stdout)
    assert list(rep["footprints"]) == ["int8"]  # an int8 model has one planner column ...
    # ... but the deploy decision also builds its float32 twin, and inspect shows what it judges
    assert {(f["backend"], f["precision"]) for f in rep["fits"]} >= {("tflm", "float32"), ("tflm", "int8")}
    r = cli(home, "models", "inspect", "nothing")
    assert r.exit_code == 1 and "no model nothing" in r.output


def test_export_tflm_writes_a_runnable_model_and_c_files(tmp_path):
    """``models export``: the written .tflite runs in tflite-micro with the arena build.json
    states and equals the reference; the C array holds the same bytes."""
    runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime")
    from compilers.backends.tflm.build import build_tflm
    from compilers.frontends import import_tflite

    home = tmp_path / "home"
    assert cli(home, "models", "add", str(KWS), "--name", "kws").exit_code == 0
    out = tmp_path / "kws-out"
    r = cli(home, "models", "export", "kws", "--backend", "tflm", "--precision", "int8",
            "--profile", "nrf52840", "--out", str(out), "--json")
    assert r.exit_code == 0, r.output
    figures = json.loads(r.stdout)
    assert sorted(p.name for p in out.iterdir()) == sorted(figures["files"])
    assert json.loads((out / "build.json").read_text())["arena"] == figures["arena"]
    model = (out / "kws.tflite").read_bytes()
    assert len(model) == figures["bytes"] < KWS.stat().st_size
    cc = (out / "kws_model_data.cc").read_text()
    assert f"g_kws_model_data_size = {len(model)};" in cc
    assert bytes(int(b, 16) for b in cc.split("{", 1)[1].split("}", 1)[0].replace(",", " ").split()) == model
    assert f"kKwsArenaSize = {figures['arena']};" in (out / "kws_model_settings.h").read_text()
    assert figures["fits"]["ram_bytes"] <= figures["fits"]["ram_usable_bytes"] and figures["fits"]["fits"]
    # the exported bytes are what build_tflm makes, and they run with the stated arena
    expected = build_tflm(import_tflite(KWS), "int8", name="kws", measure=False, offline_plan=False)
    assert model == expected.flatbuffer
    it = runtime.Interpreter.from_bytes(model, arena_size=figures["arena"])
    x = np.random.default_rng(0).integers(-128, 128, (1, 49, 10, 1)).astype(np.int8)
    it.set_input(x, 0)
    it.invoke()
    from compilers.reference import run
    g = expected.graph
    np.testing.assert_array_equal(it.get_output(0), run(g, {g.inputs[0]: x})[g.outputs[0]])


def test_export_refuses_missing_operators_and_bad_options(tmp_path):
    home = tmp_path / "home"
    assert cli(home, "models", "add", str(KWS), "--name", "kws").exit_code == 0
    out = tmp_path / "nothing"
    r = cli(home, "models", "export", "kws", "--profile", "samd21", "--out", str(out))
    assert r.exit_code == 1
    line = r.output.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "CONV_2D" in line and "DEPTHWISE_CONV_2D" in line and "AVERAGE_POOL_2D" in line
    assert not out.exists()  # refused before anything is written
    r = cli(home, "models", "export", "kws", "--backend", "onnxc", "--out", str(out))
    assert r.exit_code == 1 and "backend 'onnxc'" in r.output and not out.exists()
    r = cli(home, "models", "export", "kws", "--precision", "int4", "--out", str(out))
    assert r.exit_code == 1 and "precision 'int4'" in r.output and not out.exists()


def test_export_wasm_and_c(tmp_path):
    """``--backend wasm``: the module runs in wasmtime and equals the reference; ``--backend
    c``: sections measured for the board's core, the source holds the ABI."""
    pytest.importorskip("wasmtime")
    pytest.importorskip("ziglang")
    from compilers.backends.wasm.host import run_wasmtime
    from compilers.frontends import import_tflite
    from compilers.precision import prepare
    from compilers.reference import run

    home = tmp_path / "home"
    assert cli(home, "models", "add", str(KWS), "--name", "kws").exit_code == 0
    r = cli(home, "models", "export", "kws", "--backend", "wasm", "--profile", "nrf52840",
            "--out", str(tmp_path / "w"), "--json")
    assert r.exit_code == 0, r.output
    f = json.loads(r.stdout)
    module = (tmp_path / "w" / "kws.wasm").read_bytes()
    assert len(module) == f["bytes"] and f["pages"] >= 1 and f["fits"]["fits"]
    g = prepare(import_tflite(KWS), "int8").graph
    x = np.random.default_rng(1).integers(-128, 128, (1, 49, 10, 1)).astype(np.int8)
    got = np.frombuffer(run_wasmtime(module, [x.tobytes()])[0], np.int8)
    np.testing.assert_array_equal(got, run(g, {g.inputs[0]: x})[g.outputs[0]].reshape(-1))
    r = cli(home, "models", "export", "kws", "--backend", "c", "--profile", "stm32l4r5",
            "--out", str(tmp_path / "c"), "--json")
    assert r.exit_code == 0, r.output
    f = json.loads(r.stdout)
    assert f["core"] == "cortex-m4f" and f["sections"]["bss"] >= f["arena"] > 0
    assert "int invoke(void)" in (tmp_path / "c" / "model.c").read_text()
    r = cli(home, "models", "export", "kws", "--backend", "c", "--out", str(tmp_path / "none"))
    assert r.exit_code == 1 and "needs --profile" in r.output
    r = cli(home, "models", "export", "kws", "--backend", "wasm", "--profile", "samd21",
            "--out", str(tmp_path / "none"))
    assert r.exit_code == 1 and "no Wasm runtime" in r.output
