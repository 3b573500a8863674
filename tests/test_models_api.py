"""One source of truth for models: with a server running, ``models add|list|rm|inspect`` go to its
admin API (the file is uploaded) and land in the database that server uses, even when it was
started with its own ``--db``; with no server, the CLI opens the database the server's
``api.json`` names. Checked in the server's database and registry, and through the CLI."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path as FsPath

import httpx
from sqlalchemy import select
from typer.testing import CliRunner

import tinymlaas.bundled
from tinymlaas import runtime
from tinymlaas.cli.main import app
from tinymlaas.store import Store
from tinymlaas.store.tables import MODELS


async def cli(home: FsPath, *args: str):
    """The CLI as an operator runs it: only TINYMLAAS_HOME, so it finds the server by api.json."""
    env = {"TINYMLAAS_HOME": str(home), "TINYMLAAS_API": None, "TINYMLAAS_TOKEN": None, "TINYMLAAS_DB": None}
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)


def models_in(db: str) -> list[tuple[str, str]]:
    store = Store(db)
    try:
        return [(r.name, r.version) for r in store.read_sync(lambda c: list(c.execute(select(MODELS))))]
    finally:
        store.close()


async def test_models_go_through_the_running_server(tmp_path: FsPath):
    home, db = tmp_path / "home", f"sqlite:///{tmp_path / 'elsewhere.db'}"
    running = await runtime.start(("127.0.0.1", 0), ("127.0.0.1", 0), db, home, read_capabilities=False)
    try:
        assert json.loads((home / "api.json").read_text())["db"] == db
        r = await cli(home, "models", "add", str(tinymlaas.bundled.MNIST), "--name", "digits", "--json")
        assert r.exit_code == 0, r.output
        added = json.loads(r.stdout)
        assert (added["name"], added["version"], added["format"]) == ("digits", "1", "onnx")
        assert models_in(db) == [("digits", "1")]  # the server's own database, not the default one
        assert not (home / "tinymlaas.db").exists()
        entry = running.deployer.registry.get("digits")
        assert entry.path.read_bytes() == tinymlaas.bundled.MNIST.read_bytes()

        r = await cli(home, "models", "list", "--json")
        assert [(m["name"], m["version"]) for m in json.loads(r.stdout)] == [("digits", "1")]
        r = await cli(home, "models", "inspect", "digits", "--json")
        assert r.exit_code == 0, r.output
        rep = json.loads(r.stdout)
        assert rep["model"] == "digits:1" and rep["macs"] > 0 and "CONV" in " ".join(rep["ops"]).upper()

        # an extra file the model does not name (mnist has no external data) is refused by name
        async with httpx.AsyncClient(base_url=running.api_url,
                                     headers={"Authorization": f"Bearer {running.token}"}) as http:
            files = [("model", ("m.onnx", tinymlaas.bundled.MNIST.read_bytes())), ("extra", ("m.onnx.data", b"x"))]
            resp = await http.post("/models", files=files, data={"name": "withdata"})
            assert resp.status_code == 400 and "'m.onnx.data' is not one the model names" in resp.json()["error"]
        assert models_in(db) == [("digits", "1")]

        r = await cli(home, "models", "rm", "digits:1")
        assert r.exit_code == 0 and "removed digits:1" in r.stdout, r.output
        assert models_in(db) == [] and not entry.path.exists()
        r = await cli(home, "models", "rm", "digits:1")
        assert r.exit_code == 1 and "no model digits:1" in r.output
        r = await cli(home, "models", "add", str(tinymlaas.bundled.MNIST), "--name", "digits")
        assert r.exit_code == 0
    finally:
        await running.stop()

    # no server now: the CLI works on the database that server used (from its api.json)
    r = await cli(home, "models", "list", "--json")
    assert r.exit_code == 0, r.output
    assert [m["name"] for m in json.loads(r.stdout)] == ["digits"]
    r = await cli(home, "models", "add", str(tinymlaas.bundled.MNIST), "--name", "offline")
    assert r.exit_code == 0, r.output
    assert sorted(models_in(db)) == [("digits", "1"), ("offline", "1")]

    again = await runtime.start(("127.0.0.1", 0), ("127.0.0.1", 0), db, home, read_capabilities=False)
    try:
        assert sorted(e.name for e in again.deployer.registry.list()) == ["digits", "offline"]
    finally:
        await again.stop()
