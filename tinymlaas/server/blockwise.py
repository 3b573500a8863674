"""Bounded block-wise transfers (RFC 7959) on both sides of the server's CoAP context.

aiocoap does the block-wise work; this module replaces its two unbounded pieces through the
hooks aiocoap has for them, as upstream-style subclasses:

- ``BoundedBlock1Spool`` (a ``aiocoap.blockwise.Block1Spool``; a ``Resource`` assembles
  requests through its ``_block1`` attribute) assembles requests sent in blocks: ``Size1``
  over the limit is refused with 4.13 at block 0, a block that would take the body over the
  limit is refused with 4.13 before it is stored, blocks are kept as a list and joined once
  (linear time), half-open transfers are capped per source and in total (the least recently
  active is evicted), and a block out of order is 4.08, never 5.00.
- ``BoundedBlockwiseRequest`` (a ``aiocoap.protocol.BlockwiseRequest``) fetches answers a
  device sends in blocks: ``Size2`` over the limit is refused at block 0, the body is cut at
  the byte limit and the transfer at the time limit, and ``abandon()`` stops it when the
  request that wanted the answer is gone (timed out or cancelled).

Upstream-worthy aiocoap (0.4.17) issues, worked around here rather than patched:

1. ``Block1Spool.feed_and_take`` catches only ``KeyError``; ``Message._append_request_block``
   raises a bare ``ValueError`` for a block out of order, which ends as 5.00 with a
   traceback in the log instead of 4.08 Request Entity Incomplete.
2. ``_append_request_block`` and ``_append_response_block`` grow the payload with
   ``bytes +=``: quadratic in the number of blocks.
3. Neither side has a size limit (``Size1``/``Size2`` are not consulted) and the spool's
   ``TimeoutDict`` has no cap on entries; its timeout is a FIXME constant.
4. ``BlockwiseRequest`` stops its runner only when the *response future* is cancelled; a
   caller that shields that future (as ``lwm2m.transport.response_within`` must, see there)
   cannot stop a Block2 transfer it no longer wants. (Python 3.11's ``asyncio.wait_for`` also
   drops a cancellation that arrives as the inner future completes, so the block loop checks
   ``Task.cancelling()`` itself.)
5. ``BlockwiseTuple.reduced_to(6)`` of a size exponent 7 (BERT) returns a plain tuple, not a
   ``BlockwiseTuple`` (no ``.start``); BERT is refused here over UDP, where RFC 7959 reserves it.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Any, Hashable

from aiocoap import Message, error, numbers
from aiocoap.blockwise import (
    Block1Spool,
    ContinueException,
    IncompleteException,
    _extract_block_key,
)
from aiocoap.optiontypes import BlockOption
from aiocoap.protocol import BlockwiseRequest

from lwm2m.errors import LwM2MError
from lwm2m.transport import response_within
from tinymlaas.server.limits import Limits, source_of
from tinymlaas.server.metrics import Metrics

BERT_EXPONENT = 7  # RFC 8323: only on reliable transports; reserved over UDP (RFC 7959 2.2)


class Incomplete(IncompleteException):  # type: ignore[misc]  # aiocoap is untyped
    """4.08 with a diagnostic saying which block was expected."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


class EntityTooLarge(error.ConstructionRenderableError):  # type: ignore[misc]  # aiocoap is untyped
    """4.13 carrying Size1 = the largest body accepted (RFC 7959 2.9.3)."""

    code = numbers.Code.REQUEST_ENTITY_TOO_LARGE

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit

    def to_message(self) -> Message:
        msg = super().to_message()
        msg.opt.size1 = self.limit
        return msg


class _Assembly:
    __slots__ = ("chunks", "first", "size", "source", "touched")

    def __init__(self, first: Message, source: str, now: float) -> None:
        self.first, self.source, self.touched = first, source, now
        self.chunks: list[bytes] = [first.payload]
        self.size = len(first.payload)


