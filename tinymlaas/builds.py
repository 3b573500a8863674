"""Building a registered model with an installed backend: ``build(entry, backend, precision,
profile) -> Export`` (the backend's ``Artifact``, its fit on the board, the files to write).

The model is imported with the compiler's frontend; the backend comes from the registry
(``compilers.backends.registry``: every installed backend, none named here). With a profile,
the board is the build's ``Target`` (through the first of the backend's runtimes the board
has; a board-specific backend such as portable C measures for the board's core), so a backend
refuses what the board's runtime cannot take before anything is written (TFLM: every missing
operator), and the backend's ``fit`` judges the measured needs against what the board has
free (less ``margin``, the deploy decision's safety fraction, when one is given). ``build.json``
holds everything but the bytes.

What it does not do: decide backend or precision for a device (deploy), cache builds, sign
or deliver them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

from compilers.backends import registry
from compilers.backends.base import Artifact, Backend, BackendUnavailable, BuildOptions, Fit, RuntimeSpec, Target
from device_profiles import Profile
from tinymlaas.registry import ModelEntry, load_graph


class BuildError(ValueError):
    """A build that cannot be made for this board or with these options (message says why)."""


@dataclass(frozen=True)
class Export:
    artifact: Artifact
    fit: Fit | None  # on the profile's board, when one was given
    files: Mapping[str, bytes]  # the artifact's files and build.json

    @property
    def build_json(self) -> dict[str, Any]:
        return dict(json.loads(self.files["build.json"]))


Step = Callable[[str], None]


def usable_backends(profile: Profile) -> tuple[Backend, ...]:
    """The installed backends a board can use: a runtime of theirs, or linked into its firmware."""
    return tuple(b for b in registry.backends().values()
                 if (b.board_specific and not b.runtimes) or any(profile.runtime(r) for r in b.runtimes))


def default_backend(profile: Profile | None) -> str:
    """The first installed deliverable backend the board can run (any board: the first installed)."""
    usable = [b.name for b in registry.deliverable().values() if profile is None or b in usable_backends(profile)]
    if not usable:
        raise BuildError("no installed backend makes an artifact " + (f"{profile.name} can run" if profile else "at all"))
    return usable[0]


def board_target(backend: Backend, profile: Profile) -> Target:
    """What ``profile``'s board offers ``backend`` (BuildError when it has none of its runtimes)."""
    if not backend.runtimes:  # linked into the firmware: the board itself, no runtime of its own
        return Target(profile.name, profile.core, profile.clock_mhz, profile.fpu, profile.sram_free,
                      profile.flash_free, profile.max_package, RuntimeSpec("firmware", ""))
    runtime = next((r for r in backend.runtimes if profile.runtime(r)), None)
    if runtime is None:
        raise BuildError(f"profile {profile.name} has no {backend.short_title} runtime (it needs "
                         f"{' or '.join(backend.runtimes)}; runtimes: "
                         f"{', '.join(r.name for r in profile.runtimes) or 'none'})")
    return profile.target(runtime)


def build(entry: ModelEntry, backend: str, precision: str, profile: Profile | None = None,
          step: Step = lambda _: None, refuse_early: bool = True, margin: float = 0.0) -> Export:
    """Build ``entry`` with ``backend`` at ``precision`` (``step`` hears each phase).

    With ``refuse_early`` the backend refuses what the board cannot take before it measures
    anything (an export); without, it builds as for any board and the fit lists every
    shortfall (``models inspect``, where the verdict is wanted in full)."""
    try:
        b = registry.get(backend)
    except BackendUnavailable as exc:
        raise BuildError(str(exc)) from None
    if precision not in b.precisions:
        raise BuildError(f"precision {precision!r}: expected one of {', '.join(b.precisions)}")
    target = board_target(b, profile) if profile is not None else None
    if target is None and b.board_specific:
        raise BuildError(f"the {b.name} backend needs --profile: its flash and RAM are measured by "
                         f"compiling for the board's core")
    step("importing")
    graph = load_graph(entry.path.read_bytes(), entry.format)
    step(f"building for {b.title}" + (f" on {target.core}" if target is not None and b.board_specific else ""))
    given = target if refuse_early or b.board_specific else None
    art = b.build(graph, BuildOptions(precision, entry.name, entry.version, entry.sha256,
                                      str(entry.calibration) if entry.calibration else None, given))
    fit = b.fit(art.needs, replace(target, margin=margin), precision, art.macs) if target is not None else None
    described = {**art.details, **art.describe(), "model": f"{entry.name}:{entry.version}",
                 "source_sha256": entry.sha256, "profile": profile.name if profile else None,
                 "fits": fit.as_json() if fit is not None else None}
    described.pop("details", None)
    files = {**art.files, "build.json": (json.dumps(described, indent=2) + "\n").encode()}
    return Export(art, fit, files)


def verdicts(entry: ModelEntry, board: Profile, precisions: list[str], only: str | None, margin: float,
             step: Step = lambda _: None) -> list[dict[str, Any]]:
    """Every backend the board can use at each of ``precisions``, built and judged by its fit."""
    from compilers.errors import CompilerError

    chosen = [b for b in usable_backends(board) if only is None or b.name == only]
    if only is not None and not chosen:
        raise BuildError(f"backend {only!r} cannot be used on {board.name} (usable: "
                         f"{', '.join(b.name for b in usable_backends(board)) or 'none'})")
    rows: list[dict[str, Any]] = []
    for b in chosen:
        for precision in (p for p in precisions if p in b.precisions):
            step(f"building {entry.name}:{entry.version} for {board.name}: {b.name} {precision}")
            try:
                fit = build(entry, b.name, precision, board, refuse_early=False, margin=margin).fit
            except (CompilerError, BuildError, ValueError) as exc:
                rows.append({"backend": b.name, "precision": precision, "fits": False,
                             "problems": [f"does not build: {exc}"], "latency_ms": None})
                continue
            assert fit is not None
            rows.append(fit.as_json())
    return rows


def inspect(entry: ModelEntry, board: Profile | None, only: str | None = None, margin: float = 0.10,
            step: Step = lambda _: None) -> dict[str, Any]:
    """``models inspect``: ops, parameters, MACs and the planner's estimate per precision; with
    a board, every backend it can use built for real and judged by its fit."""
    from compilers.report import report

    rep = report(load_graph(entry.path.read_bytes(), entry.format))
    fits = verdicts(entry, board, [f.precision for f in rep.footprints], only, margin, step) if board else []
    return {**rep.as_dict(), "model": f"{entry.name}:{entry.version}", "sha256": entry.sha256,
            "format": entry.format, "profile": board.name if board else None, "margin": margin, "fits": fits}


__all__ = ["BuildError", "Export", "board_target", "build", "default_backend", "inspect", "usable_backends",
           "verdicts"]
