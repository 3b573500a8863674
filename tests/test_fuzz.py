"""Fuzzing at scale: a mutation fuzzer seeded with valid inputs, on every surface peers reach.

Targets (inputs per run: ``CI`` in the normal suite, ``MILLION`` behind the ``fuzz_million``
marker: ``python -m pytest -m fuzz_million tests/test_fuzz.py -s``):

- raw CoAP datagrams to the registration interface, over loopback UDP to an in-process server
  (Register, Update, De-register, Block1 blocks, package GETs, pings, resets, mutated);
- device answers in every content format, through the codecs the server decodes with and
  the JSON the admin API shows (in process);
- Block1 sequences into the server's ``BoundedBlock1Spool`` and Block2 sequences (a device's
  answers in blocks) into ``BoundedBlockwiseRequest`` (in process), plus endless and broken
  Block2 answers from a device over the wire;
- signed packages: mutated packages checked with the device's key as the simulated device
  checks them (in process), and pushed to a simulated nRF52840 over the wire;
- model files: mutated ONNX and TFLite models through the registry's import.

Each run reports one JSON line (inputs, crashes, tracebacks, RSS growth, seconds) and asserts:
no crash (only the documented error types), no traceback in the log (no record with
exception info at any level, nothing reaching the event loop's exception handler), RSS growth
under the stated bound, and every sentinel device registered before still registered, with
the same id and address, and answering.

Mutations (``mutate``): byte flips, interesting bytes (0x00, 0xff, 0x7f, 0x80), inserts,
deletes, truncation, duplication of a slice and splicing with another seed; seeded, so a
failing input is reproducible from the printed seed and index.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import struct
import time
from dataclasses import replace
from pathlib import Path as FsPath
from typing import Any, Callable

import aiocoap
import pytest
from aiocoap import Code, Message
from aiocoap.blockwise import ContinueException, IncompleteException
from aiocoap import error as coap_error

from compilers.errors import CompilerError
from lwm2m import codecs
from lwm2m.errors import LwM2MError
from lwm2m.jsonvalues import content_to_json
from lwm2m.model import default_registry
from lwm2m.package import PackageError, open_package
from lwm2m.path import Path
from tinymlaas.bundled import MNIST
from tinymlaas.model_import import ImportOptionError, import_model
from tinymlaas.registry import RegistryError, check_sizes, model_format
from tinymlaas.server.blockwise import BoundedBlock1Spool, EntityTooLarge, bounded_request_class
from tinymlaas.server.limits import Limits
from tinymlaas.server.metrics import Metrics
from tinymlaas.server.server import LwM2MServer
from tests.conftest import SHARED_MODELS, CatchAll, Peer

CI = {"datagrams": 20_000, "answers": 20_000, "block1": 10_000, "block2": 10_000, "packages": 10_000,
      "models": 5_000, "wire_block2": 100, "wire_packages": 100}
MILLION = {"datagrams": 1_000_000, "answers": 1_000_000, "block1": 1_000_000, "block2": 1_000_000,
           "packages": 1_000_000, "models": 200_000, "wire_block2": 2_000, "wire_packages": 2_000}
RSS_BOUND_MB = {"ci": 96, "million": 384}
SCALES = [pytest.param("ci", id="ci"),
          pytest.param("million", id="million", marks=[pytest.mark.fuzz_million, pytest.mark.timeout(7200)])]


def counts(scale: str) -> dict[str, int]:
    return CI if scale == "ci" else MILLION


def rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


INTERESTING = (0x00, 0xFF, 0x7F, 0x80, 0x01, 0x0D, 0x0E, 0x0F, 0xF0)


def mutate(rng: random.Random, data: bytes, seeds: list[bytes] | None = None) -> bytes:
    d = bytearray(data)
    for _ in range(rng.randrange(1, 6)):
        k = rng.randrange(8)
        if k == 0 and d:
            d[rng.randrange(len(d))] ^= 1 << rng.randrange(8)
        elif k == 1 and d:
            d[rng.randrange(len(d))] = rng.choice(INTERESTING)
        elif k == 2:
            i = rng.randrange(len(d) + 1)
            d[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 5)))
        elif k == 3 and d:
            i = rng.randrange(len(d))
            del d[i:i + rng.randrange(1, 9)]
        elif k == 4 and len(d) > 1:
            d = d[:rng.randrange(1, len(d))]
        elif k == 5 and d:
            i = rng.randrange(len(d))
            d[i:i] = d[i:i + rng.randrange(1, 17)]
        elif k == 6 and seeds:
            other = rng.choice(seeds)
            i, j = rng.randrange(len(d) + 1), rng.randrange(len(other) + 1)
            d = d[:i] + other[j:]
        elif k == 7 and d:
            d[rng.randrange(len(d))] = rng.randrange(256)
    return bytes(d)


QUIET = ("coap", "coap-server", "tinymlaas.coap", "asyncio", "aiosqlite", "sqlalchemy")


class Watch:
    """Log records with exception info (any level, any logger) and event-loop exceptions."""

    def __init__(self) -> None:
        self.tracebacks: list[str] = []

    def __enter__(self) -> "Watch":
        watch = self

        class Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if record.exc_info or "Traceback (most recent call last)" in record.getMessage():
                    watch.tracebacks.append(f"{record.name}: {record.getMessage()[:200]}")
        self.handler = Handler(level=logging.DEBUG)
        self.root = logging.getLogger()
        self.level = self.root.level
        self.root.addHandler(self.handler)
        self.root.setLevel(logging.DEBUG)  # ours at every level; aiocoap's per-message debug lines off
        self.quiet = {name: logging.getLogger(name).level for name in QUIET}
        for name in QUIET:
            logging.getLogger(name).setLevel(logging.INFO)
        try:
            self.loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            self.loop.set_exception_handler(lambda _l, c: self.tracebacks.append(f"loop: {c.get('message')}"))
        except RuntimeError:
            self.loop = None
        return self

    def __exit__(self, *exc: Any) -> None:
        self.root.removeHandler(self.handler)
        self.root.setLevel(self.level)
        for name, level in self.quiet.items():
            logging.getLogger(name).setLevel(level)
        if self.loop is not None:
            self.loop.set_exception_handler(None)


def report(target: str, scale: str, inputs: int, crashes: list[str], watch: Watch, rss0: float, t0: float,
           **extra: Any) -> None:
    growth = rss_mb() - rss0
    line = {"fuzz": target, "scale": scale, "inputs": inputs, "crashes": len(crashes),
            "tracebacks": len(watch.tracebacks), "rss_growth_mb": round(growth, 1),
            "rss_bound_mb": RSS_BOUND_MB[scale], "seconds": round(time.monotonic() - t0, 1), **extra}
    print(json.dumps(line))
    assert crashes == [], crashes[:5]
    assert watch.tracebacks == [], watch.tracebacks[:5]
    assert growth < RSS_BOUND_MB[scale], line


# -- raw datagrams to the registration interface ------------------------------------------------

def _ext(value: int) -> tuple[int, bytes]:
    if value < 13:
        return value, b""
    if value < 269:
        return 13, bytes((value - 13,))
    return 14, struct.pack(">H", value - 269)


def coap(mtype: int, code: int, mid: int, token: bytes, options: list[tuple[int, bytes]],
         payload: bytes = b"") -> bytes:
    out = bytearray((0x40 | mtype << 4 | len(token), code)) + struct.pack("!H", mid) + token
    last = 0
    for number, value in sorted(options, key=lambda o: o[0]):
        dn, dx = _ext(number - last)
        ln, lx = _ext(len(value))
        out += bytes(((dn << 4) | ln,)) + dx + lx + value
        last = number
    if payload:
        out += b"\xff" + payload
    return bytes(out)


URI_PATH, CONTENT_FORMAT, URI_QUERY, BLOCK2, BLOCK1, SIZE1 = 11, 12, 15, 23, 27, 60
LINKS = b'</>;rt="oma.lwm2m";ct=110,</1/0>,</3/0>,</4/0>,</5/0>,</9/0>,</33100/0>'


def datagram_seeds(rng: random.Random) -> list[bytes]:
    seeds = []
    for i in range(16):
        ep = f"fz-{i}".encode()
        tok = rng.randbytes(rng.randrange(0, 9))
        seeds.append(coap(0, 2, i, tok, [(URI_PATH, b"rd"), (CONTENT_FORMAT, b"\x28"), (URI_QUERY, b"ep=" + ep),
                                         (URI_QUERY, b"lt=60"), (URI_QUERY, b"lwm2m=1.1"), (URI_QUERY, b"b=U")], LINKS))
        rid = rng.randbytes(10).hex().encode()
        seeds.append(coap(0, 2, i, tok, [(URI_PATH, b"rd"), (URI_PATH, rid), (URI_QUERY, b"lt=120")], b"</3/0>"))
        seeds.append(coap(0, 4, i, tok, [(URI_PATH, b"rd"), (URI_PATH, rid)]))
        seeds.append(coap(0, 2, i, tok, [(URI_PATH, b"rd"), (CONTENT_FORMAT, b"\x28"), (URI_QUERY, b"ep=" + ep),
                                         (BLOCK1, bytes((0x0A,))), (SIZE1, b"\x04\x00")], LINKS[:64]))
        seeds.append(coap(0, 2, i, tok, [(URI_PATH, b"rd"), (CONTENT_FORMAT, b"\x28"), (URI_QUERY, b"ep=" + ep),
                                         (BLOCK1, bytes((0x12,)))], LINKS[64:]))
        seeds.append(coap(0, 1, i, tok, [(URI_PATH, b"p"), (URI_PATH, b"tok"), (BLOCK2, b"\x16")]))
        seeds.append(coap(1, 2, i, tok, [(URI_PATH, b"rd"), (URI_QUERY, b"ep=" + ep)], b"</3/0>"))
    seeds += [coap(0, 0, 7, b"", []), coap(3, 0, 7, b"", []), coap(2, 0, 7, b"", []), coap(2, 0x45, 7, b"\x01", [])]
    return seeds


async def sentinels(server: LwM2MServer, n: int = 3) -> list[Peer]:
    peers = []
    for i in range(n):
        peer = Peer(server=server.address)
        peer.context = await aiocoap.Context.create_server_context(CatchAll(peer), bind=("127.0.0.1", 0),
                                                                   transports=["udp6"])
        peer.answer(Code.GET, "/3/0/0", Code.CONTENT, f"sentinel {i}".encode(), 0)
        assert (await peer.register(f"sentinel-{i}", b"</1/0>,</3/0>", ("lwm2m=1.1",))).code == Code.CREATED
        peers.append(peer)
    return peers


async def check_sentinels(server: LwM2MServer, peers: list[Peer], before: dict[str, tuple[str, str]]) -> None:
    for i in range(len(peers)):
        ep = f"sentinel-{i}"
        reg = server.registrations.by_endpoint.get(ep)
        assert reg is not None and (reg.id, reg.address) == before[ep], f"{ep} lost or moved"
        value = await server.read(ep, Path(3, 0, 0), fmt=0, timeout=10)
        assert value == {Path(3, 0, 0): f"sentinel {i}"}


@pytest.mark.parametrize("scale", SCALES)
async def test_fuzz_datagrams_to_the_registration_interface(tmp_path: FsPath, scale: str) -> None:
    total = counts(scale)["datagrams"]
    server = LwM2MServer(f"sqlite:///{tmp_path / 'fz.db'}", read_capabilities=False,
                         limits=replace(Limits(), junk_log_interval_s=3600))
    await server.start("127.0.0.1", 0)
    peers = await sentinels(server)
    before = {ep: (r.id, r.address) for ep, r in server.registrations.by_endpoint.items()}
    rng = random.Random(18)
    seeds = datagram_seeds(rng)
    loop = asyncio.get_running_loop()
    sockets = [(await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                   remote_addr=("127.0.0.1", server.address[1])))[0] for _ in range(4)]
    iface = server.context.request_interfaces[0].token_interface.message_interface
    try:
        with Watch() as watch:
            rss0, t0 = rss_mb(), time.monotonic()
            start, sent = iface.received, 0
            for i in range(total):
                seed = rng.choice(seeds)
                data = seed if rng.random() < 0.05 else mutate(rng, seed, seeds)
                if not data:
                    continue  # an empty datagram is not sent (asyncio's sendto skips it)
                sockets[i % 4].sendto(data)
                sent += 1
                if sent % 64 == 0:
                    await asyncio.sleep(0)
                    while iface.received - start < sent - 64:  # let the server keep up: nothing dropped
                        await asyncio.sleep(0.001)
            for _ in range(2000):
                if iface.received - start >= sent:
                    break
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.5)
            delivered = iface.received - start
            await check_sentinels(server, peers, before)
            snapshot = server.metrics.snapshot()
            assert snapshot["gauges"]["block1_half_open"] <= server.limits.block1_total
            junk = {k: v for k, v in snapshot["counters"].items() if k.startswith("junk_")}
            report("datagrams", scale, total, [], watch, rss0, t0, sent=sent, delivered=delivered,
                   registrations=len(server.registrations), junk=junk)
            assert delivered == sent and sent >= 0.98 * total
    finally:
        for s in sockets:
            s.close()
        for p in peers:
            await p.context.shutdown()
        await server.stop()


# -- device answers in every content format -----------------------------------------------------

def answer_seeds() -> list[tuple[int, Path, bytes]]:
    reg = default_registry()
    device = {Path(3, 0, 0): "ACME", Path(3, 0, 1): "Model 1", Path(3, 0, 9): 87, Path(3, 0, 13): 1_700_000_000,
              Path(3, 0, 7, 0): 3800, Path(3, 0, 7, 1): 5000}
    server = {Path(1, 0, 0): 1, Path(1, 0, 1): 300, Path(1, 0, 6): True, Path(1, 0, 7): "U"}
    cases = [(Path(3, 0), device), (Path(3, 0, 0), {Path(3, 0, 0): "ACME"}), (Path(3, 0, 9), {Path(3, 0, 9): 87}),
             (Path(1, 0), server), (Path(3, 0, 7), {Path(3, 0, 7, 0): 3800, Path(3, 0, 7, 1): 5000})]
    seeds = []
    for fmt in codecs.CODECS:
        for path, content in cases:
            try:
                seeds.append((int(fmt), path, codecs.encode(int(fmt), path, content, reg)))
            except LwM2MError:
                continue
    seeds.append((42, Path(5, 0, 0), b"\x00\x01firmware"))
    return seeds


@pytest.mark.parametrize("scale", SCALES)
def test_fuzz_device_answers_in_every_content_format(scale: str) -> None:
    total = counts(scale)["answers"]
    reg = default_registry()
    seeds = answer_seeds()
    formats = sorted({s[0] for s in seeds} | {int(f) for f in codecs.CODECS} | {40, 1541, 1542, 1543, 99})
    assert {0, 42, 110, 112, 11542, 11543, 11544} <= {s[0] for s in seeds}
    blobs = [s[2] for s in seeds]
    rng = random.Random(110)
    crashes: list[str] = []
    decoded = 0
    with Watch() as watch:
        rss0, t0 = rss_mb(), time.monotonic()
        for i in range(total):
            fmt, path, data = rng.choice(seeds)
            if rng.random() < 0.1:
                fmt = rng.choice(formats)
            data = mutate(rng, data, blobs)
            try:
                content = codecs.decode(fmt, path, data, reg)
                json.dumps(content_to_json(content), allow_nan=False)  # what the admin API answers
                decoded += 1
            except LwM2MError:
                continue
            except Exception as exc:  # noqa: BLE001 (a crash is what we look for)
                crashes.append(f"seed 110 input {i} cf {fmt}: {type(exc).__name__}: {exc} {data[:40]!r}")
        report("answers", scale, total, crashes, watch, rss0, t0, decoded=decoded, formats=len(formats))


# -- Block1 and Block2 sequences ----------------------------------------------------------------

class FakeRemote:
    """What the spool and the block-wise requester use of a UDP remote."""

    maximum_block_size_exp = 6
    maximum_payload_size = 1024

    def __init__(self, host: str, port: int) -> None:
        self.sockaddr = (host, port)
        self.blockwise_key = (host, port)

    def __hash__(self) -> int:
        return hash(self.sockaddr)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FakeRemote) and other.sockaddr == self.sockaddr


@pytest.mark.parametrize("scale", SCALES)
def test_fuzz_block1_sequences(scale: str) -> None:
    total = counts(scale)["block1"]
    limits = replace(Limits(), block1_max_bytes=2048, block1_per_source=4, block1_total=16)
    spool = BoundedBlock1Spool(limits, Metrics())
    rng = random.Random(7959)
    crashes: list[str] = []
    done = blocks = 0
    allowed = (ContinueException, IncompleteException, EntityTooLarge, coap_error.BadRequest)
    with Watch() as watch:
        rss0, t0 = rss_mb(), time.monotonic()
        for seq in range(total):
            remote = FakeRemote(f"10.0.{rng.randrange(4)}.{rng.randrange(8)}", rng.randrange(1, 5))
            ep = f"e{rng.randrange(6)}"
            szx = rng.choice((0, 1, 2, 4, 6, 6, 7))
            size = 2 ** (min(szx, 6) + 4)
            body = rng.randbytes(rng.randrange(0, 4000))
            nblocks = max(1, -(-len(body) // size))
            order = list(range(nblocks))
            if rng.random() < 0.4:  # out of order, repeated, skipped, past the end
                for _ in range(rng.randrange(1, 4)):
                    order.insert(rng.randrange(len(order) + 1), rng.randrange(nblocks + 3))
            for n in order[:80]:
                msg = Message(code=Code.POST, payload=body[n * size:(n + 1) * size])
                msg.opt.uri_path = ("rd",)
                msg.opt.uri_query = (f"ep={ep}",)
                more = (n + 1) * size < len(body)
                if rng.random() < 0.05:
                    more = not more
                if rng.random() < 0.05:
                    msg.payload = mutate(rng, msg.payload or b"x")
                msg.opt.block1 = (n, more, szx)
                if n == 0 and rng.random() < 0.5:
                    msg.opt.size1 = rng.choice((len(body), rng.randrange(1 << 24), 2048, 2049))
                msg.remote = remote
                blocks += 1
                try:
                    whole = spool.feed_and_take(msg)
                except allowed:
                    pass
                except Exception as exc:  # noqa: BLE001
                    crashes.append(f"seq {seq} block {n}: {type(exc).__name__}: {exc}")
                else:
                    done += 1
                    assert len(whole.payload) <= limits.block1_max_bytes
                assert len(spool._pending) <= limits.block1_total
                assert spool.buffered_bytes <= limits.block1_total * limits.block1_max_bytes
        report("block1", scale, total, crashes, watch, rss0, t0, blocks=blocks, assembled=done,
               half_open=len(spool._pending))


class FakeProtocol:
    """``protocol.request(msg, handle_blockwise=False)`` answered by a function of the request."""

    def __init__(self, answer: Callable[[Message], Message]) -> None:
        self.answer = answer
        self.asked = 0

    def request(self, msg: Message, handle_blockwise: bool = False) -> Any:
        self.asked += 1
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(self.answer(msg))
        return type("Req", (), {"response": fut})()


def block2_answer(rng: random.Random, num: int, szx: int, body: bytes, etag: bytes | None) -> Message:
    size = 2 ** (szx + 4)
    chunk = body[num * size:(num + 1) * size]
    more = (num + 1) * size < len(body) or rng.random() < 0.02  # endless now and then
    if rng.random() < 0.05:
        chunk = mutate(rng, chunk or b"x")
    msg = Message(code=rng.choice((Code.CONTENT,) * 30 + (Code.NOT_FOUND, Code.REQUEST_ENTITY_INCOMPLETE)),
                  payload=chunk if chunk or not more else b"y" * size)
    r = rng.random()
    if r < 0.9:
        msg.opt.block2 = (num if rng.random() < 0.95 else rng.randrange(64), more,
                          szx if rng.random() < 0.95 else rng.randrange(8))
    if etag is not None and rng.random() < 0.98:
        msg.opt.etag = etag
    msg.remote = FakeRemote("10.9.9.9", 5683)
    return msg


@pytest.mark.parametrize("scale", SCALES)
async def test_fuzz_block2_sequences(scale: str) -> None:
    total = counts(scale)["block2"]
    limits = replace(Limits(), block2_max_bytes=4096, block2_max_s=5.0)
    cls = bounded_request_class(limits, Metrics())
    rng = random.Random(7960)
    crashes: list[str] = []
    assembled = 0
    log = logging.getLogger("fuzz.block2")
    with Watch() as watch:
        rss0, t0 = rss_mb(), time.monotonic()
        for seq in range(total):
            szx = rng.randrange(0, 7)
            body = rng.randbytes(rng.randrange(0, 6000))
            etag = rng.randbytes(4) if rng.random() < 0.3 else None
            proto = FakeProtocol(lambda m, body=body, etag=etag: block2_answer(  # this iteration's body and ETag
                rng, m.opt.block2.block_number, m.opt.block2.size_exponent, body, etag))
            first = block2_answer(rng, 0, szx, body, etag)
            if rng.random() < 0.3:
                first.opt.size2 = rng.choice((len(body), rng.randrange(1 << 26)))
            request = Message(code=Code.GET, uri_path=("3", "0"))
            request.remote = first.remote
            try:
                whole = await cls._complete_by_requesting_block2(proto, request, first, log)
            except (coap_error.Error, LwM2MError):
                pass
            except Exception as exc:  # noqa: BLE001
                crashes.append(f"seq {seq}: {type(exc).__name__}: {exc}")
            else:
                assembled += 1
                assert len(whole.payload) <= limits.block2_max_bytes or whole.opt.block2 is None
            assert proto.asked <= limits.block2_max_bytes // 16 + 2  # never more blocks than the limit allows
        report("block2", scale, total, crashes, watch, rss0, t0, assembled=assembled)


class BrokenBlocks(aiocoap.resource.Resource):
    """A device answering GET /3/0 in blocks, each block randomly broken (in-process rng)."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self.rng = rng
        self.body = b"A" * 3000
        self.etag = b"etag"

    async def needs_blockwise_assembly(self, request: Message) -> bool:
        return False

    async def render(self, request: Message) -> Message:
        if tuple(request.opt.uri_path) == ("rd",):
            return Message(code=Code.CREATED)
        b2 = request.opt.block2
        num, szx = (b2.block_number, b2.size_exponent) if b2 else (0, 6)
        msg = block2_answer(self.rng, num, szx, self.body, self.etag)
        msg.remote = None
        msg.opt.content_format = 0
        return msg


