"""Building a registered model with an installed backend: ``build(entry, backend, precision,
profile) -> Export`` (the backend's ``Artifact``, its fit on the board, the files to write).

The model is imported with the compiler's frontend, with the version's import options and side
files (``registry.load_graph``; its input layout goes to the backend); the backend comes from the registry
(``compilers.backends.registry``: every installed backend, none named here). With a profile,
the board is the build's ``Target`` (through the first of the backend's runtimes the board
has; a board-specific backend such as portable C measures for the board's core), so a backend
refuses what the board's runtime cannot take before anything is written (TFLM: every missing
operator), and the backend's ``fit`` judges the measured needs against what the board has
free (less ``margin``, the deploy decision's safety fraction, when one is given). ``build.json``
holds everything but the bytes. ``report`` is ``models inspect``'s part without a board (the
planner's estimate, the import's notes); ``board_fit`` a backend's fit on a board from a local
build (``tinymlaas.deploy.verdict`` uses it for backends the deploy decision does not build).

What it does not do: decide backend or precision for a device (deploy), cache builds, sign
or deliver them, or judge deliverable backends for ``models inspect`` (``deploy.verdict``
does, through the compile cache, as the deploy decision does).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

from compilers.backends import registry
from compilers.backends.base import (Artifact, Backend, BackendUnavailable, BuildOptions, Fit, RuntimeSpec,
                                     Shortfall, Target)
from device_profiles import Profile
from tinymlaas.registry import ModelEntry, load_graph, load_model


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
        raise BuildError("no installed backend makes an artifact "
                         + (f"{profile.name} can run" if profile else "at all"))
    return usable[0]


def board_target(backend: Backend, profile: Profile) -> Target:
    """What ``profile``'s board offers ``backend`` (BuildError when it has none of its runtimes)."""
    if not backend.runtimes:  # linked into the firmware: the board itself, no runtime of its own
        return Target(profile.name, profile.core, profile.clock_mhz, profile.fpu, profile.sram_free,
                      profile.flash_free, profile.max_package, RuntimeSpec("firmware", ""))
    runtime = next((r for r in backend.runtimes if profile.runtime(r)), None)
    if runtime is None:
        title = getattr(backend, "short_title", backend.title)
        raise BuildError(f"profile {profile.name} has no {title} runtime (it needs "
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
    graph = load_graph(entry)
    step(f"building for {b.title}" + (f" on {target.core}" if target is not None and b.board_specific else ""))
    given = target if refuse_early or b.board_specific else None
    art = b.build(graph, BuildOptions(precision, entry.name, entry.version, entry.sha256,
                                      str(entry.calibration) if entry.calibration else None, given,
                                      input_layout=entry.options.input_layout))
    fit = b.fit(art.needs, replace(target, margin=margin), precision, art.macs) if target is not None else None
    described = {**art.details, **art.describe(), "model": f"{entry.name}:{entry.version}",
                 "source_sha256": entry.sha256, "profile": profile.name if profile else None,
                 **entry.options.as_json(), "fits": fit.as_json() if fit is not None else None}
    described.pop("details", None)
    files = {**art.files, "build.json": (json.dumps(described, indent=2) + "\n").encode()}
    return Export(art, fit, files)


def board_fit(entry: ModelEntry, backend: str, precision: str, board: Profile, margin: float) -> Fit:
    """``backend``'s fit on ``board`` for the real build, every shortfall listed; a build that
    fails is a fit with the shortfall "does not build: <why>" (``models inspect``'s row for a
    backend the deploy decision does not consider: export-only, board-specific)."""
    from compilers.errors import CompilerError

    try:
        fit = build(entry, backend, precision, board, refuse_early=False, margin=margin).fit
    except (CompilerError, BuildError, ValueError) as exc:
        t = replace(board_target(registry.get(backend), board), margin=margin)
        return Fit(backend, precision, t.runtime.name, 0, t.flash_usable_bytes, 0, t.sram_usable_bytes, None,
                   "estimate", (Shortfall("build", 0, 0, f"does not build: {exc}"),))
    assert fit is not None
    return fit


def report(entry: ModelEntry) -> dict[str, Any]:
    """``models inspect`` without a board: ops, parameters, MACs and the planner's estimate per
    precision (an estimate, never the verdict), the version's import options and the import's notes."""
    from compilers.report import report as planner_report

    imported = load_model(entry)
    return {**planner_report(imported.graph).as_dict(), "model": f"{entry.name}:{entry.version}",
            "sha256": entry.sha256, "format": entry.format, **entry.options.as_json(),
            "external_files": [loc for loc, _ in entry.external], "notes": list(imported.notes)}


__all__ = ["BuildError", "Export", "board_fit", "board_target", "build", "default_backend", "report",
           "usable_backends"]
