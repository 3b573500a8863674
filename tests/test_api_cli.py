"""The admin API and the CLI against a live server (CoAP + API in this event loop).

The CLI runs in a worker thread (typer's CliRunner) and reaches the API over loopback HTTP,
as an operator's shell would.
"""

from __future__ import annotations

import json
from pathlib import Path as FsPath

import aiocoap
import httpx
import pytest
from aiocoap import Code

from tests.conftest import api_cli as cli

VENDOR_XML = """<?xml version="1.0" encoding="utf-8"?>
<LWM2M><Object ObjectType="MODefinition"><Name>Vendor Thing</Name><Description1>test</Description1>
<ObjectID>40001</ObjectID><ObjectURN>urn:oma:lwm2m:x:40001</ObjectURN><LWM2MVersion>1.1</LWM2MVersion>
<ObjectVersion>1.0</ObjectVersion><MultipleInstances>Single</MultipleInstances><Mandatory>Optional</Mandatory>
<Resources><Item ID="0"><Name>Setpoint</Name><Operations>RW</Operations><MultipleInstances>Single</MultipleInstances>
<Mandatory>Mandatory</Mandatory><Type>Float</Type><RangeEnumeration>0..100</RangeEnumeration><Units>Cel</Units>
<Description>x</Description></Item></Resources><Description2></Description2></Object></LWM2M>
"""


