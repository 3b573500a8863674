"""Credentials, bootstrap configurations and signing keys through the CLI and the admin API,
against a live server with a coaps port and a bootstrap server.

Where keys go is checked as an attacker with the files would: not in any CLI output or API
response, not in the log, not in ``api.json``, not in the database in clear; the key file is 0600.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path as FsPath

import httpx
import pytest
from sqlalchemy import select

from device_profiles import get_profile
from simulator.fleet import FleetSpec, build_fleet, start_fleet, stop_fleet
from simulator.security import fleet_security, read_credentials_csv
from tests.conftest import api_cli as cli, eventually
from tinymlaas import runtime
from tinymlaas.security.settings import SecuritySettings
from tinymlaas.store.tables import DEVICE_CREDENTIALS

KEYS = [f"{i:02x}" * 16 for i in range(0xa1, 0xa4)]
BATCH = "endpoint,identity,key\n" + "".join(f"batch-{i:04d},batch-{i:04d}-id,{k}\n" for i, k in enumerate(KEYS))


@pytest.fixture
async def live(tmp_path: FsPath):
    settings = SecuritySettings(coaps_port=0, bootstrap_coaps_port=0)
    running = await runtime.start(("127.0.0.1", 0), ("127.0.0.1", 0), f"sqlite:///{tmp_path / 'db'}",
                                  tmp_path / "home", read_capabilities=False, security=settings)
    yield running
    await running.stop()


def no_key_in(text: str) -> None:
    for k in KEYS + ["0011223344556677889900aabbccddee"]:
        assert k not in text and bytes.fromhex(k).decode("latin-1") not in text


async def test_batch_import_list_revoke_and_where_keys_are(live, tmp_path: FsPath, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    running = live
    csv = tmp_path / "batch.csv"
    bad = tmp_path / "bad.csv"
    bad.write_text(BATCH + "batch-0009,batch-0009-id,nothex\nbatch-0001,again,00\n")
    r = await cli(running, "credentials", "import", str(bad))
    assert r.exit_code == 1 and "nothing imported" in r.output and "line 5: PSK: not hexadecimal" in r.output
    assert "line 6" in r.output and "nothex" not in r.output
    assert running.server.security.credentials.list() == []
    csv.write_text(BATCH)
    r = await cli(running, "credentials", "import", str(csv))
    assert r.exit_code == 0 and "imported 3 credentials" in r.output, r.output
    r = await cli(running, "credentials", "add", "solo", "--key-file", "-", stdin="0011223344556677889900aabbccddee\n")
    assert r.exit_code == 0, r.output
    listing = await cli(running, "credentials", "list")
    assert listing.exit_code == 0 and "batch-0002-id" in listing.output and "solo" in listing.output
    as_json = await cli(running, "credentials", "list", "--json")
    revoked = await cli(running, "credentials", "revoke", "batch-0001")
    assert revoked.exit_code == 0 and "revoked" in revoked.output
    rotated = await cli(running, "credentials", "rotate", "batch-0002", "--now")
    assert rotated.exit_code == 0 and "in use now" in rotated.output
    again = await cli(running, "credentials", "add", "batch-0000", "--key-file", "-", stdin=KEYS[0])
    assert again.exit_code == 1 and "has a dm credential already" in again.output
    bearer = {"Authorization": f"Bearer {running.token}"}
    async with httpx.AsyncClient(base_url=running.api_url, headers=bearer) as http:
        for body, why in (({"endpoint": "x", "key": "zz" * 16}, "PSK: not hexadecimal"),
                          ({"endpoint": "x", "key": 1234567890123456}, "field 'key': expected str"),
                          ({"endpoint": "x", "key": "00" * 8}, "PSK: 8 bytes"),
                          ({"endpoint": "x", "key": KEYS[0], "pin": 1}, "unknown field 'pin'")):
            resp = await http.post("/credentials", json=body)
            assert resp.status_code == 400 and why in resp.json()["error"], resp.text
            assert "1234567890123456" not in resp.text and "zz" * 16 not in resp.text
        spec = (await http.get("/openapi.json")).text
        status = (await http.get("/security")).json()
        assert status["credentials"] == 4 and status["nosec_accepted"] is False
    everything = "".join(x.output for x in (r, listing, as_json, revoked, rotated, again)) + caplog.text + spec
    no_key_in(everything)
    home = tmp_path / "home"
    no_key_in((home / "api.json").read_text())
    key_file = home / "credentials.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    rows = running.server.store.read_sync(lambda c: list(c.execute(select(DEVICE_CREDENTIALS))))
    assert len(rows) == 4
    for row in rows:
        blob = (row.key or b"") + (row.pending_key or b"")
        for k in KEYS:
            assert bytes.fromhex(k) not in blob
    db = (tmp_path / "db").read_bytes()
    for k in KEYS:
        assert bytes.fromhex(k) not in db
    assert os.stat(home / "signing-key.pem").st_mode & 0o077 == 0


async def test_a_batch_registers_over_dtls_with_its_csv(live, tmp_path: FsPath, runner) -> None:
    running = live
    r = await cli(running, "credentials", "import", str(_write(tmp_path / "b.csv", BATCH)))
    assert r.exit_code == 0, r.output
    security = fleet_security(read_credentials_csv(BATCH))
    devices = build_fleet([FleetSpec(get_profile("nrf52840"), 3, prefix="batch")],
                          running.server.security.coaps_address, runner, security=security)
    try:
        assert await start_fleet(devices) == []
        assert await eventually(lambda: len(running.server.registrations) == 3)
        assert {r.remote.identity for r in running.server.registrations} == {b"batch-0000-id", b"batch-0001-id",
                                                                             b"batch-0002-id"}
    finally:
        await stop_fleet(devices)


async def test_bootstrap_configs_and_signing_key_rotation(live) -> None:
    running = live
    uri = "coaps://127.0.0.1:%d" % running.server.security.coaps_address[1]
    r = await cli(running, "bootstrap", "set", uri, "--lifetime", "600")
    assert r.exit_code == 0, r.output
    r = await cli(running, "bootstrap", "set", "coap://127.0.0.1:5683", "--group", "nope")
    assert r.exit_code == 1 and "does not go with security mode PSK" in r.output
    r = await cli(running, "bootstrap", "set", "coap://127.0.0.1:5683", "--group", "nope", "--security", "nosec")
    assert r.exit_code == 1 and "no group 'nope'" in r.output
    r = await cli(running, "bootstrap", "list")
    assert r.exit_code == 0 and "default" in r.output and "600" in r.output
    before = running.deployer.key.fingerprint
    r = await cli(running, "signing-keys", "rotate", "--overlap", "1h")
    assert r.exit_code == 0 and f"previous {before}" in r.output, r.output
    assert len(running.deployer.key.anchor) == 64 and running.deployer.key.anchor[32:] != running.deployer.key.public
    r = await cli(running, "signing-keys", "show")
    assert r.exit_code == 0 and f"previous key {before}" in r.output
    # the bootstrap server hands out both keys during the overlap
    assert running.bootstrap.trust_anchor() == running.deployer.key.anchor


def _write(path: FsPath, text: str) -> FsPath:
    path.write_text(text)
    return path
