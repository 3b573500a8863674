"""The same registration path on PostgreSQL (any SQLAlchemy URL works; this is the other one
we promise). Uses ``$TINYMLAAS_TEST_PG`` if set, else a local Debian PostgreSQL cluster when
this machine has one (CI installs it); skipped otherwise."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess

import aiocoap
import pytest
from aiocoap import Code
from sqlalchemy import select, text

from lwm2m.path import Path
from tinymlaas.server.server import LwM2MServer
from tinymlaas.store import Store
from tinymlaas.store.tables import EVENTS, REGISTRATIONS
from tests.conftest import CatchAll, Peer


def local_cluster_url() -> str | None:
    if os.environ.get("TINYMLAAS_TEST_PG"):
        return os.environ["TINYMLAAS_TEST_PG"]
    if not (shutil.which("pg_ctlcluster") and shutil.which("pg_lsclusters") and os.geteuid() == 0):
        return None
    try:
        __import__("psycopg")
        clusters = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, timeout=10).stdout.split()
        if not clusters:
            return None
        version, name, port = clusters[0], clusters[1], clusters[2]
        subprocess.run(["pg_ctlcluster", version, name, "start"], capture_output=True, timeout=60)
        db = "tinymlaas_" + secrets.token_hex(4)
        su = ["su", "postgres", "-c"]
        subprocess.run(su + [f"psql -p {port} -q -c \"ALTER USER postgres PASSWORD 'tinymlaas'\""], check=True,
                       capture_output=True, timeout=30)
        subprocess.run(su + [f"createdb -p {port} {db}"], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError, ImportError):
        return None
    return f"postgresql+psycopg://postgres:tinymlaas@127.0.0.1:{port}/{db}"


@pytest.fixture(scope="module")
def pg_url():
    url = local_cluster_url()
    if url is None:
        pytest.skip("no PostgreSQL here (CI installs one)")
    return url


async def test_registration_lifecycle_on_postgres(pg_url):
    server = LwM2MServer(pg_url, read_capabilities=False)
    await server.start("127.0.0.1", 0)
    peer = Peer(server=server.address)
    peer.context = await aiocoap.Context.create_server_context(CatchAll(peer), bind=("127.0.0.1", 0), transports=["udp6"])
    try:
        for i in range(20):
            assert (await peer.register(f"pg-{i}", b"</3/0>", ("lwm2m=1.1",))).code == Code.CREATED
        assert (await peer.update(("lt=120",))).code == Code.CHANGED
        assert (await peer.register("pg-0", b"</3/0>,</5/0>")).code == Code.CREATED  # replaces
        peer.answer(Code.GET, "/3/0/9", Code.CONTENT, b'[{"bn":"/3/0/9","v":5}]', 110)
        await server.observations.observe("pg-19", Path(3, 0, 9))
    finally:
        await peer.context.shutdown()
        await server.stop()
    store = Store(pg_url)
    regs = store.read_sync(lambda c: {r.endpoint: r for r in c.execute(select(REGISTRATIONS))})
    kinds = store.read_sync(lambda c: [r.kind for r in c.execute(select(EVENTS).order_by(EVENTS.c.id))])
    latest = store.read_sync(lambda c: c.execute(text("SELECT data FROM observed_values")).scalar_one())
    store.close()
    assert len(regs) == 20 and "</5/0>" in regs["pg-0"].links and regs["pg-19"].lifetime == 120
    assert kinds.count("registered") == 21 and kinds.count("replaced") == 1 and kinds.count("updated") == 1
    assert latest == {"/3/0/9": 5}
    restarted = LwM2MServer(pg_url, read_capabilities=False)  # loads what it stored
    await restarted.start("127.0.0.1", 0)
    try:
        assert len(restarted.registrations) == 20
    finally:
        await restarted.stop()
