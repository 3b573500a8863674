"""Every retry of the server and the simulated devices: exponential backoff with full jitter.

One policy, ``Backoff(first_s, longest_s)``: before retry n (n = 1, 2, ...) wait a delay drawn
uniformly from [0, min(longest_s, first_s * 2**(n-1))] ("full jitter", as in Brooker's "Exponential
Backoff And Jitter"), so a fleet that lost its server spreads its attempts over the window
instead of coming back in lock-step, and no single wait exceeds ``longest_s``. The waits are
tenacity's ``wait_random_exponential``; ``retrying`` is a tenacity ``AsyncRetrying`` with that
wait, bounded by attempts and/or a deadline (every retry loop is bounded), re-raising the last
failure. For loops that are not one call retried (a step of a state machine that is repeated
after a failure), ``Backoff.delay_s(n)`` and ``Backoff.sleep(n)`` give the same delays.

It lives in the LwM2M library because both its users do: the server (tinymlaas) and the
simulator, which must not import the server. What it does not do: decide what is worth
retrying (the caller passes the exception types or a result predicate).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    stop_never,
)
from tenacity.retry import retry_base
from tenacity.stop import stop_base
from tenacity.wait import wait_random_exponential


@dataclass(frozen=True)
class Backoff:
    """Retry delays: retry n waits uniform(0, min(longest_s, first_s * 2**(n-1))) seconds."""

    first_s: float = 0.5
    longest_s: float = 8.0

    def __post_init__(self) -> None:
        if not 0 < self.first_s <= self.longest_s:
            raise ValueError(f"backoff needs 0 < first_s <= longest_s, got {self.first_s:g} and {self.longest_s:g}")

    def bound_s(self, retry: int) -> float:
        """The longest delay before retry ``retry`` (1-based)."""
        return min(self.longest_s, self.first_s * 2.0 ** max(retry - 1, 0))

    def wait(self) -> wait_random_exponential:
        """The tenacity wait strategy for this policy."""
        return wait_random_exponential(multiplier=self.first_s, max=self.longest_s)

    def delay_s(self, retry: int, rng: random.Random | None = None) -> float:
        """One delay before retry ``retry`` (1-based), drawn with full jitter."""
        return (rng or random).uniform(0.0, self.bound_s(retry))

    async def sleep(self, retry: int) -> float:
        """Sleep before retry ``retry``; the seconds slept."""
        delay = self.delay_s(retry)
        await asyncio.sleep(delay)
        return delay


def retrying(backoff: Backoff, *, on: type[BaseException] | tuple[type[BaseException], ...] = (),
             until: Callable[[Any], bool] | None = None, attempts: int | None = None,
             deadline_s: float | None = None, before_sleep: Callable[[RetryCallState], Any] | None = None
             ) -> AsyncRetrying:
    """``async for attempt in retrying(...): with attempt: ...`` (or ``await retrying(...)(fn, *args)``).

    Retries when the call raises one of ``on`` or, with ``until``, while ``until(result)`` is false;
    stops after ``attempts`` calls or once the next wait would pass ``deadline_s`` from the
    first call, then re-raises the last exception (or returns the last result)."""
    if attempts is None and deadline_s is None:
        raise ValueError("a retry needs a bound: attempts and/or deadline_s")
    stop: stop_base = stop_never
    if attempts is not None:
        stop = stop_after_attempt(attempts)
    if deadline_s is not None:
        stop = stop | _stop_before_deadline(deadline_s) if attempts is not None else _stop_before_deadline(deadline_s)
    retry: retry_base | None = retry_if_exception_type(on) if on else None
    if until is not None:
        by_result = retry_if_result(lambda r: not until(r))
        retry = by_result if retry is None else retry | by_result
    if retry is None:
        raise ValueError("say what to retry: on=exception types and/or until=result predicate")
    return AsyncRetrying(wait=backoff.wait(), stop=stop, retry=retry, reraise=True, before_sleep=before_sleep,
                         retry_error_callback=_last_result if until is not None else None)


def _last_result(state: RetryCallState) -> Any:
    """Out of attempts while ``until`` was still false: the last result (or its exception)."""
    assert state.outcome is not None
    return state.outcome.result()


class _stop_before_deadline(stop_base):
    """Stop when the wait ahead would end past the deadline (no retry that cannot finish in time)."""

    def __init__(self, deadline_s: float) -> None:
        self.deadline_s = deadline_s

    def __call__(self, retry_state: RetryCallState) -> bool:
        elapsed = retry_state.seconds_since_start or 0.0
        upcoming = retry_state.upcoming_sleep or 0.0
        return elapsed + upcoming >= self.deadline_s
