"""Names: refused at the door when they break their rule, escaped in every URL, never a path.

A device registering as ``x/../victim``, ``%76ictim`` or ``victim?x=1`` gets 4.00 naming the
rule (an independent aiocoap peer, and nothing written); a model named ``../../x`` is
refused and nothing lands outside the data directory; the CLI percent-encodes every name it
puts into an admin-API route (checked at every call site), so a name that is a path cannot
address another device; terminal output loses control characters, whatever a device sends.
"""

from __future__ import annotations

import ast
import io
import json
import time
from pathlib import Path

import pytest
from aiocoap import Code
from sqlalchemy import insert, select
from typer.testing import CliRunner

from tinymlaas import names
from tinymlaas.bundled import MNIST
from tinymlaas.cli import client
from tinymlaas.cli.main import app
from tinymlaas.cli.terminal import SafeConsole
from tinymlaas.registry import ModelRegistry
from tinymlaas.store import Store
from tinymlaas.store.tables import DEVICES, EVENTS, MODELS, REGISTRATIONS
from tests.conftest import Peer, api_cli as cli

CLI = Path(__file__).resolve().parents[1] / "tinymlaas" / "cli"


@pytest.mark.parametrize("ep,rule", [
    ("x/../victim", "A-Z a-z 0-9 - . _ ~ :"),
    ("%76ictim", "RFC 3986 unreserved"),
    ("victim?x=1", "not '.' or '..'"),
    ("..", "not '.' or '..'"),
    ("a b", "1-255 characters"),
    ("\x1b[31mred", "1-255 characters"),
    ("nul\x00", "1-255 characters"),
    ("é", "1-255 characters"),
    ("x" * 256, "1-255 characters"),
])
async def test_endpoint_names_outside_the_rule_are_refused_at_registration(server, peer: Peer, ep, rule):
    resp = await peer.register(ep, b"</3/0>")
    assert resp.code == Code.BAD_REQUEST
    assert b"invalid endpoint name" in resp.payload and rule.encode() in resp.payload
    assert server.store.read_sync(lambda c: list(c.execute(select(DEVICES)))) == []
    assert server.store.read_sync(lambda c: list(c.execute(select(EVENTS)))) == []


@pytest.mark.parametrize("ep", ["victim", "urn:imei:490154203237518", "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
                                "node_17.eu-west~2", "x" * 255])
async def test_endpoint_names_in_the_rule_register(server, peer: Peer, ep):
    assert (await peer.register(ep, b"</3/0>")).code == Code.CREATED
    assert ep in server.registrations.by_endpoint


def test_the_rules_table():
    assert names.valid("model", "kws_ref-model.v2") and not names.valid("model", "../../x")
    assert not names.valid("model", "x.") and not names.valid("model", ".hidden") and not names.valid("model", "")
    assert names.valid("version", "3") and names.valid("version", "1.0.0+build7") and not names.valid("version", "1/2")
    assert names.valid("group", "eu-field") and not names.valid("group", "a/b")
    assert names.valid("profile", "nrf52840") and not names.valid("profile", "NRF")
    assert names.valid("campaign", "kws:3 to eu-field") and not names.valid("campaign", "x\x1b[2J")
    assert not names.valid("campaign", "bidi\u202eevil")
    with pytest.raises(ValueError, match=r"invalid model name '\.\./\.\./x': 1-64 characters"):
        names.check("model", "../../x")


def test_a_model_named_dot_dot_is_refused_and_nothing_leaves_the_data_directory(tmp_path: Path):
    home = tmp_path / "a" / "b" / "home"
    r = CliRunner().invoke(app, ["models", "add", str(MNIST), "--name", "../../x"], env={"TINYMLAAS_HOME": str(home)})
    assert r.exit_code == 1 and "invalid model name '../../x'" in r.output and r.output.count("\n") == 1
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.parent for p in files} == {home} and all(p.name.startswith("tinymlaas.db") for p in files)
    store = Store(f"sqlite:///{home / 'tinymlaas.db'}")
    try:
        assert ModelRegistry(home, store).list() == []
        with pytest.raises(ValueError, match="invalid version name"):
            ModelRegistry(home, store).add(MNIST, "mnist", version="../1")
    finally:
        store.close()


