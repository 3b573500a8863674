"""The security settings of one server process, as one frozen object with safe defaults.

Passed to ``LwM2MServer`` (and the bootstrap server); ``tinymlaas serve`` builds it from its
flags. What each setting means is in its comment; the defaults are the secure choice where
there is one: NoSec is accepted only while no device has credentials, and a NoSec Update or
De-register from an address other than the registration's is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict

from lwm2m.dtls.engine import Limits

NoSec = Literal["auto", "on", "off"]
OtherAddress = Literal["refuse", "allow"]
NOSEC_CHOICES: tuple[str, ...] = ("auto", "on", "off")
OTHER_ADDRESS_CHOICES: tuple[str, ...] = ("refuse", "allow")


@dataclass(frozen=True)
class SecuritySettings:
    """The configuration's ``[security]`` section (``tinymlaas.config``; an unknown key is an error)."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    # the LwM2M coaps listener: None = no DTLS (plain CoAP only); port 0 = any free port
    coaps_host: str = "127.0.0.1"
    coaps_port: int | None = None
    # NoSec registrations: "auto" = accepted while no device has DM credentials, "on" = accepted
    # (never for an endpoint that has credentials), "off" = refused
    nosec: NoSec = "auto"
    # a NoSec Update / De-register from another address than the registration's: "refuse" (4.03)
    # or "allow" (Leshan's DefaultAuthorizer behaviour: NAT rebinding moves the registration)
    nosec_other_address: OtherAddress = "refuse"
    # the key that encrypts PSKs in the database (32 random bytes, file mode 0600); None = no
    # credentials can be stored (a server without a data directory)
    key_file: Path | None = None
    # DTLS handshakes: deadline after the cookie exchange, and how many may be in progress
    handshake_timeout_s: float = 10.0
    max_handshakes: int = 2048
    max_sessions: int = 250_000
    # the bootstrap server (TS Core 5.2): None = not started; port 0 = any free port
    bootstrap_host: str = "127.0.0.1"
    bootstrap_port: int | None = None        # NoSec bootstrap (only when nosec allows it)
    bootstrap_coaps_port: int | None = None  # DTLS bootstrap with the device's bootstrap credential
    bootstrap_timeout_s: float = 30.0        # per bootstrap operation sent to the device
    # package-signing key rotation: how long devices are given both keys
    signing_overlap_s: float = 7 * 86400.0

    def __post_init__(self) -> None:
        if self.nosec not in NOSEC_CHOICES:
            raise ValueError(f"nosec={self.nosec!r}: expected one of {', '.join(NOSEC_CHOICES)}")
        if self.nosec_other_address not in OTHER_ADDRESS_CHOICES:
            raise ValueError(f"nosec_other_address={self.nosec_other_address!r}: expected refuse or allow")
        for name in ("coaps_port", "bootstrap_port", "bootstrap_coaps_port"):
            port = getattr(self, name)
            if port is not None and not 0 <= port <= 65535:
                raise ValueError(f"{name}={port}: outside 0..65535")
        if self.handshake_timeout_s <= 0 or self.max_handshakes < 1 or self.max_sessions < 1:
            raise ValueError("handshake_timeout_s, max_handshakes and max_sessions must be positive")
        if self.signing_overlap_s < 0:
            raise ValueError(f"signing_overlap_s={self.signing_overlap_s}: must not be negative")


def limits_of(settings: SecuritySettings) -> Limits:
    """The DTLS engine's bounds from these settings (the LwM2M and the bootstrap coaps listeners)."""
    return Limits(handshake_timeout_s=settings.handshake_timeout_s, max_handshakes=settings.max_handshakes,
                  max_sessions=settings.max_sessions)
