"""The server's lean duplicate cache (``tinymlaas.server.dedup``) against the aiocoap it subclasses.

If aiocoap changes the private methods the subclasses override or rely on, these tests fail
(the pinned sources), before a server misbehaves: re-read those methods, adapt ``dedup``, update
the pins. The wire test checks what matters: a retransmitted Register (same message ID) gets the
byte-identical answer, is executed once, and what is kept for it is the encoded bytes only.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import inspect
import sys
import textwrap

import aiocoap
from aiocoap.messagemanager import MessageManager
from aiocoap.protocol import Context
from aiocoap.transports.udp6 import MessageInterfaceUDP6
from sqlalchemy import select

from tinymlaas.server import dedup
from tinymlaas.server.server import LwM2MServer
from tinymlaas.store.tables import EVENTS

# sha256 of each method's source (dedented), as reviewed for aiocoap 0.4.17.
PINNED = {
    "Context._append_tokenmanaged_messagemanaged_transport":
        "be5cc3a4aa424dc7a1b3aa1f1dbf0a46ac3b54adbdf04d6a9b0930051d5c5c97",
    "Context.create_server_context": "51e3a20548142cec13e48c8434e973b5e4a9820f91ce33466b47d8bc2244a835",
    "MessageManager._store_response_for_duplicates": "7e948542271478d03df09a35e88a44fed06dd0cf6eff326bb8798a33c5bd7d4f",
    "MessageManager._deduplicate_message": "17ef90da7ad0cc6fc4396e089a5b933e6b2d3d115b1cf2dc344a85d49cb35d56",
    "MessageManager._send_initially": "6ab4404d9181a5337987ae1eb51d64239b835a8a3f53069afe2ea88b70e7a496",
    "MessageInterfaceUDP6.send": "19e33ac02d571a419d0e862586ec81079551de5d0043aa0e39a841f8f34a29ff",
}
OWNERS = {"Context": Context, "MessageManager": MessageManager, "MessageInterfaceUDP6": MessageInterfaceUDP6}


def source_hash(qualname: str) -> str:
    owner, name = qualname.split(".")
    return hashlib.sha256(textwrap.dedent(inspect.getsource(getattr(OWNERS[owner], name))).encode()).hexdigest()


def test_the_aiocoap_methods_dedup_builds_on_are_the_reviewed_ones() -> None:
    changed = {q for q, h in PINNED.items() if source_hash(q) != h}
    assert not changed, f"aiocoap {aiocoap.meta.version} changed {sorted(changed)}: review tinymlaas/server/dedup.py"


def test_the_context_override_is_aiocoaps_own_code_with_the_lean_manager() -> None:
    def body(fn: object) -> str:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))  # type: ignore[arg-type]
        func = tree.body[0]
        assert isinstance(func, ast.AsyncFunctionDef)
        return ast.dump(ast.Module(body=[s for s in func.body if not isinstance(s, ast.Expr)], type_ignores=[]))

    ours = body(dedup.ServerContext._append_tokenmanaged_messagemanaged_transport)
    theirs = body(Context._append_tokenmanaged_messagemanaged_transport)
    assert ours == theirs.replace("id='MessageManager'", "id='LeanMessageManager'")


def coap_register(mid: int, token: bytes, ep: str) -> bytes:
    """A CON POST /rd?ep=... with a link payload, encoded by hand (RFC 7252 section 3)."""
    out = bytes([0x40 | len(token), 0x02]) + mid.to_bytes(2, "big") + token
    out += bytes([0xB2]) + b"rd"  # Uri-Path (11)
    query = f"ep={ep}".encode()
    out += bytes([0x40 | len(query)]) + query  # Uri-Query (15 = 11 + 4)
    return out + b"\xff</3/0>"


async def test_a_retransmitted_register_is_answered_from_the_lean_cache_and_runs_once(tmp_path) -> None:
    server = LwM2MServer(f"sqlite:///{tmp_path / 'db'}", read_capabilities=False)
    await server.start("127.0.0.1", 0)
    manager = server.context.request_interfaces[0].token_interface
    assert type(manager) is dedup.LeanMessageManager
    loop = asyncio.get_running_loop()
    received: asyncio.Queue[bytes] = asyncio.Queue()

    class Proto(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            received.put_nowait(data)

    transport, _ = await loop.create_datagram_endpoint(Proto, remote_addr=("127.0.0.1", server.address[1]))
    try:
        datagram = coap_register(0x2345, b"\x01\x02\x03", "dup")
        transport.sendto(datagram)
        first = await asyncio.wait_for(received.get(), 5)
        transport.sendto(datagram)  # the device did not get the ACK and retransmits
        second = await asyncio.wait_for(received.get(), 5)
        stored = [v for v in manager._recent_messages.values() if v is not None]
        events = await server.store.read(lambda c: [r.kind for r in c.execute(select(EVENTS))])
    finally:
        transport.close()
        await server.stop()
    assert first == second and first[1] == 0x41 and first[2:4] == b"\x23\x45"  # 2.01, same MID, same bytes
    assert events == ["registered"]  # executed once
    assert len(stored) == 1 and isinstance(stored[0], dedup.EncodedResponse)
    assert stored[0].encode() == first and sys.getsizeof(stored[0]) < 100  # no Message, no request kept
