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


def _tflm(entry: ModelEntry, precision: str, profile: Profile | None, step: Step) -> Artifact:
    from compilers.backends import build_tflm

    operators = None
    if profile is not None:
        if profile.runtime("tflm") is None:
            raise BuildError(f"profile {profile.name} has no TFLM runtime "
                             f"(runtimes: {', '.join(r.name for r in profile.runtimes) or 'none'})")
        operators = profile.tflm_operators
    step("importing")
    graph = load_graph(entry.path.read_bytes(), entry.format)
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
               "operators": list(b.operators), "profile": profile.name if profile else None}
    if profile is not None:
        runtime = profile.runtime("tflm")
        assert runtime is not None
        figures["fits"] = {"sram_need": b.arena.recommended + runtime.ram, "sram_free": profile.sram_free,
                           "flash_need": len(b.flatbuffer), "flash_free": profile.flash_free}
    files = {f"{b.name}.tflite": b.flatbuffer}
    files.update({k: v.encode() for k, v in b.c_sources().items()})
    files["build.json"] = (json.dumps(figures, indent=2) + "\n").encode()
    return Artifact("tflm", precision, files, figures, tuple(notes))


BACKENDS: dict[str, Callable[[ModelEntry, str, Profile | None, Step], Artifact]] = {"tflm": _tflm}


def build(entry: ModelEntry, backend: str, precision: str, profile: Profile | None = None,
          step: Step = lambda _: None) -> Artifact:
    """Build ``entry`` with ``backend`` at ``precision`` (``step`` hears each phase)."""
    if backend not in BACKENDS:
        raise BuildError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    return BACKENDS[backend](entry, precision, profile, step)
