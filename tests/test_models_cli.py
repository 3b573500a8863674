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
    assert rep["fits"]["float32"]["fits"] is False and rep["fits"]["int8"]["fits"] is True
    r = cli(home, "models", "inspect", "kws", "--profile", "samd21")
    assert r.exit_code == 0 and "SRAM short by" in r.stdout and "int8" in r.stdout
    assert "float32" not in r.stdout  # an int8 model has one column
    r = cli(home, "models", "inspect", "nothing")
    assert r.exit_code == 1 and "no model nothing" in r.output
