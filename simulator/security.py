"""A simulated device's security: its credentials, its bootstrap server, and who may change its
package-signing trust anchor.

``DeviceSecurity`` is what the factory put in the device: a DTLS-PSK credential for its LwM2M
server (or none: NoSec), and/or a bootstrap server with its own credential. ``security_instance``
is the Security object (0) instance that describes the first server the device talks to.

``anchor_write_allowed`` is the device's rule for writes to ``/33100/0/12`` (the trust anchor
its package signatures are checked against) outside bootstrap (the bootstrap interface,
``simulator.bootstrap``, writes it during a bootstrap session): only its own LwM2M server may,
over its DTLS session when it has one; a NoSec device accepts it from its server's address
only (on a real network a source address can be spoofed: NoSec devices should get the anchor
at bootstrap). Anyone else gets 4.01 Unauthorized and the anchor does not change.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from lwm2m.bootstrap import TRUST_ANCHOR, Account, SecurityMode, security_values
from lwm2m.dtls.coaps import CoapsAddress
from lwm2m.dtls.engine import unmapped
from lwm2m.path import Path, Value


@dataclass(frozen=True)
class Psk:
    identity: bytes
    key: bytes = field(repr=False)


@dataclass(frozen=True)
class DeviceSecurity:
    psk: Psk | None = None                      # for the LwM2M server (factory-provisioned)
    bootstrap: tuple[str, int] | None = None    # the bootstrap server, if the device bootstraps
    bootstrap_psk: Psk | None = None            # its bootstrap credential (None: NoSec bootstrap)

    def first_account(self, server: tuple[str, int]) -> Account:
        """The account in Security instance 0 from the factory: bootstrap server, or LwM2M server."""
        host, port = self.bootstrap or server
        cred = self.bootstrap_psk if self.bootstrap is not None else self.psk
        scheme = "coaps" if cred is not None else "coap"
        return Account(f"{scheme}://{host}:{port}", SecurityMode.PSK if cred else SecurityMode.NOSEC,
                       cred.identity if cred else b"", cred.key if cred else b"", short_server_id=1,
                       bootstrap=self.bootstrap is not None)


def security_instance(security: DeviceSecurity, server: tuple[str, int]) -> dict[int, Value]:
    return security_values(security.first_account(server))


def touches_anchor(path: Path, content: Mapping[Path, Value]) -> bool:
    return path.startswith(TRUST_ANCHOR) or any(p.startswith(TRUST_ANCHOR) for p in content)


def anchor_write_allowed(request: Any, server: tuple[str, int], secured_by: Any) -> bool:
    """Whether ``request`` comes from the device's own LwM2M server: over its DTLS session
    (``secured_by``: the device's coaps interface) or, for a NoSec device, from the server's address."""
    remote = request.remote
    if secured_by is not None:
        return isinstance(remote, CoapsAddress) and remote.interface is secured_by and remote.alive
    sockaddr = getattr(remote, "sockaddr", None)
    if sockaddr is None or isinstance(remote, CoapsAddress):
        return False
    return (unmapped(str(sockaddr[0])), int(sockaddr[1])) == (unmapped(server[0]), server[1])


def read_credentials_csv(text: str) -> dict[str, dict[str, Psk]]:
    """endpoint -> purpose ("dm" | "bootstrap") -> Psk, from the CSV a production batch is
    imported with on the server (``endpoint,identity,key[,purpose]``, keys in hex)."""
    out: dict[str, dict[str, Psk]] = {}
    for row in csv.DictReader(io.StringIO(text)):
        endpoint = (row.get("endpoint") or "").strip()
        if not endpoint:
            continue
        purpose = (row.get("purpose") or "dm").strip()
        out.setdefault(endpoint, {})[purpose] = Psk((row.get("identity") or endpoint).strip().encode(),
                                                    bytes.fromhex((row.get("key") or "").strip()))
    return out


def fleet_security(table: Mapping[str, Mapping[str, Psk]], bootstrap: tuple[str, int] | None = None
                   ) -> Callable[[str], DeviceSecurity]:
    """What the factory put in each device of a batch: its DM credential, or its bootstrap
    server and bootstrap credential."""
    def security(endpoint: str) -> DeviceSecurity:
        creds = table.get(endpoint, {})
        if bootstrap is not None:
            return DeviceSecurity(bootstrap=bootstrap, bootstrap_psk=creds.get("bootstrap"))
        return DeviceSecurity(psk=creds.get("dm"))
    return security
