"""A model version is its file, its side files and its import options, through the CLI (no server)
and the admin API (a running server): ``models add --input-shape NAME=DIMS --input-layout
nhwc|nchw``, ONNX external data stored content-addressed beside the model, the import's notes.

Checked in the registry's files and rows, in what ``export`` writes (run in tflite-micro against
onnxruntime on the source) and in what ``inspect`` judges; every refusal names what was wrong
and writes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from tests import exporter_models as E
from tests.compiler_helpers import tflm_outputs
from tinymlaas import runtime
from tinymlaas.cli.main import app
from tinymlaas.deploy.cache import cache_key
from tinymlaas.model_import import ImportOptions
from tinymlaas.store import Store
from tinymlaas.store.tables import MODELS


def cli(home: Path, *args: str):  # type: ignore[no-untyped-def]
    env = {"TINYMLAAS_HOME": str(home), "COLUMNS": "200", "TINYMLAAS_API": None, "TINYMLAAS_TOKEN": None,
           "TINYMLAAS_DB": None}
    return CliRunner().invoke(app, list(args), env=env)


def external_model(directory: Path, location: str = "cnn.onnx.data") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "cnn.onnx"
    onnx.save(E.small_float_cnn(), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location=location, size_threshold=0)
    return path


def relocated(path: Path, location: str) -> None:
    """Rewrite the model's external-data location (as a crafted or carelessly moved file has it)."""
    proto = onnx.load(str(path), load_external_data=False)
    for t in proto.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    path.write_bytes(proto.SerializeToString())


def check_export_runs(out: Path, name: str) -> None:
    """The exported flatbuffer in tflite-micro equals onnxruntime on the model with its data."""
    pytest.importorskip("tflite_micro")
    build = json.loads((out / "build.json").read_text())
    xs = [np.random.default_rng(i).uniform(-1, 1, (1, 1, 12, 12)).astype(np.float32) for i in range(3)]
    got = tflm_outputs((out / f"{name}.tflite").read_bytes(), build["arena"], xs)
    s = ort.InferenceSession(E.small_float_cnn().SerializeToString(), providers=["CPUExecutionProvider"])
    want = np.stack([s.run(None, {"x": x})[0] for x in xs])
    np.testing.assert_allclose(got.reshape(want.shape), want, atol=1e-5)


