"""The server's bounds on what peers can make it hold or do, and the rate limits that enforce them.

``Limits`` is one frozen record of every bound, each with a safe default (units in the field
names); the server, the admin API and the model registry read it, nothing else decides a
bound. What the bounds guard:

- Block1 (requests a device sends in blocks, RFC 7959): the assembled body (``Size1`` is
  honoured, so an announced oversize is refused at block 0), the half-open transfers per
  source address and in total (the oldest is evicted), how long one may stay half open;
- Block2 (answers a device sends in blocks): bytes and seconds per transfer;
- requests in flight to one device, and how many more may wait for a slot;
- registrations per source, and Update/De-register to registration ids that do not exist
  per source (token buckets; refused with 4.29 and a Max-Age saying when to come back);
- retention of device rows nobody manages; upload sizes of the admin API; the largest tensor
  a model may declare.

``Admission`` is the registration interface's gate (``register``, ``unknown``, ``changing``):
today per-source rate limits; DTLS identity binding and the NoSec Update/De-register policy
plug in as further checks in the same three places.

A "source" is the peer's IP address (not its port: a second port is free, a second address
is not). Token-bucket state is kept for at most ``rate_sources`` sources (least recently seen
evicted), so a spoofing peer cannot grow it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator

from aiocoap import numbers
from pydantic import ConfigDict

from lwm2m.errors import LwM2MError, NotFound

if TYPE_CHECKING:
    from tinymlaas.server.metrics import Metrics

KIB = 1024
MIB = 1024 * KIB
DAY_S = 86400.0


@dataclass(frozen=True)
class Limits:
    """Every bound the server enforces. Defaults are safe for a fleet of tens of thousands.
    It is the configuration's ``[limits]`` section (``tinymlaas.config``; an unknown key is an error)."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    # Block1: requests assembled from blocks (registrations are the only such requests today).
    block1_max_bytes: int = 16 * KIB
    block1_per_source: int = 16
    block1_total: int = 512
    block1_timeout_s: float = 93.0  # RFC 7252 MAX_TRANSMIT_WAIT, as aiocoap's own spool
    # Block2: answers from devices.
    block2_max_bytes: int = 1 * MIB
    block2_max_s: float = 60.0
    # Requests to one device.
    device_in_flight: int = 4
    device_waiting: int = 64
    # Registration interface rate limits, per source address (token buckets).
    registrations_burst: int = 10_000
    registrations_per_s: float = 100.0
    unknown_id_burst: int = 1_000
    unknown_id_per_s: float = 50.0
    rate_sources: int = 65_536
    # Logging of junk input: one line per source per interval (the rest counted).
    junk_log_interval_s: float = 60.0
    # Retention of device rows (see ``retention``).
    device_retention_s: float = 30 * DAY_S
    junk_device_retention_s: float = 1 * DAY_S
    retention_sweep_s: float = 3600.0
    # Admin API.
    api_body_max_bytes: int = 64 * MIB
    object_upload_max_bytes: int = 1 * MIB
    # Models: the largest tensor (weights or activation) a model may declare.
    model_tensor_max_bytes: int = 256 * MIB

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"limit {name}={value!r}: expected a positive finite number")


class TooManyRequests(LwM2MError):
    """4.29 (RFC 8516): the response carries Max-Age = seconds until the peer may try again."""

    code = numbers.Code.TOO_MANY_REQUESTS

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, math.ceil(retry_after_s))


class DeviceBusy(TooManyRequests):
    """A request to a device that has its limit of requests in flight (API: 429)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 1.0)


class TokenBuckets:
    """One token bucket per source: ``burst`` tokens, refilled at ``per_s``; at most ``sources`` kept."""

    def __init__(self, burst: int, per_s: float, sources: int) -> None:
        self.burst, self.per_s, self.sources = float(burst), per_s, sources
        self._state: OrderedDict[str, tuple[float, float]] = OrderedDict()  # source -> (tokens, at)

    def take(self, source: str, now: float | None = None) -> float:
        """Take one token: 0.0 if there was one, else the seconds until there is."""
        now = time.monotonic() if now is None else now
        tokens, at = self._state.pop(source, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.per_s)
        wait = 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.per_s
        self._state[source] = (tokens - 1.0 if wait == 0.0 else tokens, now)
        if len(self._state) > self.sources:
            self._state.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._state)


def source_of(remote: Any) -> str:
    """The peer's address without its port (``sockaddr[0]`` for UDP; the host info otherwise)."""
    sockaddr = getattr(remote, "sockaddr", None)
    if sockaddr:
        return str(sockaddr[0])
    return str(getattr(remote, "hostinfo", remote))


