"""Restart persistence and kill -9 durability, on SQLite and PostgreSQL (``db_url``).

In process: a new server on the same database accepts an Update with the registration id
the device got before, and loads every registration, replacement and observed value it stored.
Out of process: ``tinymlaas serve`` is killed with SIGKILL right after acknowledging
registrations; every acknowledged one is in the database afterwards.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path as FsPath

import aiocoap
from aiocoap import Code, Message
import pytest
from sqlalchemy import select, text

from tinymlaas.server.server import LwM2MServer
from tinymlaas.store import Store
from tinymlaas.store.tables import EVENTS, REGISTRATIONS
from tests.conftest import CatchAll, Peer

pytestmark = pytest.mark.both_databases


async def test_restart_keeps_registrations(db_url: str):
    url = db_url
    first = LwM2MServer(url, read_capabilities=False)
    await first.start("127.0.0.1", 0)
    port = first.address[1]
    peer = Peer(server=first.address)
    peer.context = await aiocoap.Context.create_server_context(CatchAll(peer), bind=("127.0.0.1", 0),
                                                               transports=["udp6"])
    try:
        assert (await peer.register("survivor", b"</3/0>", ("lt=120", "lwm2m=1.1"))).code == Code.CREATED
        old_location = peer.location
        await first.stop()

        second = LwM2MServer(url, read_capabilities=False)
        await second.start("127.0.0.1", port)
        try:
            reg = second.registrations.by_endpoint["survivor"]
            assert (reg.id, reg.lifetime, reg.lwm2m_version) == (old_location[1], 120, "1.1")
            assert (await peer.update()).code == Code.CHANGED  # the old id is still good
            peer.answer(Code.GET, "/3/0/0", Code.CONTENT, b"ACME", 0)
            from lwm2m.path import Path
            assert await second.read("survivor", Path(3, 0, 0), fmt=0) == {Path(3, 0, 0): "ACME"}
        finally:
            await second.stop()
    finally:
        await peer.context.shutdown()


async def test_kill_9_loses_no_acknowledged_registration(tmp_path: FsPath, db_url: str):
    env = dict(os.environ, TINYMLAAS_HOME=str(tmp_path / "home"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tinymlaas", "serve", "--coap", "127.0.0.1:0", "--api", "127.0.0.1:0",
         "--db", db_url, "--no-capabilities"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
        port = int(re.search(r"coap://[\d.]+:(\d+)", line).group(1))
        ctx = await aiocoap.Context.create_client_context()
        acked: list[str] = []

        async def register(i: int) -> None:
            msg = Message(code=Code.POST, uri=f"coap://127.0.0.1:{port}/rd", payload=b"</3/0>",
                          content_format=40, uri_query=(f"ep=k{i}",))
            resp = await asyncio.wait_for(ctx.request(msg).response, 20)
            if resp.code == Code.CREATED:
                acked.append(resp.opt.location_path[1])
        await asyncio.gather(*(register(i) for i in range(200)))
        os.kill(proc.pid, signal.SIGKILL)  # no chance to flush anything
        proc.wait(10)
        await ctx.shutdown()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(acked) == 200
    store = Store(db_url)
    ids = store.read_sync(lambda c: {r.id for r in c.execute(select(REGISTRATIONS))})
    store.close()
    assert set(acked) <= ids


async def test_registration_lifecycle_survives_a_restart(db_url: str):
    """Registrations, a replacement, an update and an observed value, stored and loaded again."""
    from lwm2m.path import Path

    server = LwM2MServer(db_url, read_capabilities=False)
    await server.start("127.0.0.1", 0)
    peer = Peer(server=server.address)
    peer.context = await aiocoap.Context.create_server_context(CatchAll(peer), bind=("127.0.0.1", 0),
                                                               transports=["udp6"])
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
    store = Store(db_url)
    regs = store.read_sync(lambda c: {r.endpoint: r for r in c.execute(select(REGISTRATIONS))})
    kinds = store.read_sync(lambda c: [r.kind for r in c.execute(select(EVENTS).order_by(EVENTS.c.id))])
    latest = store.read_sync(lambda c: c.execute(text("SELECT data FROM observed_values")).scalar_one())
    store.close()
    assert len(regs) == 20 and "</5/0>" in regs["pg-0"].links and regs["pg-19"].lifetime == 120
    assert kinds.count("registered") == 21 and kinds.count("replaced") == 1 and kinds.count("updated") == 1
    assert (latest if isinstance(latest, dict) else __import__("json").loads(latest)) == {"/3/0/9": 5}
    restarted = LwM2MServer(db_url, read_capabilities=False)  # loads what it stored
    await restarted.start("127.0.0.1", 0)
    try:
        assert len(restarted.registrations) == 20
    finally:
        await restarted.stop()