def test_external_data_through_the_cli(tmp_path: Path) -> None:
    home, src = tmp_path / "home", external_model(tmp_path / "src")
    data = (tmp_path / "src" / "cnn.onnx.data").read_bytes()
    r = cli(home, "models", "add", str(src), "--json")
    assert r.exit_code == 0, r.output
    added = json.loads(r.stdout)
    assert added["external_files"] == ["cnn.onnx.data"] and added["size"] == src.stat().st_size
    stored = home / "models" / f"{hashlib.sha256(data).hexdigest()}.data"  # content-addressed beside the model
    assert stored.read_bytes() == data
    (tmp_path / "src" / "cnn.onnx.data").unlink()  # the registry's copy is what builds read
    out = tmp_path / "out"
    r = cli(home, "models", "export", "cnn", "--backend", "tflm", "--precision", "float32", "--out", str(out))
    assert r.exit_code == 0, r.output
    check_export_runs(out, "cnn")
    r = cli(home, "models", "inspect", "cnn", "--profile", "nrf5340", "--backend", "tflm", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["external_files"] == ["cnn.onnx.data"] and {f["precision"] for f in rep["fits"] if f["fits"]} == \
        {"float32", "int8"}
    assert cli(home, "models", "rm", "cnn").exit_code == 0
    assert not stored.exists() and not any((home / "models").iterdir())


@pytest.mark.parametrize("location, why", [("../secret.bin", "leaves the model's directory"),
                                           ("/etc/secret.bin", "absolute path"),
                                           ("gone.data", "does not exist next to the model")])
def test_external_data_refusals_write_nothing(tmp_path: Path, location: str, why: str) -> None:
    home, src = tmp_path / "home", external_model(tmp_path / "src")
    (tmp_path / "secret.bin").write_bytes((tmp_path / "src" / "cnn.onnx.data").read_bytes())
    relocated(src, location)
    r = cli(home, "models", "add", str(src))
    assert r.exit_code == 1 and why in r.output and location in r.output and "Traceback" not in r.output
    assert json.loads(cli(home, "models", "list", "--json").stdout) == []
    assert not (home / "models").exists() or not any((home / "models").iterdir())


def test_input_shapes_layout_and_notes_through_the_cli(tmp_path: Path) -> None:
    pytest.importorskip("skl2onnx")
    home, path = tmp_path / "home", tmp_path / "mlp.onnx"
    path.write_bytes(E.skl2onnx_digits_mlp()[0].SerializeToString())
    r = cli(home, "models", "add", str(path))  # skl2onnx writes batch None: the version needs the shape
    assert r.exit_code == 1 and "--input-shape X=1x64" in r.output and "\n" not in r.output.strip()
    for bad, said in (("X=1x64x", "expected NAME=DIMxDIMx"), ("Y=1x64", "names ['Y']"),
                      ("X=1x65", "dimension 1 is 64 in the model")):
        r = cli(home, "models", "add", str(path), "--input-shape", bad)
        assert r.exit_code == 1 and said in r.output, (bad, r.output)
    r = cli(home, "models", "add", str(path), "--input-shape", "X=1x64", "--input-layout", "nhwc")
    assert r.exit_code == 1 and "no NCHW image input" in r.output and "X 1x64" in r.output
    r = cli(home, "models", "add", str(path), "--input-shape", "X=1x64", "--input-layout", "nwhc")
    assert r.exit_code == 1 and "input layout 'nwhc'" in r.output
    assert json.loads(cli(home, "models", "list", "--json").stdout) == []
    r = cli(home, "models", "add", str(path), "--name", "mlp", "--input-shape", "X=1x64")
    assert r.exit_code == 0, r.output
    assert "note:" in r.stderr and "ZipMap" in r.stderr  # the import's note, shown
    r = cli(home, "models", "inspect", "mlp", "--json")
    rep = json.loads(r.stdout)
    assert rep["input_shapes"] == {"X": [1, 64]} and any("ZipMap" in n for n in rep["notes"])
    # stored with the version, used by every build of it (export here), part of the cache key
    r = cli(home, "models", "export", "mlp", "--backend", "tflm", "--precision", "float32",
            "--out", str(tmp_path / "mlp-out"), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["input_shapes"] == {"X": [1, 64]}
    store = Store(f"sqlite:///{home / 'tinymlaas.db'}")
    try:
        row = store.read_sync(lambda c: c.execute(select(MODELS)).one())
    finally:
        store.close()
    assert (row.input_shapes, row.input_layout, row.external_files) == ({"X": [1, 64]}, "nchw", None)


def test_the_cache_key_covers_the_import() -> None:
    from tinymlaas.registry import ModelEntry

    base = ModelEntry("m", "1", "ab" * 32, "onnx", 1, Path("m.onnx"), None, 0.0)
    variants = [base, replace(base, options=ImportOptions.make(input_layout="nhwc")),
                replace(base, options=ImportOptions.make({"x": (1, 3)})),
                replace(base, external=(("m.data", "cd" * 32),)), replace(base, notes=("not part of it",))]
    keys = [cache_key(e, "tflm", "int8", ()) for e in variants]
    assert len(set(keys)) == 4 and keys[-1] == keys[0]


async def test_external_data_and_options_through_the_api(tmp_path: Path) -> None:
    home, db = tmp_path / "home", f"sqlite:///{tmp_path / 'api.db'}"
    src = external_model(tmp_path / "src")
    data = (tmp_path / "src" / "cnn.onnx.data").read_bytes()
    running = await runtime.start(("127.0.0.1", 0), ("127.0.0.1", 0), db, home, read_capabilities=False)
    try:
        # the CLI uploads the side files it finds next to the model, named by their location
        r = await asyncio.to_thread(cli, home, "models", "add", str(src), "--name", "cnn", "--json")
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["external_files"] == ["cnn.onnx.data"]
        entry = running.deployer.registry.get("cnn")
        assert entry.side_files()["cnn.onnx.data"].read_bytes() == data
        async with httpx.AsyncClient(base_url=running.api_url,
                                     headers={"Authorization": f"Bearer {running.token}"}) as http:
            model = src.read_bytes()

            async def post(files: list, form: dict | None = None) -> httpx.Response:  # type: ignore[type-arg]
                return await http.post("/models", files=files, data=form or {"name": "refused"})

            resp = await post([("model", ("cnn.onnx", model))])
            assert resp.status_code == 400 and "cnn.onnx.data" in resp.json()["error"] and "not given" in \
                resp.json()["error"]
            resp = await post([("model", ("cnn.onnx", model)), ("extra", ("cnn.onnx.data", data)),
                               ("extra", ("other.bin", b"x"))])
            assert resp.status_code == 400 and "'other.bin' is not one the model names" in resp.json()["error"]
            crafted = tmp_path / "crafted" / "cnn.onnx"
            external_model(crafted.parent)
            relocated(crafted, "../cnn.onnx.data")
            resp = await post([("model", ("cnn.onnx", crafted.read_bytes())), ("extra", ("cnn.onnx.data", data))])
            assert resp.status_code == 400 and "leaves the model's directory" in resp.json()["error"]
            resp = await post([("model", ("cnn.onnx", model)), ("extra", ("cnn.onnx.data", data))],
                              {"name": "refused", "input_layout": "sideways"})
            assert resp.status_code == 400 and "input layout 'sideways'" in resp.json()["error"]
            resp = await post([("model", ("cnn.onnx", model)), ("extra", ("cnn.onnx.data", data))],
                              {"name": "refused", "input_shape": ["x=1x1x12"]})
            assert resp.status_code == 400 and "rank 4" in resp.json()["error"]
            resp = await post([("model", ("cnn.onnx", model)), ("extra", ("cnn.onnx.data", data))],
                              {"name": "nhwc", "input_layout": "nhwc", "input_shape": ["x=1x1x12x12"]})
            assert resp.status_code == 200, resp.text
            assert resp.json()["input_layout"] == "nhwc" and resp.json()["input_shapes"] == {"x": [1, 1, 12, 12]}
        assert sorted(e.name for e in running.deployer.registry.list()) == ["cnn", "nhwc"]
        # inspect through the server builds in its compile cache, which deploy uses; again: no build
        cache = running.deployer.cache
        r = await asyncio.to_thread(cli, home, "models", "inspect", "cnn", "--profile", "nrf5340", "--json")
        assert r.exit_code == 0, r.output
        first = json.loads(r.stdout)["fits"]
        compiled = cache.compiles
        assert compiled == 4  # tflm and wasm, float32 and int8; c is built for the board, not cached
        r = await asyncio.to_thread(cli, home, "models", "inspect", "cnn", "--profile", "nrf5340", "--json")
        assert json.loads(r.stdout)["fits"] == first and cache.compiles == compiled
        keys = {f["artifact_key"] for f in first if f["backend"] in ("tflm", "wasm")}
        assert all([await cache.lookup(k) for k in keys])
        r = await asyncio.to_thread(cli, home, "models", "export", "cnn", "--backend", "tflm", "--precision",
                                    "float32", "--out", str(tmp_path / "out"))
        assert r.exit_code == 0, r.output
        check_export_runs(tmp_path / "out", "cnn")
        # the NHWC version's TFLM input is channels-last
        r = await asyncio.to_thread(cli, home, "models", "export", "nhwc", "--backend", "tflm", "--precision",
                                    "float32", "--out", str(tmp_path / "nhwc"), "--json")
        assert [t["shape"] for t in json.loads(r.stdout)["tensors"] if t["role"] == "input"] == [[1, 12, 12, 1]]
    finally:
        await running.stop()
