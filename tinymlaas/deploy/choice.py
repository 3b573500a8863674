"""Which backend and precision to deploy on a device: every candidate measured, the best that fits.

Candidates are the installed deliverable backends (``compilers.backends.registry``) whose
runtime the device reports, times the precisions each builds. Each candidate is judged by its
backend's ``fit`` on the figures of the real build (the compile cache's artifact: its measured
``Needs``, with the sealed package as its flash) against what the device offers through that
runtime, less a safety margin (``Target.margin``): the package against ``min(flash free, max
package)``, the model's RAM plus the runtime's own against the free SRAM, and for a runtime
judged by its operator list (TFLM) the artifact's operators against the device's build; a
backend may add its own rules (Wasm: at least one 64 KiB page). Runtimes are part of the
firmware: tinymlaas delivers models, not runtimes, so a runtime's own flash is already outside
"flash free".

Among those that fit: best expected accuracy first (float32 is the model as trained, int8 its
quantised approximation: ``ACCURACY``), then lowest estimated latency (the backend's
``latency_ms``: MACs x cycles per MAC / clock, an estimate for ranking), then the smaller
package. Nothing fits -> ``NoFit`` listing every candidate and by how much it missed.
``backend`` / ``precision`` overrides narrow the candidates; an override that does not fit is
refused the same way.

What it does not do: build (the compile cache) or know any backend by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from compilers.backends import registry
from compilers.backends.base import Fit, Needs, RuntimeSpec, Shortfall
from tinymlaas.deploy.target import DeviceTarget
from lwm2m.errors import BadRequest, PreconditionFailed

ACCURACY = {"float32": 0, "int8": 1}  # rank, lower is better


class NoFit(PreconditionFailed):
    """No candidate fits the device (or the one asked for does not): the message lists them all
    (4.12 Precondition Failed, HTTP 412 in the admin API)."""

    def __init__(self, message: str, candidates: list["Candidate"]) -> None:
        super().__init__(message)
        self.candidates = candidates


@dataclass(frozen=True)
class Candidate:
    """One backend and precision for one device: its backend's ``Fit`` and the build it judges."""

    fit: Fit
    artifact_key: str = ""

    @property
    def fits(self) -> bool:
        return self.fit.fits

    @property
    def backend(self) -> str:
        return self.fit.backend

    @property
    def precision(self) -> str:
        return self.fit.precision

    @property
    def label(self) -> str:
        return self.fit.label

    @property
    def problems(self) -> tuple[str, ...]:
        return self.fit.problems

    def summary(self) -> str:
        f = self.fit
        figures = (f"flash {f.flash_bytes:,} of {f.flash_usable_bytes:,} B, "
                   f"SRAM {f.ram_bytes:,} of {f.ram_usable_bytes:,} B usable")
        return f"{self.label}: " + ("fits" if self.fits else "; ".join(self.problems)) + f" ({figures})"

    def as_json(self) -> dict[str, Any]:
        return {**self.fit.as_json(), "artifact_key": self.artifact_key}


def _precisions() -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for b in registry.deliverable().values():
        seen.update(dict.fromkeys(b.precisions))
    return tuple(seen)


def plan(target: DeviceTarget, backend: str | None = None,
         precision: str | None = None) -> list[tuple[str, str, RuntimeSpec]]:
    """The (backend, precision, runtime) triples worth building for this device."""
    deliverable = registry.deliverable()
    if backend is not None and backend not in deliverable:
        why = (f" ({backend} makes no artifact a device runs: it only exports)"
               if backend in registry.backends() else "")
        raise BadRequest(f"backend {backend!r}: expected one of {', '.join(deliverable) or 'none installed'}{why}")
    if precision is not None and precision not in _precisions():
        raise BadRequest(f"precision {precision!r}: expected one of {', '.join(_precisions())}")
    out: list[tuple[str, str, RuntimeSpec]] = []
    for b in deliverable.values() if backend is None else (deliverable[backend],):
        rt = next((r for name in b.runtimes if (r := target.runtime(name))), None)
        if rt is None:
            continue
        out.extend((b.name, p, rt) for p in (b.precisions if precision is None else (precision,)) if p in b.precisions)
    if not out:
        have = ", ".join(f"{r.name} {r.version}" for r in target.runtimes) or "none"
        wanted = (" or ".join(deliverable[backend].runtimes) if backend else
                  "a runtime an installed backend targets: " + (", ".join(registry.runtime_names()) or "none"))
        raise NoFit(f"{target.endpoint} does not fit: it has no runtime for "
                    f"{backend or 'any backend'} (needs {wanted}; the device reports: {have})", [])
    return out


def evaluate(target: DeviceTarget, backend: str, precision: str, runtime: RuntimeSpec, needs: Needs | None,
             macs: int, margin: float, error: str | None = None, key: str = "") -> Candidate:
    """One candidate judged by its backend: ``needs`` of its build with the package as flash
    (None with ``error`` when it did not build)."""
    t = target.target(runtime.name, margin)
    if needs is None:
        short = (Shortfall("build", 0, 0, f"does not build: {error}"),)
        return Candidate(Fit(backend, precision, runtime.name, 0, t.flash_usable_bytes, 0, t.sram_usable_bytes,
                             None, "estimate", short), key)
    return Candidate(registry.get(backend).fit(needs, t, precision, macs), key)


def rank(c: Candidate) -> tuple[Any, ...]:
    f = c.fit
    return (ACCURACY.get(f.precision, len(ACCURACY)), f.latency_ms if f.latency_ms is not None else float("inf"),
            f.flash_bytes, f.backend)


def decide(target: DeviceTarget, candidates: list[Candidate], margin: float) -> Candidate:
    """The best candidate that fits, or ``NoFit`` naming every candidate and its shortfall."""
    fitting = sorted((c for c in candidates if c.fits), key=rank)
    if fitting:
        return fitting[0]
    lines = "; ".join(c.summary() for c in candidates)
    raise NoFit(f"{target.endpoint} ({target.profile or target.core}) does not fit: no candidate fits with a "
                f"{margin:.0%} safety margin: {lines}", candidates)


__all__ = ["ACCURACY", "Candidate", "NoFit", "decide", "evaluate", "plan", "rank"]
