"""Counters of what the server refused, dropped or pruned, and logging that cannot be flooded.

``Metrics`` is a flat set of named counters (``inc``) plus gauges read when asked (``gauge``:
a name and a function); ``snapshot()`` is what ``GET /metrics`` shows. Counter names are
``snake_case`` nouns of what happened (``junk_undecodable``, ``block1_too_large``, ...).

``JunkLog`` is the one way the CoAP side reports bad input: it counts every occurrence and
logs at most one line per source address per interval, saying how many it kept quiet about
since the last line. ``RateLimitFilter`` does the same for aiocoap's own log lines (it logs a
line per odd datagram: "Ignoring unparsable message", "those don't fit"...), keyed by the
line's template, installed on the server context's own logger.

What it does not do: format for Prometheus (``tinymlaas.api.metrics`` renders ``snapshot``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from typing import Callable

log = logging.getLogger("tinymlaas.junk")

MAX_KEYS = 4096  # sources / templates remembered for rate-limited logging


class Metrics:
    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self._gauges: dict[str, Callable[[], float]] = {}

    def inc(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        self._gauges[name] = read

    def snapshot(self) -> dict[str, dict[str, float]]:
        return {"counters": dict(sorted(self.counters.items())),
                "gauges": {name: read() for name, read in sorted(self._gauges.items())}}


class _Quota:
    """At most one pass per key per interval; counts what it held back (bounded key set)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last: OrderedDict[str, tuple[float, int]] = OrderedDict()  # key -> (last logged, held back)

    def admit(self, key: str, now: float | None = None) -> int | None:
        """None: stay quiet; else the number held back since this key's last line."""
        now = time.monotonic() if now is None else now
        last, held = self._last.pop(key, (-self.interval_s, 0))
        if now - last < self.interval_s:
            self._last[key] = (last, held + 1)
            return None
        self._last[key] = (now, 0)
        if len(self._last) > MAX_KEYS:
            self._last.popitem(last=False)
        return held


class JunkLog:
    """Count bad input by kind; log one line per source per interval."""

    def __init__(self, metrics: Metrics, interval_s: float) -> None:
        self.metrics = metrics
        self._quota = _Quota(interval_s)

    def note(self, kind: str, source: str, detail: str) -> None:
        self.metrics.inc(f"junk_{kind}")
        held = self._quota.admit(source)
        if held is not None:
            more = f" ({held} more from this source not logged)" if held else ""
            log.warning("dropped bad input from %s: %s: %s%s", source, kind, detail[:200], more)


class RateLimitFilter(logging.Filter):
    """A logging filter letting each message template through once per interval."""

    def __init__(self, interval_s: float, metrics: Metrics | None = None) -> None:
        super().__init__()
        self.metrics = metrics
        self._quota = _Quota(interval_s)

    def filter(self, record: logging.LogRecord) -> bool:
        held = self._quota.admit(str(record.msg))
        if held is None:
            if self.metrics is not None:
                self.metrics.inc("log_lines_suppressed")
            return False
        if held:
            record.msg = f"{record.msg} [{held} similar lines not logged]"
        return True