class BoundedBlock1Spool(Block1Spool):  # type: ignore[misc]  # aiocoap is untyped
    """Block1 assembly with a size limit, linear copying and a capped table of half-open transfers."""

    def __init__(self, limits: Limits, metrics: Metrics) -> None:
        # Not calling Block1Spool.__init__: its TimeoutDict is replaced by the ordered table below.
        self.max_bytes = limits.block1_max_bytes
        self.per_source, self.total = limits.block1_per_source, limits.block1_total
        self.timeout_s = limits.block1_timeout_s
        self.metrics = metrics
        self._pending: OrderedDict[Hashable, _Assembly] = OrderedDict()  # least recently active first
        self._by_source: dict[str, OrderedDict[Hashable, None]] = {}
        metrics.gauge("block1_half_open", lambda: len(self._pending))
        metrics.gauge("block1_buffered_bytes", lambda: self.buffered_bytes)

    @property
    def buffered_bytes(self) -> int:
        return sum(a.size for a in self._pending.values())

    def _drop(self, key: Hashable) -> None:
        asm = self._pending.pop(key, None)
        if asm is not None:
            keys = self._by_source[asm.source]
            keys.pop(key, None)
            if not keys:
                del self._by_source[asm.source]

    def _expire(self, now: float) -> None:
        while self._pending:
            key, asm = next(iter(self._pending.items()))
            if now - asm.touched < self.timeout_s:
                return
            self._drop(key)
            self.metrics.inc("block1_expired")

    def _make_room(self, source: str) -> None:
        keys = self._by_source.get(source)
        if keys is not None and len(keys) >= self.per_source:
            self._drop(next(iter(keys)))
            self.metrics.inc("block1_evicted")
        if len(self._pending) >= self.total:
            self._drop(next(iter(self._pending)))
            self.metrics.inc("block1_evicted")

    def _too_large(self, key: Hashable, what: str) -> EntityTooLarge:
        self._drop(key)
        self.metrics.inc("block1_too_large")
        return EntityTooLarge(f"{what}: the limit is {self.max_bytes} bytes", self.max_bytes)

    def feed_and_take(self, req: Message) -> Message:
        """The whole request once its last block is in; raise Continue (2.31), 4.08, 4.13 or 4.00."""
        block1 = req.opt.block1
        if block1 is None:
            return req
        if block1.size_exponent == BERT_EXPONENT:
            raise error.BadRequest("Block1 size exponent 7 (BERT) is not allowed over UDP")
        if block1.more and len(req.payload) != block1.size:
            raise error.BadRequest(f"Block1 block {block1.block_number} has {len(req.payload)} bytes: "
                                   f"expected {block1.size}")
        now = time.monotonic()
        self._expire(now)
        key = _extract_block_key(req)
        if block1.block_number == 0:
            self._drop(key)  # a new block 0 starts the transfer over
            size1 = req.opt.size1
            if size1 is not None and size1 > self.max_bytes:
                raise self._too_large(key, f"request body of {size1} bytes announced (Size1)")
            if len(req.payload) > self.max_bytes:
                raise self._too_large(key, f"request body of at least {len(req.payload)} bytes")
            if not block1.more:
                return req
            source = source_of(req.remote)
            self._make_room(source)
            self._pending[key] = _Assembly(req, source, now)
            self._by_source.setdefault(source, OrderedDict())[key] = None
            raise ContinueException(block1)
        asm = self._pending.get(key)
        if asm is None:
            self.metrics.inc("block1_incomplete")
            raise Incomplete(f"Block1 block {block1.block_number} of a transfer that has no block 0 here "
                             "(never sent, expired or evicted): start again at block 0")
        if block1.start != asm.size:
            last = asm.chunks[-1]
            if block1.start == asm.size - len(last) and req.payload == last and block1.more:
                raise ContinueException(block1)  # the same block again (a retransmission with a new MID)
            self.metrics.inc("block1_incomplete")
            raise Incomplete(f"Block1 block {block1.block_number} starts at byte {block1.start}: "
                             f"expected byte {asm.size}")
        if asm.size + len(req.payload) > self.max_bytes:
            raise self._too_large(key, f"request body of at least {asm.size + len(req.payload)} bytes")
        asm.chunks.append(req.payload)
        asm.size += len(req.payload)
        asm.touched = now
        self._pending.move_to_end(key)
        self._by_source[asm.source].move_to_end(key)
        if block1.more:
            raise ContinueException(block1)
        self._drop(key)
        whole = asm.first
        whole.payload = b"".join(asm.chunks)
        whole.opt.block1 = block1  # as aiocoap's assembly: the last block's option, token and MID
        whole.token, whole.mid = req.token, req.mid
        if req.opt.block2 is not None:
            whole.opt.block2 = req.opt.block2
        return whole


class DeviceAnswerTooLarge(LwM2MError):
    code = numbers.Code.BAD_GATEWAY


class DeviceAnswerTooSlow(LwM2MError):
    code = numbers.Code.GATEWAY_TIMEOUT


