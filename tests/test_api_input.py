"""Bad input to the admin API is a 4xx, never a 500: schemathesis over the OpenAPI schema, plus
the inputs that did answer 500 before (an infinite timeout, NaN, an id past 64 bits, a
non-UTF-8 object upload), the object-import rules and a model whose shapes are absurd.

The server runs on an event loop in a background thread (schemathesis calls are synchronous);
schemathesis generates requests for every operation from the schema, positive and negative,
with the server's own admin token, and each answer must not be 500 (502/504 are device
failures, which these routes can legitimately report).
"""

from __future__ import annotations

import json
from pathlib import Path as FsPath
from typing import Any, Iterator

import httpx
import onnx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from onnx import TensorProto, helper
from sqlalchemy import func, select
from typer.testing import CliRunner

from tinymlaas import runtime
from tinymlaas.cli.main import app as cli_app
from tinymlaas.registry import ModelRegistry, RegistryError
from tinymlaas.server.objects import PROTECTED
from tinymlaas.store import Store
from tinymlaas.store.tables import OBJECT_DEFINITIONS
from tests.conftest import BackgroundLoop

EXAMPLES = 25  # per operation and generation mode: about 2,000 requests over the schema
CALLS: dict[str, int] = {}


class LiveApi(BackgroundLoop):
    def __init__(self, tmp: FsPath) -> None:
        super().__init__()
        self.running = self.run(runtime.start(("127.0.0.1", 0), ("127.0.0.1", 0), f"sqlite:///{tmp / 'db'}",
                                              tmp / "home", read_capabilities=False), 120)
        self.url, self.token = self.running.api_url, self.running.token
        self.auth = {"Authorization": f"Bearer {self.token}"}

    def close(self) -> None:
        self.run(self.running.stop(), 60)
        self.stop()


# A device profile is uploaded as TOML text (POST /profiles): sent as the string schemathesis made.
schemathesis.serializer.alias("application/toml", "text/plain")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    live = LiveApi(tmp_path_factory.mktemp("api-input"))
    yield live
    live.close()


@pytest.fixture(scope="module")
def api_schema(api: LiveApi) -> Any:
    spec = httpx.get(api.url + "/openapi.json").json()
    return schemathesis.openapi.from_dict(spec)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_input_makes_a_500(case: Any, api: LiveApi) -> None:
    if case.method == "DELETE" and case.path == "/tokens/{token_id}" and case.path_parameters.get("token_id") == 1:
        case.path_parameters["token_id"] = 2  # keep the fuzzer's own token (it is refused anyway: 409)
    response = case.call(base_url=api.url, headers=api.auth, timeout=60)
    CALLS[case.method] = CALLS.get(case.method, 0) + 1
    assert response.status_code != 500, (case.method, case.formatted_path, case.body, response.text[:300])


def test_the_schema_run_covered_every_operation_many_times(api: LiveApi) -> None:
    total = sum(CALLS.values())
    print(f"schemathesis: {total} requests ({CALLS})")
    assert total >= 1000 and set(CALLS) >= {"GET", "POST", "DELETE"}


def post(api: LiveApi, route: str, **kw: Any) -> httpx.Response:
    headers = {**api.auth, **kw.pop("headers", {})}
    return httpx.post(api.url + route, headers=headers, timeout=30, **kw)