@pytest.mark.parametrize("scale", SCALES)
async def test_fuzz_block2_answers_from_a_device_over_the_wire(tmp_path: FsPath, scale: str) -> None:
    total = counts(scale)["wire_block2"]
    server = LwM2MServer(f"sqlite:///{tmp_path / 'w.db'}", read_capabilities=False,
                         limits=replace(Limits(), block2_max_bytes=8192, block2_max_s=2.0))
    await server.start("127.0.0.1", 0)
    rng = random.Random(7961)
    device = await aiocoap.Context.create_server_context(BrokenBlocks(rng), bind=("127.0.0.1", 0), transports=["udp6"])
    peer = Peer(context=device, server=server.address)
    assert (await peer.register("broken", b"</3/0>", ("lwm2m=1.1",))).code == Code.CREATED
    crashes: list[str] = []
    outcomes: dict[str, int] = {}
    try:
        with Watch() as watch:
            rss0, t0 = rss_mb(), time.monotonic()
            for i in range(total):
                try:
                    await server.read("broken", Path(3, 0, 0), fmt=0, timeout=3)
                    outcomes["read"] = outcomes.get("read", 0) + 1
                except LwM2MError as exc:
                    outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
                except Exception as exc:  # noqa: BLE001
                    crashes.append(f"read {i}: {type(exc).__name__}: {exc}")
            assert server.slots.in_flight("broken") == 0
            report("wire_block2", scale, total, crashes, watch, rss0, t0, outcomes=outcomes)
    finally:
        await device.shutdown()
        await server.stop()


