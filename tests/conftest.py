"""Shared fixtures: a server on loopback and an independent CoAP peer playing the device.

The peer is a bare aiocoap context with one catch-all resource: it records every request
the server sends (method, path, options, payload bytes) and answers from a table of canned
responses written by hand in the tests, so the server's codecs are checked against bytes
that did not come from them.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import aiocoap
import pytest
from aiocoap import Code, Message
from aiocoap.resource import PathCapable, Resource

from tinymlaas.server.server import LwM2MServer


SHARED_MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"


def pytest_sessionstart(session: pytest.Session) -> None:
    """In CI the real models must be there: tests that need them would otherwise skip quietly."""
    import os

    if os.environ.get("CI") and not SHARED_MODELS.is_dir():
        pytest.exit(f"CI run without the shared models next to the checkout ({SHARED_MODELS.name} missing)", 2)


# runs only when asked for by ``-m``: each takes many minutes (.ci/run asks for them)
ON_REQUEST = ("slow", "fuzz_million")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The thorough runs (``slow``: minutes; ``fuzz_million``: the million-input fuzz run) keep
    the default run under 15 minutes: they run only when ``-m`` names them."""
    asked = config.getoption("-m") or ""
    later = [item for item in items if any(m in item.keywords and m not in asked for m in ON_REQUEST)]
    if later:
        config.hook.pytest_deselected(items=later)
        items[:] = [item for item in items if item not in later]


@dataclass
class Seen:
    code: Code
    path: str
    accept: int | None
    content_format: int | None
    query: tuple[str, ...]
    payload: bytes
    observe: int | None


Responder = Callable[[Message], Message]


class CatchAll(Resource, PathCapable):
    def __init__(self, peer: "Peer") -> None:
        super().__init__()
        self.peer = peer

    async def render(self, request: Message) -> Message:
        path = "/" + "/".join(request.opt.uri_path)
        self.peer.seen.append(Seen(request.code, path, request.opt.accept and int(request.opt.accept),
                                   request.opt.content_format and int(request.opt.content_format),
                                   tuple(request.opt.uri_query), request.payload, request.opt.observe))
        key = (request.code, path)
        handler = self.peer.responses.get(key)
        if handler is None:
            return Message(code=Code.NOT_FOUND)
        result = handler(request)
        return await result if asyncio.iscoroutine(result) else result


@dataclass
class Peer:
    """A device made of a bare aiocoap context (it does not use tinymlaas' codecs)."""

    context: Any = None
    server: tuple[str, int] = ("127.0.0.1", 5683)
    seen: list[Seen] = field(default_factory=list)
    responses: dict[tuple[Code, str], Responder] = field(default_factory=dict)
    location: tuple[str, ...] = ()

    def answer(self, code: Code, path: str, resp_code: Code, payload: bytes = b"", cf: int | None = None) -> None:
        def handler(request: Message) -> Message:
            return Message(code=resp_code, payload=payload, content_format=cf)
        self.responses[(code, path)] = handler

    async def request(self, code: Code, path: str, query: tuple[str, ...] = (), payload: bytes = b"",
                      cf: int | None = 40) -> Message:
        msg = Message(code=code, uri=f"coap://{self.server[0]}:{self.server[1]}{path}", payload=payload)
        msg.opt.uri_query = query
        if cf is not None and payload:
            msg.opt.content_format = cf
        return await asyncio.wait_for(self.context.request(msg).response, 15)

    async def register(self, ep: str, links: bytes = b"</1/0>,</3/0>", query: tuple[str, ...] = ()) -> Message:
        resp = await self.request(Code.POST, "/rd", (f"ep={ep}",) + query, links)
        if resp.code == Code.CREATED:
            self.location = tuple(resp.opt.location_path)
        return resp

    async def update(self, query: tuple[str, ...] = (), links: bytes = b"") -> Message:
        return await self.request(Code.POST, "/" + "/".join(self.location), query, links)

    async def deregister(self) -> Message:
        return await self.request(Code.DELETE, "/" + "/".join(self.location))


