"""Building a registered model for a backend: ``build(entry, backend, precision, profile)
-> Artifact`` (files to write or send, plus the figures of the build).

One table, ``BACKENDS``: backend name -> builder. Each builder imports the model with the
compiler's frontend, runs that backend's build (``compilers.backends``), checks what the
board's runtime supports when a profile is given (TFLM: its operator list, refused before
anything is written or sent, naming every missing operator) and returns the files.

What it does not do: decide backend or precision for a device (deploy), cache builds, sign
or deliver them.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

from device_profiles import Profile
from tinymlaas.registry import ModelEntry, load_graph


class BuildError(ValueError):
    """A build that cannot be made for this board or with these options (message says why)."""


@dataclass(frozen=True)
class Artifact:
    backend: str
    precision: str
    files: dict[str, bytes]  # file name -> content
    figures: dict[str, Any] = field(default_factory=dict)  # sizes, arena, sha256, ...
    warnings: tuple[str, ...] = ()


Step = Callable[[str], None]


def _source_graph(entry: ModelEntry, step: Step) -> Any:
    step("importing")
    return load_graph(entry.path.read_bytes(), entry.format)


def tensor_specs(graph: Any) -> list[dict[str, Any]]:
    """The model's inputs and outputs as the package manifest lists them: name, role, shape,
    dtype and (for quantised tensors) scale and zero point."""
    specs = []
    for role, names in (("input", graph.inputs), ("output", graph.outputs)):
        for name in names:
            t = graph.tensors[name]
            spec: dict[str, Any] = {"name": name, "role": role, "shape": list(t.shape), "dtype": t.dtype.value}
            if t.quant is not None and len(t.quant.scale) == 1:
                spec["scale"], spec["zero_point"] = float(t.quant.scale[0]), int(t.quant.zero_point[0])
            specs.append(spec)
    return specs


def fit_figures(sram_need: int, sram_free: int, flash_need: int, flash_free: int,
                ok: bool = True, note: str = "") -> dict[str, Any]:
    """A fit verdict with its numbers ("yes", or "no: SRAM short by N B, ...")."""
    short = [f"{what} short by {need - free:,} B" for what, need, free in
             (("SRAM", sram_need, sram_free), ("flash", flash_need, flash_free)) if need > free]
    verdict = ("yes" if not short else "no: " + ", ".join(short)) + note
    return {"fits": ok and not short, "verdict": verdict, "sram_need": sram_need,
            "sram_free": sram_free, "flash_need": flash_need, "flash_free": flash_free}


def tflm_fit(arena: int, flash: int, board: Profile) -> dict[str, Any]:
    """Whether a TFLM model fits a board: arena + TFLM's own RAM against the free SRAM, the
    model against the free flash and the largest package the board takes."""
    runtime = board.runtime("tflm")
    return fit_figures(arena + (runtime.ram if runtime else 0), board.sram_free, flash,
                       min(board.flash_free, board.max_package), runtime is not None,
                       "" if runtime else " (no TFLM on this board)")


def _tflm(entry: ModelEntry, precision: str, profile: Profile | None, step: Step) -> Artifact:
    from compilers.backends.tflm import build_tflm

    operators = None
    if profile is not None:
        if profile.runtime("tflm") is None:
            raise BuildError(f"profile {profile.name} has no TFLM runtime "
                             f"(runtimes: {', '.join(r.name for r in profile.runtimes) or 'none'})")
        operators = profile.tflm_operators
    graph = _source_graph(entry, step)
    notes: list[str] = []
    step("compiling and measuring the arena in tflite-micro")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        b = build_tflm(graph, precision, name=entry.name, operators=operators,
                       calibration=str(entry.calibration) if entry.calibration else None)
    notes += [str(w.message) for w in caught]
    assert b.arena is not None
    figures = {"model": f"{entry.name}:{entry.version}", "source_sha256": entry.sha256,
               "backend": "tflm", "precision": precision, "bytes": len(b.flatbuffer),
               "sha256": b.sha256, "arena": b.arena.recommended, "arena_head": b.arena.head,
               "arena_tail": b.arena.tail, "offline_plan": b.offline_plan,
               "operators": list(b.operators), "tensors": tensor_specs(b.prepared.graph),
               "profile": profile.name if profile else None}
    if profile is not None:
        figures["fits"] = tflm_fit(b.arena.recommended, len(b.flatbuffer), profile)
    files = {f"{b.name}.tflite": b.flatbuffer}
    files.update({k: v.encode() for k, v in b.c_sources().items()})
    files["build.json"] = (json.dumps(figures, indent=2) + "\n").encode()
    return Artifact("tflm", precision, files, figures, tuple(notes))


def _wasm(entry: ModelEntry, precision: str, profile: Profile | None, step: Step) -> Artifact:
    from compilers.backends.wasm.build import build_wasm, wasm_fit

    graph = _source_graph(entry, step)
    step("compiling C and linking the Wasm module")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        b = build_wasm(graph, precision, name=entry.name, version=entry.version,
                       source_sha256=entry.sha256,
                       calibration=str(entry.calibration) if entry.calibration else None)
    figures: dict[str, Any] = {
        "model": f"{entry.name}:{entry.version}", "source_sha256": entry.sha256, "backend": "wasm",
        "precision": precision, "bytes": len(b.module), "sha256": b.sha256, "pages": b.pages,
        "arena": b.cmodel.arena_bytes, "abi": 1, "tensors": tensor_specs(b.prepared.graph),
        "profile": profile.name if profile else None}
    if profile is not None:
        runtime = next((r for r in profile.runtimes if r.name in ("wasm3", "wamr")), None)
        if runtime is None:
            raise BuildError(f"profile {profile.name} has no Wasm runtime "
                             f"(runtimes: {', '.join(r.name for r in profile.runtimes) or 'none'})")
        fit = wasm_fit(len(b.module), b.pages, sram_free=profile.sram_free,
                       flash_free=profile.flash_free, runtime_ram=runtime.ram,
                       runtime_flash=runtime.flash)
        figures["fits"] = {"fits": fit.fits, "verdict": fit.reason, "sram_need": fit.sram_need,
                           "sram_free": fit.sram_free, "flash_need": fit.flash_need,
                           "flash_free": fit.flash_free}
    files = {f"{b.cmodel.name}.wasm": b.module,
             "build.json": (json.dumps(figures, indent=2) + "\n").encode()}
    return Artifact("wasm", precision, files, figures, tuple(str(w.message) for w in caught))


def _c(entry: ModelEntry, precision: str, profile: Profile | None, step: Step) -> Artifact:
    from compilers.backends.c.build import STACK_ESTIMATE, build_c

    if profile is None:
        raise BuildError("the C backend needs --profile: its flash and RAM are measured by "
                         "compiling for the board's core")
    graph = _source_graph(entry, step)
    step(f"generating C and compiling it for {profile.core}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        b = build_c(graph, precision, profile.core, name=entry.name,
                    calibration=str(entry.calibration) if entry.calibration else None)
    s = b.sizes
    figures = {"model": f"{entry.name}:{entry.version}", "source_sha256": entry.sha256,
               "backend": "c", "precision": precision, "core": profile.core,
               "profile": profile.name, "arena": b.cmodel.arena_bytes,
               "sections": {"text": s.text, "rodata": s.rodata, "data": s.data, "bss": s.bss},
               "flash": b.flash, "ram": b.ram, "stack_estimate": STACK_ESTIMATE,
               "fits": fit_figures(b.ram, profile.sram_free, b.flash, profile.flash_free)}
    files = {"model.c": b.cmodel.source.encode(), "model.h": b.cmodel.header().encode(),
             "build.json": (json.dumps(figures, indent=2) + "\n").encode()}
    return Artifact("c", precision, files, figures, tuple(str(w.message) for w in caught))


BACKENDS: dict[str, Callable[[ModelEntry, str, Profile | None, Step], Artifact]] = {
    "tflm": _tflm, "wasm": _wasm, "c": _c}


def build(entry: ModelEntry, backend: str, precision: str, profile: Profile | None = None,
          step: Step = lambda _: None) -> Artifact:
    """Build ``entry`` with ``backend`` at ``precision`` (``step`` hears each phase)."""
    if backend not in BACKENDS:
        raise BuildError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    return BACKENDS[backend](entry, precision, profile, step)