def test_what_answered_500_before_is_refused(api: LiveApi) -> None:
    r = post(api, "/devices/x/read", content=b'{"path": "/3/0", "timeout": 1e999}',
             headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "1e999" in r.text
    for constant in (b"NaN", b"Infinity", b"-Infinity"):
        body = b'{"path": "/3/0/9", "attributes": {"gt": ' + constant + b"}}"
        r = post(api, "/devices/x/write-attributes", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and "not a JSON number" in r.text, r.text
    for route in ("/campaigns/18446744073709551617", "/deployments/18446744073709551617"):
        r = httpx.get(api.url + route, headers=api.auth)
        assert r.status_code == 422, (route, r.text)
    r = post(api, "/campaigns/18446744073709551617/cancel")
    assert r.status_code == 422
    r = httpx.get(api.url + "/events", params={"limit": 10**30}, headers=api.auth)
    assert r.status_code == 422
    r = post(api, "/objects", content=b"<LWM2M>\xff\xfe</LWM2M>", headers={"Content-Type": "application/xml"})
    assert r.status_code == 400 and "not UTF-8 (byte 7" in r.json()["error"]
    r = post(api, "/devices/x/observe", json={"path": "/3/0", "duration": 1e300})
    assert r.status_code == 422 and "duration" in r.text


VENDOR = """<LWM2M><Object ObjectType="MODefinition"><Name>Thing {n}</Name><ObjectID>{n}</ObjectID>
<ObjectURN>urn:oma:lwm2m:x:{n}</ObjectURN><LWM2MVersion>1.1</LWM2MVersion><ObjectVersion>1.0</ObjectVersion>
<MultipleInstances>Single</MultipleInstances><Mandatory>Optional</Mandatory><Resources>
<Item ID="0"><Name>Value</Name><Operations>RW</Operations><MultipleInstances>Single</MultipleInstances>
<Mandatory>Mandatory</Mandatory><Type>Integer</Type><RangeEnumeration></RangeEnumeration><Units></Units>
<Description>{pad}</Description></Item></Resources></Object></LWM2M>"""


def ddf(ids: range | list[int], pad: int = 100) -> str:
    objects = [VENDOR.format(n=n, pad="x" * pad)[len("<LWM2M>"):-len("</LWM2M>")] for n in ids]
    return "<LWM2M>" + "".join(objects) + "</LWM2M>"


def object_rows(api: LiveApi) -> list[Any]:
    return api.running.server.store.read_sync(lambda c: list(c.execute(select(OBJECT_DEFINITIONS))))


def test_object_import_stores_each_object_once_and_protects_built_ins(api: LiveApi) -> None:
    text = ddf(range(42000, 42250), pad=2000)  # 250 objects, ~0.6 MB
    for _ in range(3):  # importing again replaces, it does not add
        r = post(api, "/objects", content=text.encode(), headers={"Content-Type": "application/xml"})
        assert r.status_code == 200 and len(r.json()["imported"]) == 250
    rows = [row for row in object_rows(api) if 42000 <= row.object_id < 42250]
    assert len(rows) == 250
    stored = sum(len(row.xml) for row in rows)
    assert stored < 1.1 * len(text)  # each object's own element: about the file once, not 250 times
    assert all(row.xml.count("<ObjectID>") == 1 for row in rows)

    for object_id in sorted(PROTECTED):
        r = post(api, "/objects", content=ddf([object_id]).encode(), headers={"Content-Type": "application/xml"})
        assert r.status_code == 409 and f"built-in object {object_id}" in r.json()["error"], r.text
    assert len(api.running.server.objects.get(3).resources) > 1  # object 3 is still the OMA one
    r = post(api, "/objects", params={"force": "true"}, content=ddf([7]).encode(),
             headers={"Content-Type": "application/xml"})
    assert r.status_code == 200 and api.running.server.objects.get(7).name == "Thing 7"

    big = ddf(range(43000, 43000 + 600), pad=2000).encode()
    assert len(big) > api.running.server.limits.object_upload_max_bytes
    r = post(api, "/objects", content=big, headers={"Content-Type": "application/xml"})
    assert r.status_code == 413
    assert not [row for row in object_rows(api) if row.object_id >= 43000]


async def test_start_up_reads_each_imported_object_once(tmp_path: FsPath) -> None:
    """However many imports were made, start-up loads one small element per object id."""
    from lwm2m.model import default_registry
    from tinymlaas.server import objects

    store = Store(f"sqlite:///{tmp_path / 'o.db'}")
    store.start()
    try:
        for _ in range(20):
            await objects.import_ddf(store, default_registry(), ddf(range(44000, 44100), pad=500))
        # a row as stored before this change: the whole file for one object
        whole = ddf([44200, 44201])
        store.write_sync(lambda c: c.execute(OBJECT_DEFINITIONS.insert().values(
            object_id=44200, name="old", xml=whole, imported_at=0.0)))
        registry = default_registry()
        assert await objects.load(store, registry) == 101
        assert registry.get(44200) is not None and registry.get(44201) is None  # only the row's own object
        count = store.read_sync(lambda c: c.execute(select(func.count()).select_from(OBJECT_DEFINITIONS)).scalar())
        assert count == 101
        row = store.read_sync(lambda c: c.execute(select(OBJECT_DEFINITIONS).where(
            OBJECT_DEFINITIONS.c.object_id == 44200)).first())
        assert row.xml.count("<ObjectID>") == 1  # rewritten as its own element on that start
    finally:
        store.close()


def absurd_model(path: FsPath) -> FsPath:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 65536, 65536])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 65536, 65536])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "absurd", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, path)
    return path


def test_a_model_whose_shapes_are_absurd_is_refused_at_add(tmp_path: FsPath) -> None:
    file = absurd_model(tmp_path / "absurd.onnx")
    store = Store(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        with pytest.raises(RegistryError, match=r"tensor 'x' of shape \(1, 65536, 65536\) \(float32\) declares "
                                                r"16.0 GiB \(17,179,869,184 bytes\): the limit is 256.0 MiB"):
            ModelRegistry(tmp_path, store).add(file, "absurd")
        assert ModelRegistry(tmp_path, store).list() == [] and not (tmp_path / "models").exists()
    finally:
        store.close()
    r = CliRunner().invoke(cli_app, ["models", "add", str(file), "--name", "absurd",
                                     "--db", f"sqlite:///{tmp_path / 'c.db'}"],
                           env={"TINYMLAAS_HOME": str(tmp_path / "home")})
    assert r.exit_code == 1 and "16.0 GiB" in r.output and "Traceback" not in r.output
    assert r.output.strip().count("\n") == 0, r.output
    json.dumps(r.output)
