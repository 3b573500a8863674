"""Small aiocoap helpers shared by the server and the simulator.

``response_within`` waits for a request's response with a timeout without cancelling
aiocoap's own future: aiocoap 0.4 raises InvalidStateError from ``Context.shutdown()`` when it
later tries to fail a response future that a caller's ``wait_for`` already cancelled, which
leaves the context half shut. The future is shielded instead and its outcome consumed.
"""

from __future__ import annotations

import asyncio
from typing import Any


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
