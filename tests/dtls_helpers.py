"""DTLS test peers: libcoap's coap-client over DTLS-PSK, and a bare aiocoap device over coaps.

``coap_client_psk`` runs Debian's ``coap-client-openssl`` (or ``-gnutls``) with ``-u identity -k
key`` (libcoap takes the key as text, so test keys are printable) and returns the response code,
its options, and the whole verbose output (it names the negotiated cipher suite). ``DtlsPeer``
is ``conftest.Peer`` (recorded requests, canned answers) whose only transport is our coaps
client interface: a device whose side of DM requests is written by hand in the tests.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
from pathlib import Path
from typing import Any

import aiocoap
import pytest
from aiocoap import Code, Message

from lwm2m.dtls import coaps
from tests.conftest import CatchAll, Peer

TOOLS = {name: shutil.which(f"coap-client-{name}") for name in ("openssl", "gnutls")}
needs_libcoap_dtls = pytest.mark.skipif(not all(TOOLS.values()),
                                        reason="coap-client-openssl/-gnutls (Debian libcoap3-bin) not installed")
LINE = re.compile(r"v:1 t:(\w+) c:(\d\.\d\d) i:\w+ \{\w*\} \[(.*?)\]")


async def coap_client_psk(tool: str, identity: str, key: str, method: str, uri: str, *args: str,
                          port: int | None = None, verbosity: int = 7) -> tuple[str | None, list[str], str]:
    """(response code or None when the handshake failed, options, verbose output; at verbosity
    9 libcoap also logs the negotiated cipher suite)."""
    local = ("-p", str(port)) if port else ()
    proc = await asyncio.create_subprocess_exec(
        TOOLS[tool] or tool, "-B", "4", "-v", str(verbosity), "-u", identity, "-k", key, *local, "-m", method,
        *args, uri,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    text = out.decode(errors="replace")
    found = [m for m in LINE.finditer(text) if m.group(1) in ("ACK", "CON", "NON") and m.group(2)[0] in "2345"]
    if not found:
        return None, [], text
    last = found[-1]
    return last.group(2), [o.strip() for o in last.group(3).split(",") if o.strip()], text


def location(options: list[str]) -> tuple[str, ...]:
    return tuple(o.split(":", 1)[1] for o in options if o.startswith("Location-Path"))


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DtlsPeer(Peer):
    """``Peer`` over DTLS-PSK (one session to the server's coaps port)."""

    interface: Any = None

    async def start(self, identity: bytes, key: bytes, **kw: Any) -> "DtlsPeer":
        self.context, self.interface = await coaps.client_context(CatchAll(self), self.server, identity, key, **kw)
        return self

    async def request(self, code: Code, path: str, query: tuple[str, ...] = (), payload: bytes = b"",
                      cf: int | None = 40) -> Message:
        msg = Message(code=code, uri=f"coaps://{self.server[0]}:{self.server[1]}{path}", payload=payload)
        msg.opt.uri_query = query
        if cf is not None and payload:
            msg.opt.content_format = cf
        return await asyncio.wait_for(self.context.request(msg).response, 15)


async def dtls_peer(server_address: tuple[str, int], identity: bytes, key: bytes, **kw: Any) -> DtlsPeer:
    return await DtlsPeer(server=server_address).start(identity, key, **kw)


def secured_settings(tmp_path: Path, **kw: Any) -> Any:
    from tinymlaas.security.settings import SecuritySettings

    kw.setdefault("coaps_port", 0)
    return SecuritySettings(key_file=tmp_path / "credentials.key", **kw)


async def closing(*contexts: aiocoap.Context) -> None:
    for ctx in contexts:
        await ctx.shutdown()