# -- signed packages ----------------------------------------------------------------------------

def signed_package() -> tuple[bytes, bytes, Any]:
    from tests.sim_helpers import add_one_wasm, keypair, package

    key, public = keypair()
    return package(add_one_wasm(), key), public, key


@pytest.mark.parametrize("scale", SCALES)
def test_fuzz_signed_packages_as_the_device_checks_them(scale: str) -> None:
    total = counts(scale)["packages"]
    blob, public, _key = signed_package()
    good_manifest, good_artifact = open_package(blob, public)
    rng = random.Random(53)
    crashes: list[str] = []
    accepted = 0
    with Watch() as watch:
        rss0, t0 = rss_mb(), time.monotonic()
        for i in range(total):
            data = mutate(rng, blob)
            try:
                manifest, artifact = open_package(data, public)
            except PackageError:
                continue
            except Exception as exc:  # noqa: BLE001
                crashes.append(f"input {i}: {type(exc).__name__}: {exc}")
                continue
            accepted += 1  # only a mutation that changed nothing that is signed may pass
            if (manifest, artifact) != (good_manifest, good_artifact):
                crashes.append(f"input {i}: a tampered package verified: {data.hex()[:80]}")
        report("packages", scale, total, crashes, watch, rss0, t0, accepted_unchanged=accepted)


