"""Who may Register, Update or De-register which endpoint: the rules as one table.

The facts of a registration-interface request (``Facts``: the operation, the endpoint it is
for, the sender's PSK identity if it came over DTLS and the endpoint that identity is bound
to, whether the endpoint has credentials, whether the registration was made over DTLS, the
addresses, and the policy) go through ``RULES`` in order; the first rule that does not hold
refuses the request with its message (4.03, nothing changes). The rules:

1. over DTLS, the identity's endpoint must be the endpoint of the request (Register) or of
   the registration (Update, De-register): a device cannot act for another;
2. a NoSec request for an endpoint that has credentials is refused (no downgrade to NoSec);
3. NoSec must be accepted at all (setting ``nosec``: off / on / auto = while no device has
   credentials);
4. a NoSec Update / De-register of a registration made over DTLS is refused;
5. a NoSec Update / De-register from another address than the registration's is refused
   unless ``nosec_other_address`` is "allow".

Rule 5 is where this server differs from Leshan: Leshan's ``DefaultAuthorizer`` checks only
endpoints that have security info, so a NoSec Update from any address moves the registration
there (what lets a device behind a rebinding NAT keep its registration, and what lets any
peer that learned or guessed the registration id move or delete it). The default here is
the second concern; "allow" restores Leshan's behaviour for NoSec fleets behind NATs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Facts:
    op: str                         # "register" | "update" | "deregister"
    endpoint: str                   # of the request (Register) or of the registration
    identity: str | None            # the sender's PSK identity as text; None = NoSec
    bound_endpoint: str | None      # the endpoint that identity's credential belongs to
    endpoint_has_credentials: bool
    nosec_accepted: bool
    registration_secured: bool      # Update/De-register: the registration was made over DTLS
    sender: str                     # host:port of the sender
    registered_from: str            # host:port of the registration (Update/De-register)
    other_address_allowed: bool
    registration_id: str = ""


@dataclass(frozen=True)
class Rule:
    holds: Callable[[Facts], bool]
    message: str  # str.format'ed with the facts' fields


def _nosec(f: Facts) -> bool:
    return f.identity is None


RULES: tuple[Rule, ...] = (
    Rule(lambda f: _nosec(f) or f.bound_endpoint == f.endpoint,
         "DTLS identity {identity!r} is bound to endpoint {bound_endpoint!r}, not {endpoint!r}: {op} refused"),
    Rule(lambda f: not _nosec(f) or not f.endpoint_has_credentials,
         "endpoint {endpoint!r} has DTLS credentials: a NoSec {op} is refused"),
    Rule(lambda f: not _nosec(f) or f.nosec_accepted,
         "NoSec {op} refused: this server accepts registrations over DTLS (coaps) only"),
    Rule(lambda f: not _nosec(f) or f.op == "register" or not f.registration_secured,
         "registration rd/{registration_id} was made over DTLS: a NoSec {op} is refused"),
    Rule(lambda f: not _nosec(f) or f.op == "register" or f.sender == f.registered_from or f.other_address_allowed,
         "NoSec {op} of rd/{registration_id} from {sender} refused: the registration belongs to {registered_from}"),
)


def refusal(facts: Facts) -> str | None:
    """The message of the first rule the request breaks, or None when it is allowed."""
    for rule in RULES:
        if not rule.holds(facts):
            return rule.message.format(**facts.__dict__)
    return None