async def eventually(cond: Callable[[], bool], seconds: float = 5.0) -> bool:
    """Poll ``cond`` every 50 ms for at most ``seconds``; its last value."""
    for _ in range(int(seconds / 0.05)):
        if cond():
            return True
        await asyncio.sleep(0.05)
    return cond()


class BackgroundLoop:
    """An event loop in a daemon thread: for synchronous tests (hypothesis, schemathesis, a
    CLI) that drive servers living on it. ``run`` waits for a coroutine's result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 30) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def runner():
    """One model runner (worker process pool) per test module, as a simulator process has."""
    from simulator.runtimes import ModelRunner

    r = ModelRunner()
    yield r
    r.close()


DATABASES = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``db_url`` is SQLite, and PostgreSQL too in modules marked ``both_databases`` (the store,
    server and deploy modules): each of their tests runs once per database."""
    if "db_url" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_databases"):
        metafunc.parametrize("db_url", DATABASES, indirect=True)


@pytest.fixture(scope="session")
def postgres() -> Any:
    """The tests' PostgreSQL (``tests/pg_cluster.py``): started once, stopped at the end."""
    import os

    from tests.pg_cluster import Cluster

    cluster = Cluster.from_env() or Cluster.local()
    if cluster is None:
        if os.environ.get("CI"):
            pytest.fail("CI without PostgreSQL: .ci/setup installs Debian's postgresql package")
        pytest.skip("no PostgreSQL server binaries here (apt install postgresql)")
    yield cluster
    cluster.stop()


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh empty database for one test: a SQLite file (unless parametrised), or a PostgreSQL one."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return f"sqlite:///{tmp_path / 'tinymlaas.db'}"
    return str(request.getfixturevalue("postgres").database())


@pytest.fixture
async def server(db_url: str) -> AsyncIterator[LwM2MServer]:
    srv = LwM2MServer(db_url, read_capabilities=False, expiry_interval_s=0.1)
    await srv.start("127.0.0.1", 0)
    yield srv
    await srv.stop()


@pytest.fixture
async def peer(server: LwM2MServer) -> AsyncIterator[Peer]:
    p = Peer(server=server.address)
    p.context = await aiocoap.Context.create_server_context(CatchAll(p), bind=("127.0.0.1", 0), transports=["udp6"])
    yield p
    await p.context.shutdown()


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[tuple[Any, Peer]]:
    """``tinymlaas serve`` in process (CoAP and admin API on free ports, SQLite in tmp_path) and an
    independent aiocoap peer that registers with it: (running, peer)."""
    from tinymlaas import runtime

    running = await runtime.start(("127.0.0.1", 0), ("127.0.0.1", 0), f"sqlite:///{tmp_path / 'db'}",
                                  tmp_path / "home", read_capabilities=False)
    p = Peer(server=running.server.address)
    p.context = await aiocoap.Context.create_server_context(CatchAll(p), bind=("127.0.0.1", 0), transports=["udp6"])
    yield running, p
    await p.context.shutdown()
    await running.stop()


async def api_cli(running: Any, *args: str, token: str | None = None, stdin: str | None = None,
                  columns: int | None = 200) -> Any:
    """The ``tinymlaas`` CLI against a running server's admin API, as an operator runs it (its
    token unless ``token``; ``columns``: the terminal width, wide so tables are not clipped)."""
    from typer.testing import CliRunner

    from tinymlaas.cli.main import app

    env = {"TINYMLAAS_API": running.api_url, "TINYMLAAS_TOKEN": token or running.token}
    if columns is not None:
        env["COLUMNS"] = str(columns)
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env, input=stdin)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Deploy tests: one data directory per module (signing key, registry, compiled artifacts)."""
    from tests.deploy_helpers import Shared

    return Shared(tmp_path_factory.mktemp("deploy-data"))


@pytest.fixture
async def env(db_url: str, shared: Any, runner: Any) -> AsyncIterator[Any]:
    """Deploy tests: a server and Deployer on a fresh database over the module's data directory."""
    from tests.deploy_helpers import Env

    e = Env(db_url, shared, runner)
    await e.start()
    yield e
    await e.stop()
