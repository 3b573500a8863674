"""One portable-C build: ``build_c(graph, precision, core) -> CBuild``, from an imported model to
a C library with its flash and RAM measured for a board's core.

Steps: ``precision.prepare`` (int8 keeps per-channel weights everywhere; ``input_layout``) -> ``emit.to_c`` (one
C99 file, static planned arena) -> ``cross.section_sizes`` for the core (flash and RAM are the
object file's sections, measured; the stack is an estimate, ``STACK_ESTIMATE``).

What it does not do: link for a board, choose a backend for a device, sign or send.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

from ...ir import Graph
from ...precision import Calibration, Prepared, prepare
from .cross import SectionSizes, section_sizes
from .emit import CModel, to_c

STACK_ESTIMATE = 1024  # bytes: invoke() keeps loop indexes and accumulators in registers/frame


@dataclass(frozen=True)
class CBuild:
    cmodel: CModel
    prepared: Prepared
    core: str
    sizes: SectionSizes

    @property
    def ram(self) -> int:
        """Static RAM (.data + .bss, the arena included) plus the stack estimate."""
        return self.sizes.ram + STACK_ESTIMATE

    @property
    def flash(self) -> int:
        return self.sizes.flash


def build_c(graph: Graph, precision: str, core: str, *, name: str | None = None,
            calibration: Calibration = None, method: str = "minmax", input_layout: str = "nchw",
            warn: Callable[..., object] = warnings.warn) -> CBuild:
    """``graph`` as C for ``core`` (a profile's core name), with measured section sizes."""
    prepared = prepare(graph, precision, calibration=calibration, method=method, input_layout=input_layout,
                       warn=warn)
    cm = to_c(prepared.graph, name=name or graph.name)
    return CBuild(cm, prepared, core, section_sizes(cm.source, core))


__all__ = ["CBuild", "STACK_ESTIMATE", "build_c"]
