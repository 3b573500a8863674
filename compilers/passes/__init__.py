"""Graph passes: small rewrites ``Graph -> Graph`` behind one interface, ``Pass``.

What it does: each pass lives in its own module and is a plain function taking a validated
``Graph`` and returning a new one (the IR is frozen; passes build new graphs) that computes
the same outputs under ``compilers.reference.run`` (the oracle; exact for every pass but
batch-norm and bias folding, which regroup float arithmetic in the last bits).
``run_passes(graph, passes)`` applies them in order, validates after each one and names the
pass in any error (``PassError``). ``standard_pipeline()`` is the default list:

1. ``constant_folding``: nodes on constants become constants (DEQUANTIZE of weights kept);
   then ``div_by_constant``: DIV by a float constant becomes MUL by its reciprocal.
2. ``identity_elimination``: IDENTITY, no-op RESHAPE/TRANSPOSE/CAST go; reshape chains shorten.
3. ``transpose_cancel``: inverse TRANSPOSE pairs cancel (pushed through element-wise ops),
   data-free transposes become RESHAPEs. Layout (NCHW -> NHWC) is *not* a pass: it is
   decided at emission by the backends; ``transpose_cancel``'s docstring says why.
4. ``identity_elimination`` again: the RESHAPEs made by step 3 merge with their neighbours.
5. ``batchnorm_folding``: BATCH_NORM after CONV/CONV_TRANSPOSE/GEMM/2-D MATMUL into weights.
6. ``bias_folding``: per-channel ADD after CONV into its bias; MATMUL + ADD into GEMM.
7. ``fuse_activations``: RELU/CLIP(0,6)/CLIP(-1,1)/TANH into the op before (float tensors).
8. ``dead_code``: nodes and constants that reach no output go.

Not in the pipeline: ``lift_1d`` (1-D windows as 2-D of height 1; the TFLM emitter runs
it), ``unfuse_tanh`` (before int8 quantisation), ``float16.upcast_float16``
(``precision.prepare``), ``lower_int8``.

What it does not do: no quantisation, no layout change, no scheduling (the memory planner,
``compilers.planner``, works on the order the graph has).
"""

from __future__ import annotations

from typing import Callable, Iterable

from ..errors import GraphError
from ..ir import Graph
from .batchnorm_folding import batchnorm_folding
from .bias_folding import bias_folding
from .constant_folding import constant_folding
from .dead_code import dead_code
from .div_by_constant import div_by_constant
from .fuse_activations import fuse_activations, unfuse_tanh
from .identity_elimination import identity_elimination
from .lower_int8 import lower_int8, unlowered  # noqa: F401 - not in standard_pipeline()
from .lift_1d import lift_1d
from .transpose_cancel import storage_noop_transposes, transpose_cancel

Pass = Callable[[Graph], Graph]


class PassError(GraphError):
    """A pass failed or produced an invalid graph; the message names the pass."""

    def __init__(self, pass_name: str, message: str) -> None:
        self.pass_name = pass_name
        super().__init__(f"pass {pass_name!r}: {message}")


def pass_name(p: Pass) -> str:
    inner = getattr(p, "func", p)  # functools.partial
    return str(getattr(inner, "__name__", repr(p)))


def run_passes(graph: Graph, passes: Iterable[Pass]) -> Graph:
    """Apply ``passes`` in order, validating the graph after each one."""
    graph.validate()
    for p in passes:
        name = pass_name(p)
        try:
            out = p(graph)
        except Exception as e:
            raise PassError(name, f"{type(e).__name__}: {e}") from e
        if not isinstance(out, Graph):
            raise PassError(name, f"returned {type(out).__name__}, not a Graph")
        try:
            out.validate()
        except Exception as e:
            raise PassError(name, f"left an invalid graph: {e}") from e
        graph = out
    return graph


def standard_pipeline() -> list[Pass]:
    return [constant_folding, div_by_constant, identity_elimination, transpose_cancel,
            identity_elimination, batchnorm_folding, bias_folding, fuse_activations, dead_code]


def optimize(graph: Graph) -> Graph:
    """``run_passes(graph, standard_pipeline())``."""
    return run_passes(graph, standard_pipeline())


__all__ = ["Pass", "PassError", "run_passes", "standard_pipeline", "optimize",
           "batchnorm_folding", "bias_folding", "constant_folding", "dead_code",
           "fuse_activations", "identity_elimination", "transpose_cancel", "div_by_constant",
           "lift_1d", "unfuse_tanh",
           "storage_noop_transposes", "lower_int8", "unlowered"]
