"""``Security``: the LwM2M server's DTLS listener, its credentials, and the checks it makes.

Owned by ``LwM2MServer`` (``server.security``). ``start`` loads the credentials and, when a
coaps port is configured, adds a DTLS-PSK listener to the server's CoAP context (the same
resources answer on it; keys come from the ``dm`` credentials). The registration interface
asks ``authorize`` before it changes anything (the rules are ``authorizer.RULES``);
``DeviceClient`` asks ``route`` where a request to a device goes: over the device's DTLS
session when it has credentials (never in clear), else as before. Revoking a credential
closes that identity's sessions and ends its registration.

A server feature (like registration or observation): the credentials, the authorizer's rules and
the settings it applies live in ``tinymlaas.security``, which knows nothing of the server.
What it does not do: the bootstrap server (``tinymlaas.bootstrap``), package signing keys
(``tinymlaas.deploy.signing``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from aiocoap import Code, Message

from lwm2m.dtls.coaps import CoapsAddress, CoapsServer, add_server
from lwm2m.errors import Forbidden, LwM2MError
from tinymlaas.security.authorizer import Facts, refusal
from tinymlaas.security.credentials import Credential, Credentials
from tinymlaas.security.settings import SecuritySettings, limits_of

from tinymlaas.server.registration import address_of
from tinymlaas.server.registrations import Registration, removal_rows

if TYPE_CHECKING:
    from tinymlaas.server.core import Core

log = logging.getLogger(__name__)


class NoSession(LwM2MError):
    """A device with credentials and no live DTLS session: it has to connect first (5.04)."""

    code = Code.GATEWAY_TIMEOUT


class Security:
    def __init__(self, server: "Core", settings: SecuritySettings) -> None:
        self.server = server
        self.settings = settings
        self.credentials = Credentials(server.store, settings.key_file)
        self.credentials.listeners.append(self._changed)
        self.coaps: CoapsServer | None = None

    async def start(self, context: Any, host: str) -> None:
        await self.credentials.load()
        if self.settings.coaps_port is not None:
            bind = (self.settings.coaps_host or host, self.settings.coaps_port)
            self.coaps = await add_server(context, bind, self.credentials.lookup("dm"),
                                          limits=limits_of(self.settings), name="LwM2M coaps")
            log.info("LwM2M server on coaps://%s:%d (DTLS-PSK)", *self.coaps.address)

    @property
    def coaps_address(self) -> tuple[str, int] | None:
        return self.coaps.address if self.coaps is not None else None

    @property
    def nosec_accepted(self) -> bool:
        mode = self.settings.nosec
        return mode == "on" or (mode == "auto" and not self.credentials.any_dm)

    # -- the registration interface --------------------------------------------------------

    def authorize(self, op: str, request: Message, endpoint: str, reg: Registration | None = None) -> None:
        """Raise Forbidden (4.03) if ``request`` may not ``op`` ``endpoint`` (``reg``: its registration)."""
        remote = request.remote
        identity = remote.identity if isinstance(remote, CoapsAddress) else None
        facts = Facts(
            op=op, endpoint=endpoint,
            identity=identity.decode("utf-8", "replace") if identity is not None else None,
            bound_endpoint=self.credentials.endpoint_of(identity) if identity is not None else None,
            endpoint_has_credentials=self.credentials.has(endpoint),
            nosec_accepted=self.nosec_accepted,
            registration_secured=reg is not None and isinstance(reg.remote, CoapsAddress),
            sender=address_of(remote), registered_from=reg.address if reg is not None else "",
            other_address_allowed=self.settings.nosec_other_address == "allow",
            registration_id=reg.id if reg is not None else "")
        message = refusal(facts)
        if message is not None:
            log.info("refused: %s", message)
            raise Forbidden(message)

    # -- device management ------------------------------------------------------------------

    def route(self, msg: Message, reg: Registration) -> None:
        """Address ``msg`` to the device: its DTLS session if it has credentials, else its UDP address."""
        cred = self.credentials.get(reg.endpoint)
        remote = reg.remote
        if cred is None and not isinstance(remote, CoapsAddress):
            if remote is not None:
                msg.remote = remote
            else:
                msg.set_request_uri(f"coap://{reg.address}")
            return
        if isinstance(remote, CoapsAddress) and remote.alive:
            msg.remote = remote
            return
        if not isinstance(remote, CoapsAddress) and remote is not None:
            raise Forbidden(f"{reg.endpoint} has DTLS credentials but is registered over NoSec: it must "
                            "register again over DTLS")
        identity = remote.identity if isinstance(remote, CoapsAddress) else (cred.identity if cred else None)
        found = self.coaps.session_at(reg.address, identity) if self.coaps is not None else None
        if found is None:
            raise NoSession(f"no DTLS session with {reg.endpoint} ({reg.address}): the device has to connect "
                            "again (a server does not start DTLS handshakes)")
        msg.remote = found

    def secured(self, endpoint: str) -> bool:
        reg = self.server.registrations.by_endpoint.get(endpoint)
        return self.credentials.has(endpoint) or (reg is not None and isinstance(reg.remote, CoapsAddress))

    def package_base(self, endpoint: str | None) -> str | None:
        """``coaps://host:port`` for a device that talks DTLS (its downloads stay in its session)."""
        if endpoint is None or self.coaps is None or not self.secured(endpoint):
            return None
        host, port = self.coaps.address
        return f"coaps://{'[' + host + ']' if ':' in host else host}:{port}"

    # -- credential changes -----------------------------------------------------------------

    def _changed(self, action: str, cred: Credential) -> None:
        if cred.purpose != "dm" or action not in ("revoked", "removed"):
            return
        if self.coaps is not None:
            for peer in [p for p in self.coaps.engine.peers.values() if p.identity == cred.identity]:
                self.coaps.engine.close(peer, f"credential {action}")
        reg = self.server.registrations.by_endpoint.get(cred.endpoint)
        if reg is not None and action == "revoked":
            self.server.spawn(self._end(reg), name=f"end registration of {cred.endpoint}")

    async def _end(self, reg: Registration) -> None:
        if self.server.registrations.by_id.get(reg.id) is not reg:
            return
        await self.server.store.put(*removal_rows(reg, "revoked"))
        self.server.registrations.remove(reg)
        self.server.on_deregistered(reg, "revoked")