class BoundedBlockwiseRequest(BlockwiseRequest):  # type: ignore[misc]  # aiocoap is untyped
    """aiocoap's block-wise request with a byte and time limit on Block2 answers, and ``abandon``.

    Use ``bounded_request_class(limits, metrics)`` for a subclass carrying one server's limits.
    """

    max_bytes: int = Limits.block2_max_bytes
    max_s: float = Limits.block2_max_s
    metrics: Metrics | None = None

    def abandon(self) -> None:
        """Stop the transfer: nobody wants its answer any more."""
        if not self._runner.done():
            self._runner.cancel()
            if self.metrics is not None:
                self.metrics.inc("block2_abandoned")

    @classmethod
    def _count(cls, name: str) -> None:
        if cls.metrics is not None:
            cls.metrics.inc(name)

    @classmethod
    async def _complete_by_requesting_block2(cls, protocol: Any, request_to_repeat: Message,
                                             initial_response: Message, log: Any) -> Message:
        first = initial_response.opt.block2
        if first is None or not first.more:
            initial_response.opt.block2 = None
            return initial_response
        if first.block_number != 0:
            raise error.UnexpectedBlock2("the first block of a block-wise answer is not block 0")
        if first.size_exponent == BERT_EXPONENT:
            raise error.UnexpectedBlock2("Block2 size exponent 7 (BERT) is not allowed over UDP")
        size2 = initial_response.opt.size2
        if size2 is not None and size2 > cls.max_bytes:
            cls._count("block2_too_large")
            raise DeviceAnswerTooLarge(f"the device announced an answer of {size2} bytes (Size2): "
                                       f"the limit is {cls.max_bytes} bytes")
        deadline = time.monotonic() + cls.max_s
        chunks, size, block2 = [initial_response.payload], len(initial_response.payload), first
        task = asyncio.current_task()
        while True:
            if task is not None and task.cancelling():
                # abandon() cancelled us, but asyncio.wait_for (3.11) drops a cancellation that
                # arrives as the awaited block completes: stop here instead of asking for more.
                raise asyncio.CancelledError()
            if size > cls.max_bytes:
                cls._count("block2_too_large")
                raise DeviceAnswerTooLarge(f"the device's answer passed {cls.max_bytes} bytes (the limit) "
                                           f"at block {block2.block_number}")
            following = BlockOption.BlockwiseTuple(size // block2.size, False, block2.size_exponent)
            following = following.reduced_to(initial_response.remote.maximum_block_size_exp)
            if following.start != size:
                raise error.UnexpectedBlock2(f"blocks of {block2.size} bytes do not add up to {size} bytes")
            ask = request_to_repeat.copy(payload=b"", mid=None, token=None, block2=following, block1=None,
                                         observe=None, remote=initial_response.remote)
            left = deadline - time.monotonic()
            if left <= 0:
                cls._count("block2_too_slow")
                raise DeviceAnswerTooSlow(f"the device's block-wise answer took more than {cls.max_s:g} s "
                                          f"({size} bytes by then)")
            try:
                response = await response_within(protocol.request(ask, handle_blockwise=False), left)
            except asyncio.TimeoutError:
                cls._count("block2_too_slow")
                raise DeviceAnswerTooSlow(f"the device's block-wise answer took more than {cls.max_s:g} s "
                                          f"({size} bytes by then)") from None
            block2 = response.opt.block2
            if block2 is None:
                if not response.code.is_successful():
                    return response  # the device gave up: its error is the answer
                raise error.UnexpectedBlock2("a block-wise answer continued without a Block2 option")
            if block2.size_exponent == BERT_EXPONENT or block2.start != size or \
                    not block2.is_valid_for_payload_size(len(response.payload)):
                raise error.UnexpectedBlock2(f"Block2 block {block2.block_number} ({len(response.payload)} "
                                             f"bytes) does not continue the answer at byte {size}")
            if response.opt.etag != initial_response.opt.etag:
                raise error.ResourceChanged()
            chunks.append(response.payload)
            size += len(response.payload)
            if not block2.more:
                if size > cls.max_bytes:
                    continue  # refused at the top of the loop
                initial_response.payload = b"".join(chunks)
                initial_response.opt.block2 = block2
                return initial_response


def bounded_request_class(limits: Limits, metrics: Metrics) -> type[BoundedBlockwiseRequest]:
    """A ``BoundedBlockwiseRequest`` subclass with one server's Block2 limits and counters."""
    return type("BoundedBlockwiseRequest", (BoundedBlockwiseRequest,),
                {"max_bytes": limits.block2_max_bytes, "max_s": limits.block2_max_s, "metrics": metrics})
