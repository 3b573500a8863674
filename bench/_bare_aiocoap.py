"""A bare aiocoap server that answers LwM2M Register/Update and does nothing else.

The baseline for ``bench/registrations.py``: the same CoAP stack (aiocoap, UDP, one
process) as tinymlaas, with no parsing, no storage and no bookkeeping beyond a counter.

    POST /rd        -> 2.01 Created, Location-Path rd/<id>
    POST /rd/<id>   -> 2.04 Changed
    anything else   -> 4.04 / 4.05

Prints ``bare-aiocoap: LwM2M on coap://127.0.0.1:PORT`` once bound and runs until
SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import sys

import aiocoap
from aiocoap import Code, Message
from aiocoap.resource import PathCapable, Resource


class BareRoot(Resource, PathCapable):
    def __init__(self) -> None:
        super().__init__()
        self._ids = itertools.count(1)

    async def render_post(self, request: Message) -> Message:
        path = request.opt.uri_path
        if path == ("rd",):
            return Message(code=Code.CREATED, location_path=("rd", f"r{next(self._ids):x}"))
        if len(path) == 2 and path[0] == "rd":
            return Message(code=Code.CHANGED)
        return Message(code=Code.NOT_FOUND)


def bound_port(ctx: aiocoap.Context) -> int:
    transport = ctx.request_interfaces[0].token_interface.message_interface.transport
    return transport.get_extra_info("socket").getsockname()[1]


async def main(host: str, port: int) -> None:
    ctx = await aiocoap.Context.create_server_context(BareRoot(), bind=(host, port), transports=["udp6"])
    try:
        print(f"bare-aiocoap: LwM2M on coap://{host}:{bound_port(ctx)}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await ctx.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        asyncio.run(main(args.host, args.port))
    except KeyboardInterrupt:
        pass
    sys.exit(0)
