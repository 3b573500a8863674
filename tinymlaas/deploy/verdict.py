"""The deploy decision's candidates, built and judged: for a device (``Deployer.decide``) and for
a board without a device (``models inspect --profile``), by one function, so the two cannot
disagree.

``candidates(cache, seal, target, entry, pairs, margin)`` builds every (backend, precision)
pair through the compile cache and judges each by its backend's ``fit`` (``choice.evaluate``)
on the measured ``Needs``, with the sealed package as its flash (``seal``: the server's signing
key; Ed25519 signatures have one length whatever the key, so a CLI without the server's key
seals with a key of its own and gets the same sizes) against the device's ``DeviceTarget``
less the margin. A pair that does not build is a candidate with the shortfall "does not build".

``inspect(entry, board, cache, seal)`` is ``models inspect``: the planner's estimate and the
import's notes (``builds.report``, an estimate, never the verdict) and, with a board, one row
per backend and precision the board can use. For the deliverable backends the board is the
``DeviceTarget`` of a device assigned that profile (``profile_device``: the snapshot the server
makes for it) and the rows are exactly the deploy decision's candidates, from the same compile
cache: the server's when it runs (inspect and deploy share builds), else the data directory's.
Backends the decision does not consider (export-only, board-specific: portable C) are built
locally and judged by their fit (``builds.board_fit``).

What it does not do: pick a candidate (``choice.decide``), read a device (``service``), deliver.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from compilers.backends import registry
from compilers.backends.base import RuntimeSpec
from device_profiles import Profile
from tinymlaas import builds
from tinymlaas.deploy import choice
from tinymlaas.deploy.cache import Built, CompileCache, CompileFailed
from tinymlaas.deploy.target import DeviceTarget, target_from_snapshot
from tinymlaas.registry import ModelEntry

Seal = Callable[[Built, ModelEntry], bytes]
Step = Callable[[str], None]


def profile_device(board: Profile) -> DeviceTarget:
    """What the server's decision sees for a device assigned ``board`` (its capability snapshot)."""
    return target_from_snapshot(board.name, "assigned-profile", {"profile": board.name, **board.figures()},
                                {board.name: board})


async def candidates(cache: CompileCache, seal: Seal, target: DeviceTarget, entry: ModelEntry,
                     pairs: list[tuple[str, str, RuntimeSpec]], margin: float
                     ) -> tuple[list[choice.Candidate], dict[str, Built]]:
    """Every pair built (compile cache) and judged on ``target``; the builds by artifact key."""
    made = await asyncio.gather(*(cache.get(entry, b, p) for b, p, _ in pairs), return_exceptions=True)
    out, by_key = [], {}
    for (backend, precision, runtime), built in zip(pairs, made, strict=True):
        if isinstance(built, CompileFailed):
            out.append(choice.evaluate(target, backend, precision, runtime, None, 0, margin, error=str(built)))
            continue
        if isinstance(built, BaseException):
            raise built
        by_key[built.key] = built
        needs = built.artifact.needs.stored_as(len(seal(built, entry)))
        out.append(choice.evaluate(target, backend, precision, runtime, needs, built.artifact.macs, margin,
                                   key=built.key))
    return out, by_key


async def board_rows(entry: ModelEntry, board: Profile, cache: CompileCache, seal: Seal, only: str | None = None,
                     margin: float = 0.10, step: Step = lambda _: None, local: bool = True) -> list[dict[str, Any]]:
    """One row per backend and precision ``board`` can use (module doc); ``local=False`` leaves
    out the backends the deploy decision does not consider (they are built here, not cached)."""
    usable = builds.usable_backends(board)
    chosen = [b for b in usable if only is None or b.name == only]
    if only is not None and not chosen:
        raise builds.BuildError(f"backend {only!r} cannot be used on {board.name} (usable: "
                                f"{', '.join(b.name for b in usable) or 'none'})")
    deliverable = registry.deliverable()
    device = profile_device(board)
    rows: list[dict[str, Any]] = []
    for b in chosen:
        if b.name in deliverable:
            step(f"building {entry.name}:{entry.version} for {board.name}: {b.name} (compile cache)")
            found, _ = await candidates(cache, seal, device, entry, choice.plan(device, b.name), margin)
            rows += [c.as_json() for c in found]
            continue
        for precision in b.precisions if local else ():
            step(f"building {entry.name}:{entry.version} for {board.name}: {b.name} {precision}")
            fit = await asyncio.to_thread(builds.board_fit, entry, b.name, precision, board, margin)
            rows.append(fit.as_json())
    return rows


async def inspect(entry: ModelEntry, board: Profile | None, cache: CompileCache, seal: Seal,
                  only: str | None = None, margin: float = 0.10, step: Step = lambda _: None) -> dict[str, Any]:
    """``models inspect``: the report, and with ``board`` every usable backend's verdict (module doc)."""
    rep = await asyncio.to_thread(builds.report, entry)
    rows = await board_rows(entry, board, cache, seal, only, margin, step) if board is not None else []
    return {**rep, "profile": board.name if board is not None else None, "margin": margin, "fits": rows}


__all__ = ["Seal", "board_rows", "candidates", "inspect", "profile_device"]