async def test_api_needs_token_and_documents_itself(live):
    running, _ = live
    async with httpx.AsyncClient(base_url=running.api_url) as http:
        assert (await http.get("/health")).json()["status"] == "ok"
        r = await http.get("/devices")
        assert r.status_code == 401 and "token" in r.json()["error"]
        r = await http.get("/devices", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        spec = (await http.get("/openapi.json")).json()
        assert "/devices/{endpoint}/read" in spec["paths"] and "/objects" in spec["paths"]


async def test_cli_read_write_list(live):
    running, peer = live
    assert (await peer.register("cli-dev", b"</1/0>,</3/0>", ("lwm2m=1.1",))).code == Code.CREATED
    r = await cli(running, "devices", "list", "--json")
    assert r.exit_code == 0, r.output
    assert [d["endpoint"] for d in json.loads(r.stdout)] == ["cli-dev"]

    peer.answer(Code.GET, "/3/0/0", Code.CONTENT, json.dumps([{"bn": "/3/0/0", "vs": "ACME"}]).encode(), 110)
    r = await cli(running, "read", "cli-dev", "/3/0/0", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"/3/0/0": "ACME"}

    peer.answer(Code.PUT, "/1/0/1", Code.CHANGED)
    r = await cli(running, "write", "cli-dev", "/1/0/1", "300", "--format", "text")
    assert r.exit_code == 0, r.output
    assert peer.seen[-1].payload == b"300" and peer.seen[-1].content_format == 0

    r = await cli(running, "devices", "show", "cli-dev")
    assert r.exit_code == 0 and "registered as rd/" in r.stdout


async def test_cli_errors_are_one_line(live):
    running, peer = live
    r = await cli(running, "read", "nobody", "/3/0")
    assert r.exit_code == 1
    assert r.output.strip().count("\n") == 0 and "not registered" in r.output and "4.04" in r.output
    assert (await peer.register("d", b"</3/0>", ("lwm2m=1.1",))).code == Code.CREATED
    r = await cli(running, "write", "d", "/1/0/1", "soon")
    assert r.exit_code == 1 and "/1/0/1" in r.output and "Traceback" not in r.output
    r = await cli(running, "read", "d", "/3/x")
    assert r.exit_code == 1 and "invalid LwM2M path" in r.output
    r = await cli(running, "read", "d", "/3/0/0", "--format", "yaml")
    assert r.exit_code == 1 and "unknown content format" in r.output


async def test_cli_objects_import_and_typed_write(live, tmp_path: FsPath):
    running, peer = live
    xml = tmp_path / "40001.xml"
    xml.write_text(VENDOR_XML)
    r = await cli(running, "objects", "import", str(xml))
    assert r.exit_code == 0, r.output
    r = await cli(running, "objects", "list", "--json")
    assert 40001 in [o["id"] for o in json.loads(r.stdout)]
    assert (await peer.register("v", b"</40001/0>", ("lwm2m=1.1",))).code == Code.CREATED
    peer.answer(Code.PUT, "/40001/0/0", Code.CHANGED)
    r = await cli(running, "write", "v", "/40001/0/0", "21.5")
    assert r.exit_code == 0, r.output
    assert json.loads(peer.seen[-1].payload) == [{"bn": "/40001/0/0", "v": 21.5}]
    r = await cli(running, "write", "v", "/40001/0/0", "150")
    assert r.exit_code == 1 and "0..100" in r.output
    bad = tmp_path / "bad.xml"
    bad.write_text("<LWM2M><Object><Name>x</Name></Object></LWM2M>")
    r = await cli(running, "objects", "import", str(bad))
    assert r.exit_code == 1 and "ObjectID" in r.output


async def test_cli_exec_discover_observe(live):
    running, peer = live
    assert (await peer.register("o", b"</3/0>", ("lwm2m=1.1",))).code == Code.CREATED
    peer.answer(Code.POST, "/3/0/4", Code.CHANGED)
    r = await cli(running, "exec", "o", "/3/0/4")
    assert r.exit_code == 0, r.output
    peer.answer(Code.GET, "/3/0", Code.CONTENT, b"</3/0>,</3/0/0>,</3/0/4>", 40)
    r = await cli(running, "discover", "o", "/3/0", "--json")
    assert r.exit_code == 0 and "</3/0/4>" in r.stdout
    peer.answer(Code.GET, "/3/0/9", Code.CONTENT, json.dumps([{"bn": "/3/0/9", "v": 42}]).encode(), 110)
    r = await cli(running, "observe", "o", "/3/0/9", "--duration", "0.5", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.splitlines()[0])["content"] == {"/3/0/9": 42}


def test_non_json_error_is_still_one_line():
    """A proxy or a crashed API may answer with plain text: the message still comes through."""
    from tinymlaas.cli.client import CliError, _raise_for

    with pytest.raises(CliError, match="Bad Gateway"):
        _raise_for(httpx.Response(502, text="Bad Gateway", request=httpx.Request("GET", "http://x")))


async def test_cli_attributes_create_delete_events_cancel(live):
    running, peer = live
    assert (await peer.register("m", b"</1/0>,</3/0>", ("lwm2m=1.0",))).code == Code.CREATED
    peer.answer(Code.PUT, "/3/0/9", Code.CHANGED)
    r = await cli(running, "attributes", "m", "/3/0/9", "pmin=10", "pmax=60", "st")
    assert r.exit_code == 0, r.output
    assert peer.seen[-1].query == ("pmin=10", "pmax=60", "st")

    def created(request):
        return aiocoap.Message(code=Code.CREATED, location_path=("1", "7"))
    peer.responses[(Code.POST, "/1")] = created
    r = await cli(running, "create", "m", "/1", "--values", '{"/1/7/0": 7, "/1/7/1": 60}')
    assert r.exit_code == 0 and "/1/7" in r.stdout
    assert peer.seen[-1].content_format == 11542  # a 1.0 device gets TLV
    peer.answer(Code.DELETE, "/1/7", Code.DELETED)
    r = await cli(running, "delete", "m", "/1/7")
    assert r.exit_code == 0 and peer.seen[-1].code == Code.DELETE
    r = await cli(running, "events", "--endpoint", "m", "--json")
    assert [e["kind"] for e in json.loads(r.stdout)] == ["registered"]
    r = await cli(running, "observe", "m", "/3/0/9", "--cancel")
    assert r.exit_code == 1 and "no observation" in r.output  # nothing to cancel: a clear 4.04


async def test_device_tags_select_a_group(live):
    running, peer = live
    for ep in ("tag-a", "tag-b"):
        assert (await peer.register(ep, b"</1/0>,</3/0>", ("lwm2m=1.1",))).code == Code.CREATED
    r = await cli(running, "devices", "tag", "tag-a", "field", "eu")
    assert r.exit_code == 0 and "field, eu" in r.stdout, r.output
    r = await cli(running, "devices", "tag", "tag-a", "--remove", "eu")
    assert r.exit_code == 0 and "tags field" in r.stdout
    r = await cli(running, "devices", "tag", "nobody", "x")
    assert r.exit_code == 1 and "no device 'nobody'" in r.stderr
    r = await cli(running, "devices", "tag", "tag-b", "a,b")
    assert r.exit_code == 1 and "without commas" in r.stderr
    r = await cli(running, "groups", "add", "field-devices", "--tag", "field")
    assert r.exit_code == 0, r.output
    r = await cli(running, "groups", "show", "field-devices", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["members"] == ["tag-a"]
