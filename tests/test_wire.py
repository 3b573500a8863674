"""Registration traffic from independent peers: libcoap's coap-client-notls and raw UDP.

Also a property test: any query parameters and payload a client may send get a 2.01 or a
4.xx with a diagnostic (never a 5.xx, never a crash), and a refused Register writes nothing.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
from pathlib import Path as FsPath

import aiocoap
import pytest
from aiocoap import Code
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from tinymlaas.server.server import LwM2MServer
from tinymlaas.store.tables import Event, Registration
from tests.conftest import BackgroundLoop, CatchAll, Peer

COAP_CLIENT = shutil.which("coap-client-notls")
needs_libcoap = pytest.mark.skipif(COAP_CLIENT is None, reason="coap-client-notls (Debian libcoap3-bin) not installed")
LINE = re.compile(r"v:1 t:(\w+) c:(\d\.\d\d) i:\w+ \{\w*\} \[(.*?)\]")


async def coap_client(*args: str) -> tuple[str, list[str], str]:
    """Run coap-client-notls -v 6; return (response code, option list text, payload)."""
    proc = await asyncio.create_subprocess_exec(COAP_CLIENT, "-B", "5", "-v", "6", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    text = out.decode()
    responses = [m for m in LINE.finditer(text)
                 if m.group(1) in ("ACK", "CON", "NON") and not m.group(2).startswith("0.")]
    assert responses, text
    last = responses[-1]
    payload = text[last.end():].split("\n")[0].partition(" :: ")[2].strip("'")
    return last.group(2), [o.strip() for o in last.group(3).split(",") if o.strip()], payload


def rows(server, table):
    return server.store.read_sync(lambda c: list(c.execute(select(table.__table__))))


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@needs_libcoap
async def test_libcoap_register_update_deregister(server):
    """One source port for the three requests: a NoSec Update or De-register from another
    address is refused by default (tests/test_security.py)."""
    base = f"coap://127.0.0.1:{server.address[1]}"
    port = str(free_udp_port())
    code, opts, _ = await coap_client("-p", port, "-m", "post", "-t", "40",
                                      "-e", '</>;rt="oma.lwm2m";ct=110,</1/0>,</3/0>',
                                      f"{base}/rd?ep=libcoap-1&lt=300&lwm2m=1.1&b=U")
    assert code == "2.01"
    location = [o.split(":", 1)[1] for o in opts if o.startswith("Location-Path")]
    assert location[0] == "rd" and len(location) == 2
    [row] = rows(server, Registration)
    assert (row.endpoint, row.lifetime, row.id) == ("libcoap-1", 300, location[1])

    code, _, _ = await coap_client("-p", port, "-m", "post", f"{base}/rd/{location[1]}?lt=900")
    assert code == "2.04" and rows(server, Registration)[0].lifetime == 900
    code, _, _ = await coap_client("-p", port, "-m", "delete", f"{base}/rd/{location[1]}")
    assert code == "2.02" and rows(server, Registration) == []


@needs_libcoap
async def test_libcoap_block1_register(server):
    links = ",".join(f"</{i}/0>" for i in range(3000, 3200))
    code, _, _ = await coap_client("-m", "post", "-t", "40", "-b", "64", "-e", links,
                                   f"coap://127.0.0.1:{server.address[1]}/rd?ep=small-buffer")
    assert code == "2.01"
    assert rows(server, Registration)[0].links == links


@needs_libcoap
@pytest.mark.parametrize("query,payload,expected", [
    ("ep=x&lwm2m=3.0", "</3/0>", "4.12"),
    ("lt=10", "</3/0>", "4.00"),
    ("ep=x&lt=ten", "</3/0>", "4.00"),
    ("ep=x", "</3/0", "4.00"),
])
async def test_libcoap_refused(server, query, payload, expected):
    code, _, diag = await coap_client("-m", "post", "-t", "40", "-e", payload,
                                      f"coap://127.0.0.1:{server.address[1]}/rd?{query}")
    assert code == expected and diag
    assert rows(server, Registration) == [] and rows(server, Event) == []


async def test_random_datagrams_do_not_hurt(server, peer: Peer):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rnd = __import__("random").Random(7)
    for _ in range(300):
        sock.sendto(bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 80))), ("127.0.0.1", server.address[1]))
    # truncated and option-garbage CoAP headers
    for junk in (b"\x40", b"\x40\x02\x00\x01\xbf", b"\x44\x02\x00\x01abcd\xb2rd\xff", b"\x40\x02\x00\x01\xff"):
        sock.sendto(junk, ("127.0.0.1", server.address[1]))
    sock.close()
    await asyncio.sleep(0.2)
    assert (await peer.register("still-fine", b"</3/0>")).code == Code.CREATED


# -- property: arbitrary registration requests --------------------------------------------

class Loop(BackgroundLoop):
    """A server and a peer on an event loop in a background thread, for hypothesis."""

    def __init__(self, tmp: FsPath) -> None:
        super().__init__()
        self.server = LwM2MServer(f"sqlite:///{tmp / 'prop.db'}", read_capabilities=False)
        self.run(self.server.start("127.0.0.1", 0))
        self.peer = Peer(server=self.server.address)

        async def ctx():
            self.peer.context = await aiocoap.Context.create_server_context(
                CatchAll(self.peer), bind=("127.0.0.1", 0), transports=["udp6"])
        self.run(ctx())

    def close(self) -> None:
        self.run(self.peer.context.shutdown())
        self.run(self.server.stop())
        self.stop()


@pytest.fixture(scope="module")
def bg(tmp_path_factory):
    loop = Loop(tmp_path_factory.mktemp("prop"))
    yield loop
    loop.close()


KEYS = st.sampled_from(["ep", "lt", "lwm2m", "b", "Q", "sms", "x", "", "ep "])
VALUES = st.one_of(st.none(), st.text(max_size=12), st.sampled_from(["1.1", "1.0", "U", "UQ", "60", "0", "-1"]))
PAYLOAD = st.one_of(st.binary(max_size=64),
                    st.lists(st.sampled_from(["</3/0>", "</1/0>", "</>;rt=\"oma.lwm2m\"", "<", ">", ";", ",",
                                              "ct=", "\"", "</a>", "</3/0/0/0/0>", "ver=1.1"]), max_size=8)
                    .map(lambda xs: "".join(xs).encode()))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.lists(st.tuples(KEYS, VALUES), max_size=5), payload=PAYLOAD)
def test_any_register_gets_2_01_or_4_xx(bg, query, payload):
    items = tuple(k if v is None else f"{k}={v}" for k, v in query)
    before = len(rows(bg.server, Event))
    resp = bg.run(bg.peer.request(Code.POST, "/rd", items, payload))
    assert resp.code == Code.CREATED or resp.code.class_ == 4, (resp.code, resp.payload)
    after = rows(bg.server, Event)
    if resp.code == Code.CREATED:
        assert after[-1].kind == "registered"
    else:
        assert resp.payload, "a refusal carries a diagnostic"
        assert len(after) == before, "a refused Register writes nothing"


def coap_register_bytes(mid: int, token: bytes, ep: str) -> bytes:
    """A CON POST /rd?ep=..&lt=60 with a link payload, encoded by hand (RFC 7252 section 3)."""
    def opt(delta: int, value: bytes) -> bytes:
        assert delta < 13 and len(value) < 13
        return bytes([(delta << 4) | len(value)]) + value
    header = bytes([0x40 | len(token), 0x02]) + mid.to_bytes(2, "big") + token
    options = opt(11, b"rd") + opt(1, bytes([40])) + opt(3, f"ep={ep}".encode()) + opt(0, b"lt=60")
    return header + options + b"\xff" + b"</3/0>"


async def test_retransmitted_register_is_answered_from_the_duplicate_cache(server):
    """A CON sent twice (same message id, as a client does when the ACK is lost) registers once
    and gets the same bytes back (RFC 7252 4.5), from the server's lean duplicate cache."""
    loop = asyncio.get_running_loop()
    received: asyncio.Queue[bytes] = asyncio.Queue()

    class Proto(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            received.put_nowait(data)

    transport, _ = await loop.create_datagram_endpoint(Proto, remote_addr=("127.0.0.1", server.address[1]))
    try:
        datagram = coap_register_bytes(0x1234, b"\xa1\xb2", "twice")
        transport.sendto(datagram)
        first = await asyncio.wait_for(received.get(), 5)
        transport.sendto(datagram)
        second = await asyncio.wait_for(received.get(), 5)
    finally:
        transport.close()
    assert first == second
    assert first[0] >> 4 & 0x3 == 2 and first[1] == 0x41  # ACK, 2.01 Created
    assert first[2:4] == b"\x12\x34" and first[4:6] == b"\xa1\xb2"
    assert [r.endpoint for r in rows(server, Registration)] == ["twice"]
    assert [e.kind for e in rows(server, Event)] == ["registered"]
    from tinymlaas.server.dedup import EncodedResponse
    cache = server.context.request_interfaces[0].token_interface._recent_messages
    assert any(isinstance(v, EncodedResponse) for v in cache.values())
