"""A bare aiocoap server that answers LwM2M Register/Update, serves one file, and does nothing else.

The baseline for ``bench/registrations.py`` and ``bench/rollout.py``: the same CoAP stack
(aiocoap, UDP, one process) as tinymlaas, with no parsing, no storage and no bookkeeping
beyond a counter.

    POST /rd        -> 2.01 Created, Location-Path rd/<id>
    POST /rd/<id>   -> 2.04 Changed
    GET /p/pkg      -> with --package FILE: its bytes, application/octet-stream (42), Size2,
                       sliced by aiocoap for Block2 as tinymlaas' package offers are
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
    def __init__(self, package: bytes | None = None) -> None:
        super().__init__()
        self._ids = itertools.count(1)
        self.package = package

    async def render_get(self, request: Message) -> Message:
        if self.package is not None and request.opt.uri_path == ("p", "pkg"):
            response = Message(code=Code.CONTENT, payload=self.package, content_format=42)
            response.opt.size2 = len(self.package)
            return response
        return Message(code=Code.NOT_FOUND)

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


async def main(host: str, port: int, package: bytes | None = None) -> None:
    ctx = await aiocoap.Context.create_server_context(BareRoot(package), bind=(host, port), transports=["udp6"])
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
    parser.add_argument("--package", default=None, help="serve this file at /p/pkg")
    args = parser.parse_args()
    try:
        data = open(args.package, "rb").read() if args.package else None
        asyncio.run(main(args.host, args.port, data))
    except KeyboardInterrupt:
        pass
    sys.exit(0)
