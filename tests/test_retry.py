"""The one retry policy (``lwm2m.retry``): bounded, exponential, full jitter - and a fleet whose
server is down spreads its registration retries instead of coming back in lock-step.

The fleet test's server is a bare UDP socket that decodes each datagram with aiocoap (not our
code), answers every Register with 5.03 and records when each device's attempts arrived."""

from __future__ import annotations

import asyncio
import functools
import random
import statistics
import time

import pytest
from aiocoap import Code, Message
from aiocoap.numbers.types import ACK, CON

from lwm2m.errors import LwM2MError
from lwm2m.model import default_registry
from lwm2m.retry import Backoff, retrying
from simulator.client import ClientConfig, LwM2MClient, ServerUnavailable
from simulator.objects import ObjectTree


def test_delays_are_full_jitter_within_exponential_bounds() -> None:
    b = Backoff(0.5, 4.0)
    assert [b.bound_s(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    rng = random.Random(7)
    for n in range(1, 7):
        draws = [b.delay_s(n, rng) for _ in range(2000)]
        assert 0 <= min(draws) < 0.05 * b.bound_s(n) and 0.95 * b.bound_s(n) < max(draws) <= b.bound_s(n)
        assert abs(statistics.mean(draws) - b.bound_s(n) / 2) < 0.05 * b.bound_s(n)  # uniform: mean = bound/2
    waits = [b.wait()(_State(n)) for n in range(1, 7) for _ in range(200)]  # tenacity's strategy: same bounds
    assert max(waits) <= 4.0 and min(waits) >= 0
    with pytest.raises(ValueError):
        Backoff(2.0, 1.0)


class _State:
    def __init__(self, attempt: int) -> None:
        self.attempt_number = attempt


async def test_retrying_is_bounded_by_attempts_and_deadline() -> None:
    calls: list[float] = []

    async def fails() -> None:
        calls.append(time.monotonic())
        raise TimeoutError("no answer")

    with pytest.raises(TimeoutError):  # the last failure itself, not a wrapper
        await retrying(Backoff(0.01, 0.02), on=TimeoutError, attempts=4)(fails)
    assert len(calls) == 4
    calls.clear()
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        await retrying(Backoff(0.05, 0.1), on=TimeoutError, deadline_s=0.4)(fails)
    assert time.monotonic() - start < 0.45 and len(calls) >= 3  # no wait that would end past the deadline
    results = iter([None, None, "ok"])
    quick = Backoff(0.01, 0.01)
    assert await retrying(quick, until=lambda r: r is not None, attempts=5)(functools.partial(_value, results)) == "ok"
    nones = functools.partial(_value, iter([None] * 3))
    assert await retrying(quick, until=lambda r: r is not None, attempts=2)(nones) is None  # the last result
    with pytest.raises(ValueError, match="bound"):
        retrying(Backoff(), on=TimeoutError)
    with pytest.raises(ValueError):  # other errors are not retried
        await retrying(Backoff(0.01, 0.01), on=TimeoutError, attempts=3)(_raise_value_error)


async def _value(it: object) -> object:
    return next(it)  # type: ignore[call-overload]


async def _raise_value_error() -> None:
    raise ValueError("not a retry case")


class Unavailable(asyncio.DatagramProtocol):
    """A server that is down for registrations: 5.03 to every POST /rd, arrival times by endpoint."""

    def __init__(self) -> None:
        self.arrivals: dict[str, list[float]] = {}
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        msg = Message.decode(data)
        if msg.code != Code.POST or list(msg.opt.uri_path) != ["rd"] or msg.mtype != CON:
            return
        ep = next(q[3:] for q in msg.opt.uri_query if q.startswith("ep="))
        self.arrivals.setdefault(ep, []).append(time.monotonic())
        self.answer(msg, Code.SERVICE_UNAVAILABLE, addr)

    def answer(self, request: Message, code: Code, addr: tuple[str, int]) -> None:
        """A piggybacked response (ACK with the request's MID and token)."""
        response = Message(code=code)
        response.mtype, response.mid, response.token = ACK, request.mid, request.token
        assert self.transport is not None
        self.transport.sendto(response.encode(), addr)


async def test_a_fleet_retries_registration_spread_out_not_in_lock_step() -> None:
    loop = asyncio.get_running_loop()
    transport, server = await loop.create_datagram_endpoint(Unavailable, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    backoff, devices = Backoff(0.4, 3.2), 60
    clients = []
    for i in range(devices):
        tree = ObjectTree(default_registry())
        tree.add_instance(1, 0, {0: 1, 1: 300, 6: False, 7: "U"})
        tree.add_instance(3, 0, {0: "tinymlaas", 1: "retry-test"})
        config = ClientConfig(f"dev-{i:03d}", ("127.0.0.1", port), register_backoff=backoff, register_attempts=3)
        clients.append(LwM2MClient(config, tree))
    try:
        outcomes = await asyncio.wait_for(asyncio.gather(*(c.start() for c in clients), return_exceptions=True), 30)
    finally:
        for c in clients:
            if c.context is not None:
                await c.context.shutdown()
        transport.close()
    assert all(isinstance(o, ServerUnavailable) and "5.03" in str(o) for o in outcomes)  # gave up, bounded
    arrivals = server.arrivals
    assert len(arrivals) == devices and all(len(a) == 3 for a in arrivals.values())  # exactly 3 attempts each
    first = [a[1] - a[0] for a in arrivals.values()]
    second = [a[2] - a[1] for a in arrivals.values()]
    slack = 0.1  # event loop and socket time on a shared machine
    assert max(first) <= backoff.bound_s(1) + slack and max(second) <= backoff.bound_s(2) + slack
    # Lock-step would put every device's retry at the same delay; full jitter spreads them
    # uniformly over [0, bound]: standard deviation bound/sqrt(12) (0.115 s, 0.231 s here).
    assert statistics.pstdev(first) > 0.06 and statistics.pstdev(second) > 0.12
    for delays, bound in ((first, backoff.bound_s(1)), (second, backoff.bound_s(2))):
        quarters = [sum(1 for d in delays if q * bound / 4 <= d < (q + 1) * bound / 4) for q in range(4)]
        assert min(quarters) >= devices // 10, quarters  # every quarter of the window has retries
    retry_times = sorted(t for a in arrivals.values() for t in a[1:])
    busiest = max(sum(1 for t in retry_times if s <= t < s + 0.05) for s in retry_times)
    assert busiest < devices // 3  # no 50 ms slot takes a third of the fleet


async def test_a_refusal_is_not_retried() -> None:
    """4.xx is the server's answer, not its absence: the client does not hammer it."""
    class Refuses(Unavailable):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            msg = Message.decode(data)
            ep = next(q[3:] for q in msg.opt.uri_query if q.startswith("ep="))
            self.arrivals.setdefault(ep, []).append(time.monotonic())
            self.answer(msg, Code.BAD_REQUEST, addr)

    loop = asyncio.get_running_loop()
    transport, server = await loop.create_datagram_endpoint(Refuses, local_addr=("127.0.0.1", 0))
    tree = ObjectTree(default_registry())
    tree.add_instance(3, 0, {0: "tinymlaas"})
    client = LwM2MClient(ClientConfig("refused", ("127.0.0.1", transport.get_extra_info("sockname")[1]),
                                      register_backoff=Backoff(0.01, 0.02)), tree)
    try:
        with pytest.raises(LwM2MError, match="4.00"):
            await client.start()
    finally:
        if client.context is not None:
            await client.context.shutdown()
        transport.close()
    assert len(server.arrivals["refused"]) == 1