def test_export_of_an_old_row_with_a_path_for_a_name_stays_under_its_directory(tmp_path: Path, monkeypatch):
    """A database written before names were checked may hold one: export refuses to leave cwd."""
    home, work = tmp_path / "home", tmp_path / "work" / "here"
    work.mkdir(parents=True)
    r = CliRunner().invoke(app, ["models", "add", str(MNIST), "--name", "mnist", "--json"],
                           env={"TINYMLAAS_HOME": str(home)})
    assert r.exit_code == 0, r.output
    sha = json.loads(r.stdout)["sha256"]
    store = Store(f"sqlite:///{home / 'tinymlaas.db'}")
    store.write_sync(lambda c: c.execute(insert(MODELS).values(name="../../x", version="1", sha256=sha, format="onnx",
                                                               size=1, added_at=time.time())))
    store.close()
    monkeypatch.chdir(work)
    r = CliRunner().invoke(app, ["models", "export", "../../x:1", "--backend", "tflm"],
                           env={"TINYMLAAS_HOME": str(home)})
    assert r.exit_code == 1 and "is not a plain file name" in r.output, r.output
    assert sorted(p.name for p in (tmp_path / "work").rglob("*")) == ["here"]
    assert not (tmp_path / "x-1-tflm-int8").exists()


def test_child_paths():
    base = Path("/srv/out")
    assert names.child(base, "kws.tflite") == base / "kws.tflite"
    for bad in ("..", "../x", "a/b", "", "x\x00"):
        with pytest.raises(ValueError):
            names.child(base, bad)


def test_api_paths_escape_every_segment():
    assert client.api_path("devices", "x/../victim", "read") == "/devices/x%2F..%2Fvictim/read"
    assert client.api_path("devices", "%76ictim") == "/devices/%2576ictim"
    assert client.api_path("devices", "victim?x=1") == "/devices/victim%3Fx%3D1"
    assert client.api_path("campaigns", 7, "pause") == "/campaigns/7/pause"


def test_every_cli_call_site_builds_its_route_with_api_path():
    """No route is an f-string or a concatenation: it is a constant or api_path(...)."""
    offenders = []
    for file in sorted(CLI.glob("*.py")):
        for node in ast.walk(ast.parse(file.read_text())):
            if not isinstance(node, ast.Call):
                continue
            fn = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if fn not in ("call", "stream") or not node.args:
                continue
            route = node.args[1] if fn == "call" and len(node.args) > 1 else node.args[0]
            ok = isinstance(route, ast.Constant) or (
                isinstance(route, ast.Call)
                and getattr(route.func, "attr", getattr(route.func, "id", "")) == "api_path")
            if not ok:
                offenders.append(f"{file.name}:{node.lineno}")
    assert offenders == []


def test_terminal_output_loses_control_characters():
    buf = io.StringIO()
    con = SafeConsole(file=buf, force_terminal=True, color_system=None, width=200)
    con.print("value: \x1b]0;pwned\x07\x1b[2J\x9b31mred\u202eevil\rback", highlight=False, markup=False)
    text = buf.getvalue()
    assert "\x1b]0" not in text and "\x1b[2J" not in text and "\x9b" not in text and "\u202e" not in text
    assert "\r" not in text and "]0;pwned" in text and "red" in text




async def test_a_name_that_is_a_path_cannot_reach_another_device(live):
    running, peer = live
    assert (await peer.register("victim", b"</3/0>", ("lwm2m=1.1",))).code == Code.CREATED
    peer.answer(Code.GET, "/3/0/0", Code.CONTENT, b'[{"bn":"/3/0/0","vs":"victim data"}]', 110)
    for name in ("x/../victim", "./victim", "x%2F..%2Fvictim"):
        r = await cli(running, "devices", "show", name)
        assert r.exit_code == 1 and "victim data" not in r.output and "registered as" not in r.output, (name, r.output)
        r = await cli(running, "read", name, "/3/0/0")
        assert r.exit_code == 1 and "victim data" not in r.output, (name, r.output)
    assert [s.path for s in peer.seen] == []  # the victim was never asked
    r = await cli(running, "read", "victim", "/3/0/0")
    assert r.exit_code == 0 and "victim data" in r.output


async def test_what_a_device_sends_reaches_the_terminal_without_escapes(live):
    running, peer = live
    assert (await peer.register("dev", b"</3/0>", ("lwm2m=1.1",))).code == Code.CREATED
    evil = "ACME\x1b[2J\x1b]0;owned\x07"
    peer.answer(Code.GET, "/3/0/0", Code.CONTENT, json.dumps([{"bn": "/3/0/0", "vs": evil}]).encode(), 110)
    r = await cli(running, "read", "dev", "/3/0/0")
    assert r.exit_code == 0 and "ACME" in r.stdout and "\x1b" not in r.stdout and "\x07" not in r.stdout
    r = await cli(running, "read", "dev", "/3/0/0", "--json")
    assert json.loads(r.stdout) == {"/3/0/0": evil} and "\x1b" not in r.stdout  # JSON escapes it
    endpoints = running.server.store.read_sync(lambda c: [row.endpoint for row in c.execute(select(REGISTRATIONS))])
    assert endpoints == ["dev"]
