"""The client side of client-initiated bootstrap (LwM2M 1.1 TS Core 5.2) for a simulated device.

``bootstrap(device)`` opens a session to the device's bootstrap server (DTLS-PSK with its
bootstrap credential, or NoSec), sends ``POST /bs?ep=NAME``, and then serves the bootstrap
server's operations on the device's object tree until Bootstrap-Finish: Bootstrap-Discover
(``/`` or an object, in link format with ``ssid``/``uri`` of the server accounts, 1.1 5.2.7.3),
Bootstrap-Read (objects 1 and 2 only), Bootstrap-Write (an instance is created or replaced; a
resource set; the trust anchor goes to the device's package-signing key), Bootstrap-Delete
(``/``, an object or an instance; the bootstrap account and the Device object stay), and
Bootstrap-Finish (4.06 when no usable LwM2M server account was written). What a request is
and whether it is allowed is ``lwm2m.bootstrap.client_rule``. Writes here bypass the object
model's access rights (objects 0 and 1 are the bootstrap server's) but not its types.

It returns the LwM2M server account the device then registers with; the bootstrap session
is closed. It does not do server-initiated bootstrap, nor the Access Control object.
"""

from __future__ import annotations

import asyncio
import logging

import aiocoap
from aiocoap import Code, Message
from aiocoap.resource import PathCapable, Resource

from lwm2m import bootstrap as bs
from lwm2m import codecs
from lwm2m.dtls import coaps
from lwm2m.errors import BadRequest, LwM2MError, MethodNotAllowed, NotAcceptable, NotFound
from lwm2m.link_format import Link, format_links
from lwm2m.numbers import ContentFormat
from lwm2m.path import Path
from lwm2m.transport import response_within
from simulator.host import Host

log = logging.getLogger(__name__)
KEEP = frozenset({3})
FINISH_GRACE_S = 0.05  # objects a Bootstrap-Delete of "/" leaves alone (besides the bootstrap account)


class BootstrapFailed(LwM2MError):
    pass


class BootstrapSite(Resource, PathCapable):  # type: ignore[misc]
    def __init__(self, device: Host, finished: "asyncio.Future[None]") -> None:
        super().__init__()
        self.device, self.tree, self.finished = device, device.tree, finished
        self.operations: list[str] = []

    async def render(self, request: Message) -> Message:
        try:
            return self.handle(request)
        except LwM2MError as exc:
            return Message(code=exc.code, payload=exc.message.encode()[:256])

    def handle(self, request: Message) -> Message:
        if tuple(request.opt.uri_path) == bs.BS_PATH:
            return self.finish(request)
        path = Path.parse("/" + "/".join(request.opt.uri_path))
        accept = request.opt.accept
        rule = bs.client_rule(_method(request.code), path,
                              discover=accept is not None and int(accept) == ContentFormat.LINK)
        if not rule.allowed:
            raise MethodNotAllowed(rule.why or f"{request.code} {path} is not allowed during bootstrap")
        self.operations.append(f"{rule.operation} {path}")
        return HANDLERS[rule.operation](self, request, path)

    # -- operations ---------------------------------------------------------------------------

    def _bootstrap_instance(self) -> int | None:
        return next((i for (o, i) in self.tree.instances
                     if o == bs.SECURITY and self.tree.values.get(Path(o, i, bs.IS_BOOTSTRAP))), None)

    def discover(self, request: Message, path: Path) -> Message:
        links = [Link("/", (("lwm2m", self.device.version),))] if path.depth == 0 else []
        for o, i in sorted(self.tree.instances):
            if path.depth and o != path.object_id:
                continue
            attrs: tuple[tuple[str, str | None], ...] = ()
            values = self.tree.values
            if o == bs.SECURITY and not values.get(Path(o, i, bs.IS_BOOTSTRAP)):
                attrs = (("ssid", str(values.get(Path(o, i, bs.SHORT_ID), 0))),
                         ("uri", str(values.get(Path(o, i, bs.URI), ""))))
            elif o == bs.SERVER:
                attrs = (("ssid", str(values.get(Path(o, i, bs.S_SHORT_ID), 0))),)
            links.append(Link(f"/{o}/{i}", attrs))
        return Message(code=Code.CONTENT, content_format=int(ContentFormat.LINK), payload=format_links(links).encode())

    def read(self, request: Message, path: Path) -> Message:
        fmt = int(request.opt.accept) if request.opt.accept is not None else int(ContentFormat.TLV)
        content = {p: v for p, v in self.tree.values.items() if p.startswith(path)}
        if not content and path.depth == 1:  # an object without instances: an empty read
            return Message(code=Code.CONTENT, content_format=fmt, payload=b"")
        if not content:
            raise NotFound(f"nothing at {path}")
        return Message(code=Code.CONTENT, content_format=fmt,
                       payload=codecs.encode(fmt, path, content, self.tree.registry))

    def write(self, request: Message, path: Path) -> Message:
        cf = request.opt.content_format
        if cf is None:
            raise BadRequest("Bootstrap-Write without Content-Format")
        content = codecs.decode(int(cf), path, request.payload, self.tree.registry)
        if path.depth < 2:
            raise MethodNotAllowed("Bootstrap-Write of a whole object is not supported by this client")
        for p, v in content.items():
            if not p.startswith(path):
                raise BadRequest(f"value for {p} outside the written path {path}")
            self.tree.registry.check_value(p, v, for_write=False)
        key = (path.object_id, path.instance_id)
        if path.depth == 2:  # an instance: created, or replaced as a whole
            for p in [p for p in self.tree.values if p.startswith(path)]:
                del self.tree.values[p]
        self.tree.instances.add(key)  # type: ignore[arg-type]
        for p, v in content.items():
            handler = self.tree.write_handlers.get(p)
            if p == bs.TRUST_ANCHOR:
                self.device.trust_anchor_from_bootstrap(bytes(v))  # type: ignore[arg-type]
            elif handler is not None:
                handler(v)
            else:
                self.tree.values[p] = v
        return Message(code=Code.CHANGED)

    def delete(self, request: Message, path: Path) -> Message:
        keep = self._bootstrap_instance()
        doomed = [(o, i) for (o, i) in sorted(self.tree.instances)
                  if (path.depth == 0 and o not in KEEP or o == path.object_id and
                      (path.depth == 1 or i == path.instance_id))
                  and not (o == bs.SECURITY and i == keep)]
        if path.depth == 2 and not doomed and (path.object_id, path.instance_id) not in self.tree.instances:
            raise NotFound(f"no instance {path}")
        for o, i in doomed:
            self.tree.delete(Path(o, i))
        return Message(code=Code.DELETED)

    def finish(self, request: Message) -> Message:
        if request.code != Code.POST:
            raise MethodNotAllowed("Bootstrap-Finish is a POST to /bs")
        problem = bs.finish_problem(self.tree.values)
        if problem is not None:
            raise NotAcceptable(f"Bootstrap-Finish refused: {problem}")
        if not self.finished.done():
            self.finished.set_result(None)
        return Message(code=Code.CHANGED)


