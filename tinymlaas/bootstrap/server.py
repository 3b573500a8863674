"""The LwM2M bootstrap server (client-initiated bootstrap, TS Core 1.1 5.2).

A device sends ``POST /bs?ep=NAME`` (over DTLS with its ``bootstrap`` credential on the
bootstrap coaps port, or over NoSec where that is accepted); the server answers 2.04 and then,
on the same session, runs the steps of ``lwm2m.bootstrap``: Bootstrap-Discover ``/`` and
Bootstrap-Read ``/1`` (1.1; skipped when a 1.0 client refuses them), Bootstrap-Delete ``/0`` and
``/1``, Bootstrap-Write of the Security instance (server URI, security mode, the device's PSK
identity and key from its ``dm`` credential: a pending rotated key, the current key, or a new
one created now), of the Server instance, and of the package-signing trust anchor
(``/33100/0/12``) when the device has the ML Capability object; then Bootstrap-Finish. At a 2.04
Finish a pending key becomes the device's key. What is written comes from the endpoint's
configuration (``configs``: endpoint, group or default). Every session ends in one
``bootstrap`` event (steps, outcome, never a key).

Who may bootstrap: the rules of ``tinymlaas.security.authorizer`` applied to ``bootstrap``
credentials (an identity bootstraps only its own endpoint; NoSec only where accepted and only
for endpoints without a bootstrap credential). A request for an endpoint without a
configuration gets 4.04. Over NoSec a PSK is written only when it is created for that session
(an endpoint without a DM credential: whoever asks first gets it, so NoSec bootstrap belongs on
a trusted network); an endpoint that has a DM credential (active, pending or revoked) gets 4.03,
because any UDP peer can send ``POST /bs?ep=NAME`` and would otherwise be given that key.
It does not do server-initiated bootstrap or EST/certificates.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import aiocoap
from aiocoap import Code, Message
from aiocoap.resource import PathCapable, Resource
from sqlalchemy import insert

from lwm2m import bootstrap as bs
from lwm2m.dtls.coaps import CoapsAddress, CoapsServer, add_server
from lwm2m.errors import BadRequest, Forbidden, LwM2MError, NotFound
from lwm2m.model import ObjectRegistry, default_registry
from lwm2m.numbers import ContentFormat
from lwm2m.path import Path
from lwm2m.transport import response_within
from tinymlaas.bootstrap import configs
from tinymlaas.security.authorizer import Facts, refusal
from tinymlaas.security.credentials import Credentials
from tinymlaas.security.settings import limits_of
from tinymlaas.security.settings import SecuritySettings
from tinymlaas.server import operations as ops
from tinymlaas.server.registration import address_of, parse_query
from tinymlaas.store.store import Store
from tinymlaas.store.tables import EVENTS

log = logging.getLogger(__name__)
FORMAT = ContentFormat.TLV  # every LwM2M version has it; Wakaama and the simulator decode it


@dataclass(frozen=True)
class BootstrapDelete(ops.Operation):
    name: ClassVar[str] = "Bootstrap-Delete"
    success: ClassVar[frozenset[Code]] = frozenset({Code.DELETED})

    def request(self, fmt: ContentFormat, registry: ObjectRegistry) -> Message:
        return Message(code=Code.DELETE)


@dataclass(frozen=True)
class BootstrapFinish(ops.Operation):
    name: ClassVar[str] = "Bootstrap-Finish"
    success: ClassVar[frozenset[Code]] = frozenset({Code.CHANGED})

    def request(self, fmt: ContentFormat, registry: ObjectRegistry) -> Message:
        return Message(code=Code.POST)


def operation(step: bs.Step) -> ops.Operation:
    if step.op == "discover":
        return ops.Discover(step.path or Path())
    if step.op == "read":
        return ops.Read(step.path or Path())
    if step.op == "delete":
        return BootstrapDelete(step.path or Path())
    if step.op == "write":
        return ops.Write(step.path or Path(), dict(step.content), replace=True)
    return BootstrapFinish(Path())


class Root(Resource, PathCapable):  # type: ignore[misc]
    def __init__(self, server: "BootstrapServer") -> None:
        super().__init__()
        self.server = server

    async def render(self, request: Message) -> Message:
        if tuple(request.opt.uri_path) != bs.BS_PATH:
            return Message(code=Code.NOT_FOUND, payload=b"the bootstrap server has /bs only")
        if request.code != Code.POST:
            return Message(code=Code.METHOD_NOT_ALLOWED, payload=b"Bootstrap-Request is a POST to /bs")
        try:
            return await self.server.request(request)
        except LwM2MError as exc:
            return Message(code=exc.code, payload=exc.message.encode()[:512])


class BootstrapServer:
    def __init__(self, store: Store, credentials: Credentials, settings: SecuritySettings, *,
                 trust_anchor: Callable[[], bytes | None] = lambda: None, objects: ObjectRegistry | None = None,
                 registrations: Any = None) -> None:
        self.store, self.credentials, self.settings = store, credentials, settings
        self.trust_anchor = trust_anchor
        self.objects = objects or default_registry()
        self.registrations = registrations
        self.context: aiocoap.Context | None = None
        self.coaps: CoapsServer | None = None
        self.address: tuple[str, int] | None = None
        self.sessions: dict[str, asyncio.Task[dict[str, Any]]] = {}
        self.outcomes: dict[str, dict[str, Any]] = {}  # last session per endpoint (as in its event)
        self.finished: list[Callable[[str, dict[str, Any]], None]] = []

    async def start(self) -> None:
        s = self.settings
        site = Root(self)
        if s.bootstrap_port is not None:
            self.context = await aiocoap.Context.create_server_context(site, bind=(s.bootstrap_host, s.bootstrap_port),
                                                                       transports=["udp6"])
            iface = self.context.request_interfaces[0].token_interface.message_interface
            self.address = (s.bootstrap_host, iface.transport.get_extra_info("socket").getsockname()[1])
        else:
            self.context = aiocoap.Context(loop=asyncio.get_running_loop(), serversite=site)
        if s.bootstrap_coaps_port is not None:
            self.coaps = await add_server(self.context, (s.bootstrap_host, s.bootstrap_coaps_port),
                                          self.credentials.lookup("bootstrap"), limits=limits_of(s),
                                          name="bootstrap coaps")
        log.info("bootstrap server on %s", ", ".join(self.uris()))

    def uris(self) -> list[str]:
        out = [f"coap://{self.address[0]}:{self.address[1]}"] if self.address else []
        if self.coaps is not None:
            out.append("coaps://%s:%d" % self.coaps.address)
        return out

    async def stop(self) -> None:
        for task in list(self.sessions.values()):
            task.cancel()
        if self.context is not None:
            await self.context.shutdown()

    # -- Bootstrap-Request ----------------------------------------------------------------------

    def _authorize(self, request: Message, endpoint: str) -> None:
        remote = request.remote
        identity = remote.identity if isinstance(remote, CoapsAddress) else None
        mode = self.settings.nosec
        any_bs = any(p == "bootstrap" for _, p in self.credentials.by_endpoint)
        message = refusal(Facts(
            op="bootstrap", endpoint=endpoint,
            identity=identity.decode("utf-8", "replace") if identity is not None else None,
            bound_endpoint=self.credentials.endpoint_of(identity, "bootstrap") if identity is not None else None,
            endpoint_has_credentials=self.credentials.has(endpoint, "bootstrap"),
            nosec_accepted=mode == "on" or (mode == "auto" and not any_bs),
            registration_secured=False, sender=address_of(remote), registered_from="",
            other_address_allowed=True))
        if message is not None:
            log.info("bootstrap refused: %s", message)
            raise Forbidden(message)

    async def request(self, request: Message) -> Message:
        params = parse_query(tuple(q for q in request.opt.uri_query if not q.startswith("pct=")))
        endpoint = params.endpoint
        if endpoint is None:
            raise BadRequest("Bootstrap-Request without the mandatory query parameter ep")
        self._authorize(request, endpoint)
        config = await configs.resolve(self.store, endpoint, getattr(self.registrations, "by_endpoint", None))
        if config is None:
            raise NotFound(f"no bootstrap configuration for endpoint {endpoint!r} (nor a group's or a default)")
        if (config.mode == bs.SecurityMode.PSK and not isinstance(request.remote, CoapsAddress)
                and self.credentials.has(endpoint, "dm")):
            message = (f"endpoint {endpoint!r} has a DTLS credential: its key is never sent over NoSec "
                       "(bootstrap over coaps with its bootstrap credential)")
            log.info("bootstrap refused: %s", message)
            raise Forbidden(message)
        old = self.sessions.pop(endpoint, None)
        if old is not None:
            old.cancel()
        task = asyncio.get_running_loop().create_task(self._session(endpoint, request.remote, config),
                                                      name=f"bootstrap {endpoint}")
        self.sessions[endpoint] = task

        def forget(done: asyncio.Task[dict[str, Any]]) -> None:
            if self.sessions.get(endpoint) is done:
                del self.sessions[endpoint]
        task.add_done_callback(forget)
        return Message(code=Code.CHANGED)

    # -- the session ------------------------------------------------------------------------------

    async def _send(self, remote: Any, step: bs.Step) -> Any:
        op = operation(step)
        msg = op.request(FORMAT, self.objects)
        msg.remote = remote
        msg.opt.uri_path = bs.BS_PATH if step.op == "finish" else (step.path or Path()).uri_path
        assert self.context is not None
        response = await response_within(self.context.request(msg), self.settings.bootstrap_timeout_s)
        op.check(response)
        return op.result(response, self.objects)

    async def _session(self, endpoint: str, remote: Any, config: configs.BootstrapConfig) -> dict[str, Any]:
        await asyncio.sleep(0)  # the 2.04 to the Bootstrap-Request goes out first
        done: list[str] = []
        outcome: dict[str, Any] = {"state": "running", "config": f"{config.scope}:{config.target}",
                                   "server_uri": config.server_uri, "steps": done, "started_at": time.time()}
        try:
            links: dict[tuple[int, int], dict[str, str | None]] = {}
            discovered = False
            for step in bs.DISCOVERY:
                try:
                    result = await self._send(remote, step)
                except ops.DeviceError as exc:
                    done.append(f"{step.describe()}: {exc.code.dotted} (skipped)")
                    continue
                done.append(step.describe())
                if step.op == "discover":
                    discovered, links = True, instances_of(result)
            identity, secret = b"", b""
            if config.mode == bs.SecurityMode.PSK:
                cred = await self.credentials.provision(endpoint)
                identity, secret = cred.identity, (cred.pending or cred.key or b"")
            has_ml = any(o == bs.ML_CAPABILITY for o, _ in links) if discovered else None
            steps = bs.plan(config.account(identity, secret), self.trust_anchor() if config.trust_anchor else None,
                            has_ml_capability=has_ml, security_instance=bs.free_security_instance(links))
            for step in steps:
                try:
                    await self._send(remote, step)
                except ops.DeviceError as exc:
                    if step.required or exc.code != Code.NOT_FOUND:
                        raise
                    done.append(f"{step.describe()}: {exc.code.dotted} (skipped)")
                    continue
                done.append(step.describe())
            if config.mode == bs.SecurityMode.PSK:
                await self.credentials.promote(endpoint)
            outcome["state"] = "finished"
        except asyncio.CancelledError:
            outcome.update(state="cancelled", error="a new Bootstrap-Request from the device, or shutdown")
            raise
        except asyncio.TimeoutError:
            outcome.update(state="failed", error=f"no answer within {self.settings.bootstrap_timeout_s:g} s "
                                                 f"after: {', '.join(done) or 'the Bootstrap-Request'}")
        except (LwM2MError, aiocoap.error.Error) as exc:
            outcome.update(state="failed", error=str(exc))
        finally:
            outcome["finished_at"] = time.time()
            self.outcomes[endpoint] = outcome
            try:
                await asyncio.shield(self._record(endpoint, outcome))
            except Exception:
                log.exception("bootstrap event for %s not written", endpoint)
            for listener in self.finished:
                listener(endpoint, outcome)
        if outcome["state"] == "failed":
            log.warning("bootstrap of %s failed: %s", endpoint, outcome["error"])
        return outcome

    async def _record(self, endpoint: str, outcome: dict[str, Any]) -> None:
        detail = {k: v for k, v in outcome.items() if k != "started_at"}
        await self.store.write(lambda c: c.execute(insert(EVENTS).values(
            ts=time.time(), endpoint=endpoint, kind="bootstrap", detail=detail)))

    async def wait(self, endpoint: str, timeout: float = 30.0) -> dict[str, Any]:
        """The outcome of ``endpoint``'s session in progress (or its last one)."""
        task = self.sessions.get(endpoint)
        if task is not None:
            return await asyncio.wait_for(asyncio.shield(task), timeout)
        if endpoint in self.outcomes:
            return self.outcomes[endpoint]
        raise NotFound(f"{endpoint!r} has not bootstrapped")


def instances_of(links: Any) -> dict[tuple[int, int], dict[str, str | None]]:
    """Object instances and their attributes in a Bootstrap-Discover answer."""
    out: dict[tuple[int, int], dict[str, str | None]] = {}
    for link in links:
        parts = link.uri.strip("/").split("/")
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            out[(int(parts[0]), int(parts[1]))] = dict(link.attributes)
    return out


async def start_bootstrap(server: Any, trust_anchor: Callable[[], bytes | None]) -> BootstrapServer | None:
    """The bootstrap server beside ``server`` (its store and credentials), if a port is configured."""
    settings = server.security.settings
    if settings.bootstrap_port is None and settings.bootstrap_coaps_port is None:
        return None
    bootstrap = BootstrapServer(server.store, server.security.credentials, settings, trust_anchor=trust_anchor,
                                objects=server.objects, registrations=server.registrations)
    await bootstrap.start()
    return bootstrap
