"""Client-initiated bootstrap (LwM2M 1.1 TS Core 5.2, TS Transport 6.1) as data: what a
bootstrap server writes, in which order, and what a client accepts while it is being bootstrapped.

Shared by the bootstrap server (``tinymlaas.bootstrap``) and the simulated devices. Sans-IO:

- ``Account``: one LwM2M server account (Security object 0 + Server object 1 instances:
  server URI, security mode, PSK identity and key, short server id, lifetime, binding), with
  ``security_values`` / ``server_values`` giving the resources to write and ``account_of``
  reading one back from a client's values;
- ``plan``: the operations of one bootstrap session after ``POST /bs?ep=`` — Bootstrap-Discover
  of ``/`` (1.1; a 1.0 client answers 4.xx and the plan goes on without it), Bootstrap-Read of the
  Server object (1.1 allows Read only on objects 1 and 2), Bootstrap-Delete of ``/0`` and ``/1``
  (the client keeps its bootstrap account: 5.2.7.5), Bootstrap-Write of the Security and
  Server instances and of the package-signing trust anchor (``/33100/0/12``, when the client
  has the ML Capability object), Bootstrap-Finish;
- ``CLIENT_RULES``: the client side of 5.2.7 as a table from (CoAP method, path depth) to the
  bootstrap operation it is and whether it is allowed; ``finish_problem`` is the check a client
  makes at Bootstrap-Finish (a usable server account, else 4.06).

Security Mode numbers (object 0 resource 2): 0 PSK, 1 RPK, 2 certificate, 3 NoSec, 4 certificate
with EST. Only PSK and NoSec are written by this project.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Mapping

from lwm2m.path import ObjLink, Path, RawString, Value

SECURITY, SERVER, ACL = 0, 1, 2
ML_CAPABILITY, TRUST_ANCHOR_RESOURCE = 33100, 12
TRUST_ANCHOR = Path(ML_CAPABILITY, 0, TRUST_ANCHOR_RESOURCE)
BS_PATH = ("bs",)


class SecurityMode(IntEnum):
    PSK = 0
    RPK = 1
    CERTIFICATE = 2
    NOSEC = 3
    CERTIFICATE_EST = 4


# object 0 resources
URI, IS_BOOTSTRAP, MODE, IDENTITY, SERVER_KEY, SECRET, SHORT_ID = 0, 1, 2, 3, 4, 5, 10
# object 1 resources
S_SHORT_ID, S_LIFETIME, S_STORING, S_BINDING = 0, 1, 6, 7


@dataclass(frozen=True)
class Account:
    server_uri: str
    mode: SecurityMode
    identity: bytes = b""
    secret: bytes = field(default=b"", repr=False)
    short_server_id: int = 1
    lifetime: int = 86400
    binding: str = "U"
    bootstrap: bool = False

    def __post_init__(self) -> None:
        scheme = self.server_uri.split("://", 1)[0]
        if scheme not in ("coap", "coaps"):
            raise ValueError(f"server URI {self.server_uri!r}: expected coap:// or coaps://")
        if (scheme == "coaps") != (self.mode != SecurityMode.NOSEC):
            raise ValueError(f"server URI {self.server_uri!r} does not go with security mode {self.mode.name}")
        if self.mode == SecurityMode.PSK and not (self.identity and self.secret):
            raise ValueError("a PSK account needs an identity and a key")
        if self.mode not in (SecurityMode.PSK, SecurityMode.NOSEC):
            raise ValueError(f"security mode {self.mode.name} is not supported (PSK or NoSec)")

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) of the server URI (5683 / 5684 by default)."""
        rest = self.server_uri.split("://", 1)[1].split("/", 1)[0]
        if rest.startswith("["):
            host, _, port = rest[1:].partition("]")
            port = port.lstrip(":")
        else:
            host, _, port = rest.partition(":")
        return host, int(port) if port else (5684 if self.mode == SecurityMode.PSK else 5683)


def security_values(account: Account) -> dict[int, Value]:
    """Resources of a Security (0) instance for ``account``."""
    values: dict[int, Value] = {URI: account.server_uri, IS_BOOTSTRAP: account.bootstrap, MODE: int(account.mode),
                                IDENTITY: account.identity, SERVER_KEY: b"", SECRET: account.secret}
    if not account.bootstrap:
        values[SHORT_ID] = account.short_server_id
    return values


def server_values(account: Account) -> dict[int, Value]:
    """Resources of a Server (1) instance for ``account``."""
    return {S_SHORT_ID: account.short_server_id, S_LIFETIME: account.lifetime, S_STORING: False,
            S_BINDING: account.binding}


def instance_content(object_id: int, instance_id: int, values: Mapping[int, Value]) -> dict[Path, Value]:
    return {Path(object_id, instance_id, rid): v for rid, v in values.items()}


def _int(v: Value) -> int:
    """An Integer (or Boolean) resource's value; TypeError, as ``int()`` raises, for an Objlnk or a
    string that is not clean text."""
    if isinstance(v, (ObjLink, RawString)):
        raise TypeError(f"{type(v).__name__} {v} is not a number")
    return int(v)


def _opaque(v: Value) -> bytes:
    """An Opaque resource's value (a falsy one reads as no bytes); TypeError for any other kind."""
    if not v:
        return b""
    if not isinstance(v, bytes):
        raise TypeError(f"{type(v).__name__} {v!r} is not Opaque")
    return v