@pytest.mark.parametrize("scale", SCALES)
async def test_fuzz_signed_packages_pushed_to_a_simulated_device(tmp_path: FsPath, runner: Any, scale: str) -> None:
    from device_profiles import get_profile
    from simulator.device import SimulatedDevice

    total = counts(scale)["wire_packages"]
    blob, public, key = signed_package()
    server = LwM2MServer(f"sqlite:///{tmp_path / 'p.db'}", read_capabilities=False)
    await server.start("127.0.0.1", 0)
    dev = SimulatedDevice(get_profile("nrf52840"), "pkg", server.address, runner, update_objects=(9,),
                          signing_key=public)
    await dev.start()
    rng = random.Random(54)
    crashes: list[str] = []
    results: dict[int, int] = {}
    state, result = Path(9, 0, 7), Path(9, 0, 9)
    try:
        for _ in range(100):
            if "pkg" in server.registrations.by_endpoint:
                break
            await asyncio.sleep(0.05)
        with Watch() as watch:
            rss0, t0 = rss_mb(), time.monotonic()
            for i in range(total):
                data = mutate(rng, blob)
                try:
                    open_package(data, public)
                    verifies = True
                except PackageError:
                    verifies = False
                try:
                    await server.write("pkg", Path(9, 0, 2), {Path(9, 0, 2): data}, fmt=42, timeout=10)
                except LwM2MError:
                    results[-1] = results.get(-1, 0) + 1
                    continue
                got: dict[Path, Any] = {}
                for _ in range(100):
                    got = await server.read("pkg", Path(9, 0), timeout=10)
                    if got.get(state) in (0, 3):  # INITIAL (refused) or DELIVERED
                        break
                    await asyncio.sleep(0.02)
                results[got.get(result)] = results.get(got.get(result), 0) + 1
                if got.get(state) == 3:
                    if not verifies:
                        crashes.append(f"input {i}: the device took a package that does not verify")
                    await server.execute("pkg", Path(9, 0, 6), timeout=10)  # Uninstall: back to INITIAL
                elif verifies and got.get(result) not in (50, 54):
                    crashes.append(f"input {i}: a verifying package was refused with result {got.get(result)}")
            reg = server.registrations.by_endpoint["pkg"]
            assert reg.endpoint == "pkg"
            report("wire_packages", scale, total, crashes, watch, rss0, t0, results=results)
    finally:
        await dev.stop()
        await server.stop()


