"""Scoped admin tokens and the audit trail, over loopback HTTP against a live server.

Table-driven over the OpenAPI route list: every route has an entry in ``scopes.ROUTES``, is
refused without a token (401) and with a token whose scopes do not cover it (403), and is let
through with one that does; a route added without an entry is refused and reported. Tokens
are made and revoked with the CLI and stored as hashes only; every state-changing call,
refused ones included, is in the audit table that ``tinymlaas audit`` shows. With a
certificate and key the API speaks HTTPS only.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import json
import ssl
from pathlib import Path as FsPath
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from typer.testing import CliRunner

from tinymlaas import runtime
from tinymlaas.api.scopes import GRANTS, ROUTES, SCOPES
from tinymlaas.cli.main import app as cli_app
from tinymlaas.store.tables import API_TOKENS, AUDIT
from tests.conftest import api_cli as cli


@pytest.fixture
async def live(tmp_path: FsPath):
    running = await runtime.start(("127.0.0.1", 0), ("127.0.0.1", 0), f"sqlite:///{tmp_path / 'db'}",
                                  tmp_path / "home", read_capabilities=False)
    yield running
    await running.stop()


def routes_of(app: FastAPI) -> set[tuple[str, str]]:
    spec = app.openapi()
    return {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}


def unscoped(app: FastAPI) -> list[tuple[str, str]]:
    """Routes of ``app`` that ``scopes.ROUTES`` does not list."""
    return sorted(routes_of(app) - set(ROUTES))


def concrete(path: str) -> str:
    return path.replace("{endpoint}", "nobody").replace("{name}", "nogroup").replace(
        "{deployment_id}", "987654").replace("{cid}", "987654").replace("{token_id}", "987654")


async def token_with(http: httpx.AsyncClient, admin: str, *scopes: str) -> str:
    r = await http.post("/tokens", json={"name": f"t-{'-'.join(scopes)}", "scopes": list(scopes)},
                        headers={"Authorization": f"Bearer {admin}"})
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def lacking(needed: str) -> tuple[str, ...] | None:
    """Scopes of a token that does not cover ``needed`` (None: every token covers it)."""
    others = tuple(s for s in SCOPES if needed not in GRANTS[s])
    return others or None


async def test_every_route_has_a_scope_and_is_refused_without_it(live):
    app = live.uvicorn.config.app
    assert unscoped(app) == [], "routes without a scope in tinymlaas.api.scopes.ROUTES"
    assert set(ROUTES) == routes_of(app), "scopes.ROUTES lists routes the app does not have"
    async with httpx.AsyncClient(base_url=live.api_url, timeout=30) as http:
        tokens = {s: await token_with(http, live.token, s) for s in SCOPES}
        for (method, path), needed in sorted(ROUTES.items(), key=lambda kv: kv[0]):
            url = concrete(path)
            body: dict[str, Any] | None = {} if method in ("POST", "PUT") else None
            if needed is None:
                assert (await http.request(method, url)).status_code == 200
                continue
            r = await http.request(method, url, json=body)
            assert r.status_code == 401, (method, path, r.status_code)
            without = lacking(needed)
            if without is not None:
                r = await http.request(method, url, json=body,
                                       headers={"Authorization": f"Bearer {tokens[without[0]]}"})
                assert r.status_code == 403 and repr(needed) in r.json()["error"], (method, path, r.text)
            r = await http.request(method, url, json=body, headers={"Authorization": f"Bearer {tokens[needed]}"})
            assert r.status_code not in (401, 403, 500), (method, path, r.status_code, r.text)


async def test_a_route_without_a_scope_is_refused_and_fails_the_check(live):
    app = live.uvicorn.config.app

    @app.post("/brand-new")
    async def brand_new() -> dict[str, str]:
        return {"did": "something"}
    app.openapi_schema = None  # FastAPI caches the schema
    assert unscoped(app) == [("POST", "/brand-new")]
    async with httpx.AsyncClient(base_url=live.api_url) as http:
        r = await http.post("/brand-new", headers={"Authorization": f"Bearer {live.token}"})
        assert r.status_code == 403 and "no scope" in r.json()["error"]


async def test_tokens_made_and_revoked_with_the_cli_are_stored_hashed_and_audited(live):
    r = await cli(live, "tokens", "create", "fleet-script", "--scope", "read", "--scope", "operate", "--json")
    assert r.exit_code == 0, r.output
    made = json.loads(r.stdout)
    token, token_id = made["token"], made["id"]
    assert made["scopes"] == ["operate", "read"] and len(token) >= 40

    rows = live.server.store.read_sync(lambda c: list(c.execute(select(API_TOKENS))))
    mine = [t for t in rows if t.id == token_id][0]
    assert mine.sha256 == hashlib.sha256(token.encode()).hexdigest()
    db_bytes = b"".join(p.read_bytes() for p in FsPath(live.server.store.engine.url.database).parent.glob("db*"))
    assert token.encode() not in db_bytes  # the text is nowhere in the database (or its WAL)

    r = await cli(live, "devices", "list", "--json", token=token)
    assert r.exit_code == 0, r.output
    r = await cli(live, "deploy", "nobody", "mnist", token=token)
    assert r.exit_code == 1 and "lacks the 'deploy' scope" in r.output and r.output.count("\n") == 1

    r = await cli(live, "tokens", "list")
    assert r.exit_code == 0 and "fleet-script" in r.stdout and token not in r.stdout
    r = await cli(live, "tokens", "revoke", str(token_id))
    assert r.exit_code == 0, r.output
    r = await cli(live, "devices", "list", token=token)
    assert r.exit_code == 1 and "missing or wrong admin token" in r.output
    r = await cli(live, "tokens", "revoke", "1")
    assert r.exit_code == 1 and "server's own" in r.output

    r = await cli(live, "audit", "--json")
    assert r.exit_code == 0, r.output
    trail = json.loads(r.stdout)
    calls = [(a["method"], a["route"], a["status"], a["token_name"]) for a in reversed(trail)]
    assert calls[0] == ("POST", "/tokens", 200, "serve")
    assert ("POST", "/deployments", 403, "fleet-script") in calls  # refused: audited too
    assert ("DELETE", "/tokens/{token_id}", 200, "serve") in calls
    assert ("DELETE", "/tokens/{token_id}", 409, "serve") in calls
    refused = [a for a in trail if a["status"] == 403][0]
    assert "lacks the 'deploy' scope" in refused["result"]
    assert all(a["method"] != "GET" for a in trail)  # reads are not state changes
    r = await cli(live, "audit")
    assert r.exit_code == 0 and "/deployments" in r.stdout and "403" in r.stdout
    rows = live.server.store.read_sync(lambda c: list(c.execute(select(AUDIT))))
    assert len(rows) == len(trail)


async def test_tokens_need_known_scopes_and_names(live):
    async with httpx.AsyncClient(base_url=live.api_url) as http:
        auth = {"Authorization": f"Bearer {live.token}"}
        r = await http.post("/tokens", json={"name": "x", "scopes": ["root"]}, headers=auth)
        assert r.status_code == 400 and "unknown scope root" in r.json()["error"]
        r = await http.post("/tokens", json={"name": "\x1b[2J", "scopes": ["read"]}, headers=auth)
        assert r.status_code == 400 and "invalid token name '\\x1b[2J'" in r.json()["error"]


def self_signed(directory: FsPath) -> tuple[FsPath, FsPath]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tinymlaas test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    certfile, keyfile = directory / "api.pem", directory / "api.key"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return certfile, keyfile


async def test_api_over_tls_with_a_certificate_and_key(tmp_path: FsPath):
    certfile, keyfile = self_signed(tmp_path)
    running = await runtime.start(("127.0.0.1", 0), ("127.0.0.1", 0), f"sqlite:///{tmp_path / 'db'}",
                                  tmp_path / "home", read_capabilities=False,
                                  tls=(certfile, keyfile))
    try:
        assert running.api_url.startswith("https://127.0.0.1:")
        api = json.loads((tmp_path / "home" / "api.json").read_text())
        assert api["url"] == running.api_url and api["ca"] == str(certfile.resolve())
        verify = ssl.create_default_context(cafile=certfile)
        async with httpx.AsyncClient(base_url=running.api_url, verify=verify) as http:
            r = await http.get("/devices", headers={"Authorization": f"Bearer {running.token}"})
            assert r.status_code == 200
        async with httpx.AsyncClient(base_url=running.api_url.replace("https", "http")) as plain:
            with pytest.raises(httpx.HTTPError):
                await plain.get("/health")  # no plain HTTP on the TLS port
        async with httpx.AsyncClient(base_url=running.api_url) as unverified:
            with pytest.raises(httpx.ConnectError):
                await unverified.get("/health")  # the system trust store does not know it
        env = {"TINYMLAAS_API": running.api_url, "TINYMLAAS_TOKEN": running.token, "TINYMLAAS_CA": str(certfile)}
        r = await asyncio.to_thread(CliRunner().invoke, cli_app, ["devices", "list", "--json"], env=env)
        assert r.exit_code == 0 and json.loads(r.stdout) == [], r.output
        env = {"TINYMLAAS_HOME": str(tmp_path / "home")}  # api.json names the certificate
        r = await asyncio.to_thread(CliRunner().invoke, cli_app, ["devices", "list", "--json"], env=env)
        assert r.exit_code == 0, r.output
    finally:
        await running.stop()