def _method(code: Code) -> str:
    return {Code.GET: "GET", Code.PUT: "PUT", Code.POST: "POST", Code.DELETE: "DELETE"}.get(code, str(code))


HANDLERS = {"discover": BootstrapSite.discover, "read": BootstrapSite.read, "write": BootstrapSite.write,
            "delete": BootstrapSite.delete}


async def bootstrap(device: Host, timeout: float = 30.0) -> bs.Account:
    """Bootstrap ``device`` from its bootstrap server; its LwM2M server account."""
    sec = device.security
    assert sec.bootstrap is not None
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()
    site = BootstrapSite(device, finished)
    host, port = sec.bootstrap
    if sec.bootstrap_psk is not None:
        ctx, _ = await coaps.client_context(site, (host, port), sec.bootstrap_psk.identity, sec.bootstrap_psk.key,
                                            name=f"{device.endpoint} bootstrap")
        scheme = "coaps"
    else:
        ctx = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", 0), transports=["udp6"])
        scheme = "coap"
    try:
        msg = Message(code=Code.POST, uri=f"{scheme}://{host}:{port}/bs")
        msg.opt.uri_query = (f"ep={device.endpoint}",)
        try:
            resp = await response_within(ctx.request(msg), timeout)
        except (asyncio.TimeoutError, aiocoap.error.Error) as exc:
            raise BootstrapFailed(f"{device.endpoint}: Bootstrap-Request to {host}:{port} failed: "
                                  f"{type(exc).__name__} {exc}") from None
        if resp.code != Code.CHANGED:
            raise BootstrapFailed(f"{device.endpoint}: Bootstrap-Request refused with {resp.code.dotted}: "
                                  f"{resp.payload.decode(errors='replace')}")
        try:
            await asyncio.wait_for(asyncio.shield(finished), timeout)
        except asyncio.TimeoutError:
            raise BootstrapFailed(f"{device.endpoint}: no Bootstrap-Finish within {timeout:g} s "
                                  f"(got: {', '.join(site.operations) or 'nothing'})") from None
        await asyncio.sleep(FINISH_GRACE_S)  # the 2.04 to Bootstrap-Finish leaves before the session closes
    finally:
        await ctx.shutdown()
    account = bs.server_account(device.tree.values)
    assert account is not None  # Finish checked it
    device.bootstraps += 1
    return account