# -- model files --------------------------------------------------------------------------------

def model_seeds() -> list[bytes]:
    seeds = [MNIST.read_bytes()]
    for name in ("hello_world_int8.tflite", "hello_world_float.tflite", "micro_speech_quantized.tflite"):
        path = SHARED_MODELS / "tflm_examples" / name
        if path.exists():
            seeds.append(path.read_bytes())
    return seeds


@pytest.mark.parametrize("scale", SCALES)
def test_fuzz_model_files(scale: str) -> None:
    total = counts(scale)["models"]
    seeds = model_seeds()
    rng = random.Random(8)
    crashes: list[str] = []
    imported = 0
    with Watch() as watch:
        rss0, t0 = rss_mb(), time.monotonic()
        for i in range(total):
            data = mutate(rng, rng.choice(seeds), seeds)
            try:
                check_sizes(import_model(data, model_format(data)).graph, 256 * 2**20)  # as the registry's add
                imported += 1
            except (RegistryError, CompilerError, ImportOptionError):
                continue
            except Exception as exc:  # noqa: BLE001
                crashes.append(f"input {i}: {type(exc).__name__}: {exc}")
        report("models", scale, total, crashes, watch, rss0, t0, imported=imported, seeds=len(seeds))


def test_the_ci_run_is_at_least_ten_thousand_inputs_per_surface() -> None:
    big = {k: v for k, v in CI.items() if not k.startswith("wire_")}
    assert min(big.values()) >= 5_000 and sum(CI.values()) >= 10_000
    assert sum(MILLION.values()) >= 1_000_000 and MILLION["datagrams"] >= 1_000_000