class Admission:
    """The registration interface's gate: may this source Register, Update, De-register?"""

    def __init__(self, limits: Limits, metrics: "Metrics") -> None:
        self.metrics = metrics
        self.registrations = TokenBuckets(limits.registrations_burst, limits.registrations_per_s,
                                          limits.rate_sources)
        self.unknown_ids = TokenBuckets(limits.unknown_id_burst, limits.unknown_id_per_s, limits.rate_sources)

    def register(self, request: Any) -> None:
        """Before a Register is parsed: TooManyRequests when its source is over its rate."""
        wait = self.registrations.take(source_of(request.remote))
        if wait:
            self.metrics.inc("registrations_rate_limited")
            raise TooManyRequests(f"too many registrations from {source_of(request.remote)}: "
                                  f"try again in {math.ceil(wait)} s", wait)

    def unknown(self, request: Any, reg_id: str) -> LwM2MError:
        """The error for an Update/De-register to a registration id that does not exist."""
        wait = self.unknown_ids.take(source_of(request.remote))
        if wait:
            self.metrics.inc("unknown_registration_rate_limited")
            return TooManyRequests(f"too many requests for unknown registrations from "
                                   f"{source_of(request.remote)}: try again in {math.ceil(wait)} s", wait)
        self.metrics.inc("unknown_registration")
        return NotFound(f"no registration rd/{reg_id[:64]}")


class DeviceSlots:
    """At most ``limit`` requests in flight per device; up to ``waiting`` more wait for a slot."""

    def __init__(self, limit: int, waiting: int, metrics: "Metrics") -> None:
        self.limit, self.waiting, self.metrics = limit, waiting, metrics
        self._sems: dict[str, asyncio.Semaphore] = {}
        self._users: dict[str, int] = {}  # holding or waiting for a slot
        self._held: dict[str, int] = {}

    def in_flight(self, endpoint: str | None = None) -> int:
        """Requests in flight to ``endpoint`` (to every device when None)."""
        return sum(self._held.values()) if endpoint is None else self._held.get(endpoint, 0)

    @contextlib.asynccontextmanager
    async def slot(self, endpoint: str, timeout_s: float) -> AsyncIterator[None]:
        """Hold one of the device's slots for the duration; raise when none frees in ``timeout_s``."""
        users = self._users.get(endpoint, 0)
        if users >= self.limit + self.waiting:
            self.metrics.inc("device_requests_refused")
            raise DeviceBusy(f"device {endpoint!r} has {self.limit} requests in flight and {self.waiting} "
                             f"waiting: refused")
        sem = self._sems.get(endpoint)
        if sem is None:
            sem = self._sems[endpoint] = asyncio.Semaphore(self.limit)
        self._users[endpoint] = users + 1
        try:
            if sem.locked():
                self.metrics.inc("device_requests_waited")
                try:
                    await asyncio.wait_for(sem.acquire(), timeout_s)
                except asyncio.TimeoutError:
                    self.metrics.inc("device_requests_refused")
                    raise DeviceBusy(f"device {endpoint!r}: {self.limit} requests in flight, none finished "
                                     f"within {timeout_s:g} s") from None
            else:
                await sem.acquire()
            self._held[endpoint] = self._held.get(endpoint, 0) + 1
            try:
                yield
            finally:
                sem.release()
                if self._held[endpoint] > 1:
                    self._held[endpoint] -= 1
                else:
                    del self._held[endpoint]
        finally:
            left = self._users[endpoint] - 1
            if left:
                self._users[endpoint] = left
            else:
                del self._users[endpoint]
                del self._sems[endpoint]
