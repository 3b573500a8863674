"""Arena sizing for the TFLite Micro backend, measured with the real tflite-micro runtime.

``recommended_arena(model)`` -> ``ArenaReport(recorded_total, head, tail, recommended)``:

* a first load with a generous arena (``start``, default 8 MiB) invokes once and prints the
  RecordingMicroAllocator statistics; they go to C-level stdout, which ``isolation.isolated``
  captures, and ``Arena allocation total|head|tail N bytes`` is parsed;
* then the smallest arena (a multiple of 16) that loads AND invokes is bisected, each probe in
  its own forked child (``isolation``): tflite-micro segfaults the whole process when the arena is too small,
  so a crash, a failed load/invoke or a timeout all count as "too small"; at most
  ``MAX_PROBES`` probes, each killed after ``timeout_s``.

``recommended`` is that smallest working size (= the smallest working byte count rounded up to
16, as working sizes are monotone). It can exceed ``recorded_total``: Prepare's temporary
allocations are not in the recorded total. Needs POSIX ``fork`` and the ``tflite_micro``
package.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..isolation import child_log, isolated
from .emitter import BackendError

DEFAULT_START = 8 * 1024 * 1024
MAX_PROBES = 20
ALIGN = 16
_ALLOC = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")


@dataclass(frozen=True)
class ArenaReport:
    recorded_total: int  # RecordingMicroAllocator total with the generous arena
    head: int  # planned (non-persistent) activations
    tail: int  # persistent allocations
    recommended: int  # smallest arena (multiple of 16) that loads and invokes


def _runtime() -> Any:
    from tflite_micro.python.tflite_micro import runtime
    return runtime


def _load_invoke(model: bytes, arena: int, record: bool) -> str:
    """In a child: load, invoke, and with ``record`` the allocation statistics it printed."""
    interp = _runtime().Interpreter.from_bytes(model, arena_size=arena)
    interp.invoke()
    if not record:
        return ""
    interp.print_allocations()
    return child_log()


def _probe(model: bytes, arena: int, record: bool, timeout_s: float) -> tuple[str, str]:
    """("ok", statistics) or (status, why): a refused load, a crash and a timeout all mean "too small"."""
    o = isolated(_load_invoke, (model, arena, record), timeout_s)
    if o.status == "ok":
        return "ok", str(o.value)
    if o.status in ("error", "exception"):
        return "error", f"{o.value[0]}: {o.value[1]}"
    return o.status, f"no answer within {timeout_s:g} s" if o.status == "timeout" else str(o.value)


def _works(model: bytes, arena: int, timeout_s: float) -> bool:
    return _probe(model, arena, False, timeout_s)[0] == "ok"


def recommended_arena(model: bytes, *, start: int | None = None,
                      timeout_s: float = 20.0) -> ArenaReport:
    """Measure ``model``'s TFLM arena (see the module docstring). ``start`` is the arena of
    the measuring load (default 8 MiB); BackendError when the model does not run with it."""
    _runtime()  # import before forking (and fail early when tflite-micro is missing)
    model = bytes(model)
    start = DEFAULT_START if start is None else int(start)
    if start < ALIGN:
        raise ValueError(f"start arena {start} is below {ALIGN} bytes")
    status, text = _probe(model, start, True, timeout_s)
    if status != "ok":
        raise BackendError(f"tflite-micro cannot load and invoke the model with a "
                           f"{start:,}-byte arena ({status}: {text})")
    found = {k: int(v) for k, v in _ALLOC.findall(text)}
    if "total" not in found:
        raise BackendError(f"no RecordingMicroAllocator statistics in tflite-micro's output: {text[:200]!r}")
    total, head, tail = found["total"], found.get("head", 0), found.get("tail", 0)

    probes = 1
    hi = start // ALIGN  # units of 16 bytes; hi works
    lo = 0  # an arena of 0 bytes never works
    guess = -(-total // ALIGN)
    if guess < hi:  # the recorded total usually suffices or nearly does: bracket it first
        probes += 1
        if _works(model, guess * ALIGN, timeout_s):
            hi = guess
        else:
            lo, step = guess, 1
            while probes < MAX_PROBES and lo + step < hi:
                probes += 1
                if _works(model, (lo + step) * ALIGN, timeout_s):
                    hi = lo + step
                    break
                lo, step = lo + step, step * 2
    while hi - lo > 1 and probes < MAX_PROBES:
        mid = (lo + hi) // 2
        probes += 1
        lo, hi = (lo, mid) if _works(model, mid * ALIGN, timeout_s) else (mid, hi)
    # Out of probes: hi still works, so the answer is safe (maybe not the smallest).
    return ArenaReport(total, head, tail, hi * ALIGN)
