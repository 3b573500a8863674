"""Small aiocoap helpers shared by the server and the simulator.

``response_within`` waits for a request's response with a timeout without cancelling
aiocoap's own future: aiocoap 0.4 raises InvalidStateError from ``Context.shutdown()`` when it
later tries to fail a response future that a caller's ``wait_for`` already cancelled, which
leaves the context half shut. The future is shielded instead and its outcome consumed.

Importing this module also turns off aiocoap's SO_REUSEPORT on the sockets it binds (its
documented switch, ``AIOCOAP_REUSE_PORT``), unless the environment already sets it: with
SO_REUSEPORT, Linux lets two sockets of the same user that bind port 0 share one ephemeral
port, and then delivers all datagrams to one of them. A thousand simulated devices in one
process hit that for 1-2% of them (their responses went to another device's socket).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

os.environ.setdefault("AIOCOAP_REUSE_PORT", "0")


def _consume(fut: "asyncio.Future[Any]") -> None:
    if not fut.cancelled():
        fut.exception()  # mark it retrieved: nobody waits for it any more


async def response_within(request: Any, timeout: float) -> Any:
    """``await request.response`` for at most ``timeout`` seconds (asyncio.TimeoutError after)."""
    fut = request.response
    try:
        return await asyncio.wait_for(asyncio.shield(fut), timeout)
    except BaseException:
        fut.add_done_callback(_consume)
        raise