def accounts_of(values: Mapping[Path, Value]) -> list[Account]:
    """Every server account in a client's objects 0 and 1 (bootstrap account included)."""
    by_instance: dict[tuple[int, int | None], dict[int, Value]] = {}
    for p, v in values.items():
        if p.object_id in (SECURITY, SERVER) and p.depth == 3 and p.resource_id is not None:
            by_instance.setdefault((p.object_id, p.instance_id), {})[p.resource_id] = v
    servers = {_int(r.get(S_SHORT_ID, -1)): r for (o, _), r in by_instance.items() if o == SERVER}
    out = []
    for (o, _), r in sorted(by_instance.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        if o != SECURITY:
            continue
        bootstrap = bool(r.get(IS_BOOTSTRAP, False))
        ssid = _int(r.get(SHORT_ID, 0))
        srv = servers.get(ssid, {})
        try:
            out.append(Account(str(r.get(URI, "")), SecurityMode(_int(r.get(MODE, 3))),
                               _opaque(r.get(IDENTITY, b"")), _opaque(r.get(SECRET, b"")),
                               ssid, _int(srv.get(S_LIFETIME, 86400)), str(srv.get(S_BINDING, "U")),
                               bootstrap))
        except ValueError:
            continue  # an unusable instance is not an account
    return out


def server_account(values: Mapping[Path, Value]) -> Account | None:
    """The first LwM2M server account (not the bootstrap one) that has its Server instance."""
    servers = {_int(v) for p, v in values.items()
               if p.object_id == SERVER and p.depth == 3 and p.resource_id == S_SHORT_ID}
    return next((a for a in accounts_of(values) if not a.bootstrap and a.short_server_id in servers), None)


def finish_problem(values: Mapping[Path, Value]) -> str | None:
    """What a client says at Bootstrap-Finish when its configuration is not usable (4.06)."""
    if server_account(values) is None:
        return "no LwM2M server account (Security instance with its Server instance) was written"
    return None


# -- the server side: one session ---------------------------------------------------------

@dataclass(frozen=True)
class Step:
    op: str                       # "discover" | "read" | "delete" | "write" | "finish"
    path: Path | None             # None: the finish resource (/bs)
    content: Mapping[Path, Value] = field(default_factory=dict, repr=False)
    required: bool = True         # a failed optional step (Discover/Read on a 1.0 client) is skipped

    def describe(self) -> str:
        return f"Bootstrap-{self.op.capitalize()}" + (f" {self.path}" if self.path is not None else "")


def plan(account: Account, trust_anchor: bytes | None, *, has_ml_capability: bool | None,
         security_instance: int = 1, server_instance: int = 0) -> tuple[Step, ...]:
    """Write and Finish steps of a session, after Discover told what the client has.

    ``has_ml_capability`` None (no Discover answer) writes the trust anchor and tolerates a
    4.04 from a client without the object."""
    steps = [Step("delete", Path(SECURITY)), Step("delete", Path(SERVER)),
             Step("write", Path(SECURITY, security_instance),
                  instance_content(SECURITY, security_instance, security_values(account))),
             Step("write", Path(SERVER, server_instance),
                  instance_content(SERVER, server_instance, server_values(account)))]
    if trust_anchor and has_ml_capability is not False:
        steps.append(Step("write", TRUST_ANCHOR, {TRUST_ANCHOR: trust_anchor}, required=has_ml_capability is True))
    steps.append(Step("finish", None))
    return tuple(steps)


DISCOVERY: tuple[Step, ...] = (Step("discover", Path(), required=False), Step("read", Path(SERVER), required=False))


def bootstrap_instance(links: Mapping[tuple[int, int], Mapping[str, str | None]]) -> int | None:
    """The Security instance of the bootstrap account in a Bootstrap-Discover answer (the one
    without ``ssid``: 1.1 5.2.7.3), so the DM account goes into another instance."""
    return next((i for (o, i), attrs in links.items() if o == SECURITY and "ssid" not in attrs), None)


def free_security_instance(links: Mapping[tuple[int, int], Mapping[str, str | None]]) -> int:
    bs = bootstrap_instance(links)
    return next(i for i in range(0, 65535) if i != bs)


# -- the client side: which requests are bootstrap operations --------------------------------

@dataclass(frozen=True)
class ClientRule:
    operation: str
    allowed: bool
    why: str = ""


def client_rule(method: str, path: Path, *, discover: bool = False) -> ClientRule:
    """What a request from the bootstrap server is (5.2.7) and whether a client performs it
    (``discover``: a GET with Accept link-format)."""
    if method == "GET" and discover:
        return ClientRule("discover", path.depth <= 1, "" if path.depth <= 1 else
                          "Bootstrap-Discover is on / or an object")
    rule = CLIENT_RULES.get((method, min(path.depth, 3)))
    if rule is None:
        return ClientRule("unknown", False, f"{method} on {path} is not a bootstrap operation")
    if rule.operation == "read" and path.object_id not in (SERVER, ACL):
        return ClientRule("read", False, "Bootstrap-Read is allowed on the Server and Access Control objects only")
    return rule


CLIENT_RULES: dict[tuple[str, int], ClientRule] = {
    ("GET", 0): ClientRule("read", False, "Bootstrap-Read of / is not defined"),
    ("GET", 1): ClientRule("read", True),              # Bootstrap-Read (objects 1 and 2 only)
    ("GET", 2): ClientRule("read", True),
    ("GET", 3): ClientRule("read", False, "Bootstrap-Read of a resource is not defined"),
    ("PUT", 1): ClientRule("write", True),             # Bootstrap-Write of object / instance / resource
    ("PUT", 2): ClientRule("write", True),
    ("PUT", 3): ClientRule("write", True),
    ("DELETE", 0): ClientRule("delete", True),         # everything but the bootstrap account and object 3
    ("DELETE", 1): ClientRule("delete", True),
    ("DELETE", 2): ClientRule("delete", True),
}
