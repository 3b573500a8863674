"""Which backend and precision to deploy on a device: every candidate measured, the best that fits.

Candidates are the backends whose runtime the device has (``BACKEND_RUNTIMES``) times the
precisions float32 and int8. Each candidate is judged on figures of the real build (the
compile cache's artifact: its sealed package size, TFLM's measured arena, the Wasm module's
pages) against the device's free resources less a safety margin:

- flash: the package must fit ``min(flash free, max package) * (1 - margin)``; the runtime's
  own flash is already outside "flash free" (runtimes are part of the firmware: tinymlaas
  delivers models, not runtimes);
- SRAM: TFLM arena + TFLM's own RAM, or Wasm pages x 64 KiB + the Wasm runtime's RAM, must fit
  ``SRAM free * (1 - margin)``;
- TFLM: every operator of the flatbuffer must be registered in the device's TFLM build.

Among those that fit: best expected accuracy first (float32 is the model as trained, int8 its
quantised approximation: ``ACCURACY``), then lowest estimated latency (MACs x cycles per MAC /
clock, ``CYCLES_PER_MAC``), then the smaller package. Nothing fits -> ``NoFit`` listing every
candidate and by how much it missed. ``backend`` / ``precision`` overrides narrow the
candidates; an override that does not fit is refused the same way.

The cycles-per-MAC table is an ESTIMATE used only to rank candidates, not a promise: TFLM int8
with CMSIS-NN ~1 cycle/MAC on a Cortex-M4/M7 (Arm's CMSIS-NN paper reports 0.5-2), reference
kernels ~4x that; a Wasm interpreter (wasm3) ~9x TFLM's reference kernels (bench/wasm.py on
this host: wasm3 20.1 ms vs tflite-micro 2.22 ms for the keyword model); float32 on a
single-precision FPU ~2x int8, and soft float without an FPU ~10x more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from compilers.backends.wasm.build import PAGE
from tinymlaas.deploy.target import RuntimeInfo, Target
from tinymlaas.lwm2m.errors import BadRequest, PreconditionFailed

BACKEND_RUNTIMES: dict[str, tuple[str, ...]] = {"tflm": ("tflm",), "wasm": ("wasm3", "wamr")}
PRECISIONS = ("float32", "int8")
ACCURACY = {"float32": 0, "int8": 1}  # rank, lower is better
CYCLES_PER_MAC = {("tflm", "int8"): 4.0, ("tflm", "float32"): 8.0, ("wasm", "int8"): 36.0, ("wasm", "float32"): 72.0}
FEATURE_SPEEDUP = {"cmsis-nn": 4.0, "esp-nn": 4.0}  # optimised int8 kernels in the TFLM build
SOFT_FLOAT = 10.0
SRAM_NEED = {"tflm": lambda f, rt: int(f["arena"]) + rt.ram,
             "wasm": lambda f, rt: int(f["pages"]) * PAGE + rt.ram}


class NoFit(PreconditionFailed):
    """No candidate fits the device (or the one asked for does not): the message lists them all
    (4.12 Precondition Failed, HTTP 412 in the admin API)."""

    def __init__(self, message: str, candidates: list["Candidate"]) -> None:
        super().__init__(message)
        self.candidates = candidates


@dataclass(frozen=True)
class Candidate:
    backend: str
    precision: str
    runtime: str
    package: int  # sealed package bytes: what goes to flash
    flash_usable: int
    sram_need: int
    sram_usable: int
    latency_ms: float | None
    problems: tuple[str, ...] = ()
    artifact_key: str = ""

    @property
    def fits(self) -> bool:
        return not self.problems

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}"

    def summary(self) -> str:
        figures = (f"flash {self.package:,} of {self.flash_usable:,} B, "
                   f"SRAM {self.sram_need:,} of {self.sram_usable:,} B usable")
        return f"{self.label}: " + ("fits" if self.fits else "; ".join(self.problems)) + f" ({figures})"

    def as_json(self) -> dict[str, Any]:
        return {"backend": self.backend, "precision": self.precision, "runtime": self.runtime,
                "package": self.package, "flash_usable": self.flash_usable, "sram_need": self.sram_need,
                "sram_usable": self.sram_usable, "latency_ms": self.latency_ms, "fits": self.fits,
                "problems": list(self.problems), "artifact_key": self.artifact_key}


def runtime_for(target: Target, backend: str) -> RuntimeInfo | None:
    return next((r for name in BACKEND_RUNTIMES[backend] if (r := target.runtime(name))), None)


def plan(target: Target, backend: str | None = None, precision: str | None = None) -> list[tuple[str, str, RuntimeInfo]]:
    """The (backend, precision, runtime) pairs worth building for this device."""
    if backend is not None and backend not in BACKEND_RUNTIMES:
        raise BadRequest(f"backend {backend!r}: expected one of {', '.join(BACKEND_RUNTIMES)}")
    if precision is not None and precision not in PRECISIONS:
        raise BadRequest(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    out = []
    for b in BACKEND_RUNTIMES if backend is None else (backend,):
        rt = runtime_for(target, b)
        if rt is None:
            continue
        out.extend((b, p, rt) for p in (PRECISIONS if precision is None else (precision,)))
    if not out:
        have = ", ".join(f"{r.name} {r.version}" for r in target.runtimes) or "none"
        wanted = " or ".join(BACKEND_RUNTIMES[backend]) if backend else "a TFLM or Wasm runtime"
        raise NoFit(f"{target.endpoint} does not fit: it has no runtime for "
                    f"{backend or 'any backend'} (needs {wanted}; the device reports: {have})", [])
    return out


def latency_ms(target: Target, backend: str, precision: str, runtime: RuntimeInfo, macs: int) -> float | None:
    if not target.clock_mhz:
        return None
    cycles = CYCLES_PER_MAC[(backend, precision)]
    if precision == "int8":
        cycles /= max([FEATURE_SPEEDUP.get(f, 1.0) for f in runtime.features], default=1.0)
    elif target.fpu == "none":
        cycles *= SOFT_FLOAT
    return round(macs * cycles / (target.clock_mhz * 1000.0), 3)


def evaluate(target: Target, backend: str, precision: str, runtime: RuntimeInfo, figures: dict[str, Any] | None,
             package: int, macs: int, margin: float, error: str | None = None, key: str = "") -> Candidate:
    """One candidate judged: ``figures`` of its build (None with ``error`` when it did not build)."""
    flash_usable = int(min(target.flash_free, target.max_package) * (1 - margin))
    sram_usable = int(target.sram_free * (1 - margin))
    if figures is None:
        return Candidate(backend, precision, runtime.name, 0, flash_usable, 0, sram_usable, None,
                         (f"does not build: {error}",), key)
    problems = []
    sram_need = SRAM_NEED[backend](figures, runtime)
    if backend == "wasm" and target.sram_free - runtime.ram < PAGE:
        problems.append(f"cannot run Wasm at all: {target.sram_free - runtime.ram:,} B of SRAM left after "
                        f"{runtime.name}, less than one 64 KiB page")
    elif sram_need > sram_usable:
        problems.append(f"SRAM short by {sram_need - sram_usable:,} B")
    if package > flash_usable:
        problems.append(f"flash short by {package - flash_usable:,} B")
    if backend == "tflm" and target.operators:
        missing = sorted(set(figures.get("operators", ())) - set(target.operators))
        if missing:
            problems.append(f"TFLM build lacks operators {', '.join(missing)}")
    return Candidate(backend, precision, runtime.name, package, flash_usable, sram_need, sram_usable,
                     latency_ms(target, backend, precision, runtime, macs), tuple(problems), key)


def rank(c: Candidate) -> tuple[Any, ...]:
    return (ACCURACY[c.precision], c.latency_ms if c.latency_ms is not None else float("inf"), c.package, c.backend)


def decide(target: Target, candidates: list[Candidate], margin: float) -> Candidate:
    """The best candidate that fits, or ``NoFit`` naming every candidate and its shortfall."""
    fitting = sorted((c for c in candidates if c.fits), key=rank)
    if fitting:
        return fitting[0]
    lines = "; ".join(c.summary() for c in candidates)
    raise NoFit(f"{target.endpoint} ({target.profile or target.core}) does not fit: no candidate fits with a "
                f"{margin:.0%} safety margin: {lines}", candidates)
