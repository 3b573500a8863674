"""The memory planner: one arena offset per activation tensor, as small a peak as we can.

What it does:

* **Steps and lifetimes.** The nodes run in ``Graph.topological_order()``; node ``i`` is
  step ``i``. A tensor lives from the step that writes it (graph inputs: step 0) to the
  last step that reads it (graph outputs: to the last step), both ends included: at step
  ``s`` the node's inputs and outputs are all live, so they never share memory unless the
  op runs in place. Constants are not in the arena: they are flash (``compilers.stats``);
  nor are tensors computed from constants only (a QDQ graph's ``DEQUANTIZE(int8 weight)``,
  which ``constant_folding`` keeps on purpose): they are weights, read from flash by the
  int8 kernels or folded by a float backend.
* **In place** (``in_place=True``): a unary element-wise op (RELU, CLIP, the sigmoids,
  TANH, LEAKY_RELU, HARD_SWISH), IDENTITY or RESHAPE whose input is an arena tensor that
  dies at this node (and is no graph output) writes its result over its input when both
  have the same byte size: the two tensors become one *buffer*. CAST, QUANTIZE and
  DEQUANTIZE qualify under the same rule, i.e. only when ``size_of`` gives them equal
  sizes (see ``int8_size``), and so do the TRANSPOSEs named in ``views`` (those a
  channels-last backend stores as the same bytes). Chains (CONV -> RESHAPE -> RELU) share
  one buffer.
* **Sizes**: ``size_of(tensor)`` bytes (default: ``Tensor.nbytes``, from dtype and shape),
  rounded up to ``alignment``; a buffer's size is its largest member's.
* **Placement** (TFLM's GreedyMemoryPlanner idea): buffers sorted by size, largest first,
  each placed at the lowest offset where it overlaps no already placed buffer whose
  lifetime overlaps its own. The same first-fit placement is also run with two other
  orders (by first step, by size x lifetime) and, while no order reaches the lower bound,
  with up to ``search`` seeded random perturbations of the size order (each size scaled
  by a factor in [0.5, 1.5]); the lowest peak wins (``Plan.strategy`` says which).
  First-fit by size alone is not optimal when buffers of different sizes alternate (a QDQ
  graph's int8 and float tensors): on kws it is 12.5% above the bound, the search finds
  the bound. A trial is a few hundred microseconds, and the search stops at the bound.
* ``lower_bound``: the largest, over the steps, sum of the sizes of the buffers live at
  that step (in-place merges applied the same way). No plan can be below it.
* ``check(plan)`` re-derives lifetimes from the plan's steps and verifies that no two
  tensors live at the same step overlap in memory, except an in-place pair at the same
  offset; raises ``PlanError``.

What it does not do: no scratch buffers for kernels (im2col, CMSIS-NN's buffers), no
persistent/tail memory (TFLM's "tail": tensor structs, op data), no re-ordering of the
nodes to lower the peak, no splitting of ops (patch-based inference). An op writing into
its input in place is a promise the backend's kernel must keep: it is only made for the
element-wise and view ops above.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Collection, Mapping

from .errors import CompilerError
from .ir import Graph, Node, Op, Tensor

IN_PLACE_OPS = frozenset({Op.RELU, Op.CLIP, Op.LEAKY_RELU, Op.SIGMOID, Op.HARD_SIGMOID,
                          Op.HARD_SWISH, Op.TANH, Op.IDENTITY, Op.RESHAPE, Op.CAST,
                          Op.QUANTIZE, Op.DEQUANTIZE})

SizeOf = Callable[[Tensor], int]


class PlanError(CompilerError):
    """A memory plan is inconsistent (raised by ``check``)."""


def nbytes(t: Tensor) -> int:
    """The default size: dtype and shape."""
    return t.nbytes


def int8_size(t: Tensor) -> int:
    """One byte per element: the arena of the graph once lowered to int8 kernels. On a QDQ
    graph this makes DEQUANTIZE/QUANTIZE size-preserving, so they plan in place and each
    ``Q -> DQ`` pair is one int8 buffer, as in the lowered graph."""
    return t.size


def _align(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


@dataclass(frozen=True)
class Buffer:
    """One block of the arena: the tensors sharing it (in-place chains), its aligned size,
    the first and last step it is live, and its offset."""

    tensors: tuple[str, ...]
    size: int
    first: int
    last: int
    offset: int = 0


@dataclass(frozen=True)
class Plan:
    """A memory plan. ``offsets``/``sizes``/``lifetimes`` are per arena tensor (bytes,
    aligned; steps inclusive); ``aliases`` maps each arena tensor to its buffer's first
    tensor; ``steps`` is the execution order the lifetimes refer to."""

    offsets: Mapping[str, int]
    sizes: Mapping[str, int]
    peak: int
    lower_bound: int
    steps: tuple[Node, ...]
    lifetimes: Mapping[str, tuple[int, int]]
    aliases: Mapping[str, str]
    buffers: tuple[Buffer, ...]
    alignment: int
    strategy: str
    graph: Graph = field(compare=False, repr=False)
    views: frozenset[str] = frozenset()

    @property
    def overhead(self) -> float:
        """``peak / lower_bound - 1`` (0.0 when the plan is optimal)."""
        return self.peak / self.lower_bound - 1 if self.lower_bound else 0.0


def lifetimes(graph: Graph, steps: tuple[Node, ...]) -> dict[str, tuple[int, int]]:
    """First and last step (inclusive) of every arena tensor: the graph inputs and every
    node output that depends on one. Outputs of nodes reading only constants (what
    ``constant_folding`` leaves: DEQUANTIZE of a weight) are weights, not activations: the
    int8 kernels read the integer constant from flash, a float backend folds them."""
    end = max(len(steps) - 1, 0)
    life: dict[str, list[int]] = {}
    for name in graph.inputs:
        life[name] = [0, 0]
    for s, node in enumerate(steps):
        if not any(i in life for i in node.inputs):
            continue
        for o in node.outputs:
            if not graph.tensors[o].is_const:
                life[o] = [s, s]
    for s, node in enumerate(steps):
        for i in node.inputs:
            if i in life:
                life[i][1] = max(life[i][1], s)
    for o in graph.outputs:
        if o in life:
            life[o][1] = end
    return {k: (a, b) for k, (a, b) in life.items()}


def in_place_pairs(graph: Graph, steps: tuple[Node, ...], life: Mapping[str, tuple[int, int]],
                   size_of: SizeOf, views: Collection[str] = ()) -> dict[str, str]:
    """Output -> input for every node that may write its output over its input."""
    pairs: dict[str, str] = {}
    outputs = set(graph.outputs)
    for s, node in enumerate(steps):
        if node.op not in IN_PLACE_OPS and node.outputs[0] not in views:
            continue
        x, y = node.inputs[0], node.outputs[0]
        if x not in life or x in outputs or life[x][1] != s:
            continue
        if size_of(graph.tensors[x]) != size_of(graph.tensors[y]):
            continue
        pairs[y] = x
    return pairs


def _conflicts(buffers: list[Buffer]) -> list[list[int]]:
    """For each buffer, the indexes of the other buffers live at a common step."""
    order = sorted(range(len(buffers)), key=lambda i: buffers[i].first)
    out: list[list[int]] = [[] for _ in buffers]
    for k, i in enumerate(order):
        for j in order[k + 1:]:
            if buffers[j].first > buffers[i].last:
                break
            out[i].append(j)
            out[j].append(i)
    return out


def _first_fit(buffers: list[Buffer], conflicts: list[list[int]], order: list[int]
               ) -> tuple[list[int], int]:
    """Place the buffers in ``order``, each at the lowest offset clear of the already
    placed buffers it conflicts with. Returns the offsets (by buffer index) and the peak."""
    offsets: list[int] = [-1] * len(buffers)
    peak = 0
    for i in order:
        size = buffers[i].size
        if size == 0:
            offsets[i] = 0
            continue
        busy = sorted((offsets[j], offsets[j] + buffers[j].size) for j in conflicts[i]
                      if offsets[j] >= 0 and buffers[j].size)
        offset = 0
        for lo, hi in busy:
            if offset + size <= lo:
                break
            offset = max(offset, hi)
        offsets[i] = offset
        peak = max(peak, offset + size)
    return offsets, peak


ORDERS: dict[str, Callable[[Buffer], tuple[int, int, str]]] = {
    "size": lambda b: (-b.size, b.first, b.tensors[0]),        # TFLM's greedy order
    "first_step": lambda b: (b.first, -b.size, b.tensors[0]),  # linear scan
    "area": lambda b: (-b.size * (b.last - b.first + 1), -b.size, b.tensors[0]),
}


def place(buffers: list[Buffer], lower: int, search: int) -> tuple[list[int], int, str]:
    """Offsets (by buffer index), peak and the winning strategy for ``buffers`` (see the
    module docstring's *Placement*); ``lower`` is the bound that stops the search."""
    conflicts = _conflicts(buffers)
    best: tuple[int, str, list[int]] | None = None
    for name, key in ORDERS.items():
        order = sorted(range(len(buffers)), key=lambda i: key(buffers[i]))
        offsets, peak = _first_fit(buffers, conflicts, order)
        if best is None or peak < best[0]:
            best = (peak, name, offsets)
        if peak <= lower:
            break
    assert best is not None
    rng = random.Random(0)  # seeded: plans are reproducible
    for trial in range(search if best[0] > lower else 0):
        noise = [rng.uniform(0.5, 1.5) for _ in buffers]
        order = sorted(range(len(buffers)), key=lambda i: -buffers[i].size * noise[i])
        offsets, peak = _first_fit(buffers, conflicts, order)
        if peak < best[0]:
            best = (peak, f"random #{trial}", offsets)
            if peak <= lower:
                break
    return best[2], best[0], best[1]


def lower_bound(buffers: list[Buffer], n_steps: int) -> int:
    """The largest sum of the sizes of the buffers live at one step."""
    live = [0] * max(n_steps, 1)
    for b in buffers:
        for s in range(b.first, b.last + 1):
            live[s] += b.size
    return max(live, default=0)


def plan(graph: Graph, *, alignment: int = 16, in_place: bool = True,
         size_of: SizeOf = nbytes, search: int = 2000, views: Collection[str] = ()) -> Plan:
    """Plan the arena of ``graph`` (see the module docstring). ``search`` bounds the
    random restarts tried when no greedy order reaches the lower bound. ``views`` names
    TRANSPOSE outputs that the backend stores as the same bytes as their input
    (``passes.transpose_cancel.storage_noop_transposes``): planned in place like RESHAPE."""
    if alignment < 1:
        raise ValueError(f"alignment must be >= 1, got {alignment}")
    steps = graph.topological_order()
    life = lifetimes(graph, steps)
    views = frozenset(views)
    pairs = in_place_pairs(graph, steps, life, size_of, views) if in_place else {}
    root: dict[str, str] = {}
    for name in life:  # steps order: an in-place input is always resolved before its output
        root[name] = root[pairs[name]] if name in pairs else name
    sizes = {n: _align(size_of(graph.tensors[n]), alignment) for n in life}
    members: dict[str, list[str]] = {}
    for name in sorted(life, key=lambda n: life[n][0]):
        members.setdefault(root[name], []).append(name)
    buffers = [Buffer(tuple(ms), max(sizes[m] for m in ms), min(life[m][0] for m in ms),
                      max(life[m][1] for m in ms)) for ms in members.values()]

    lower = lower_bound(buffers, len(steps))

    offsets, peak, strategy = place(buffers, lower, search)
    placed = [Buffer(b.tensors, b.size, b.first, b.last, off) for b, off in zip(buffers, offsets, strict=True)]
    return Plan({t: b.offset for b in placed for t in b.tensors}, sizes, peak, lower, steps,
                life, root, tuple(sorted(placed, key=lambda b: (b.first, b.tensors[0]))),
                alignment, strategy, graph, views)


def check(p: Plan) -> None:
    """Verify ``p``: every arena tensor placed, aligned and inside ``peak``; no two tensors
    live at a common step overlap in memory unless they are an in-place pair (the node at
    the one step they share reads one and writes the other, is an in-place op, and both
    start at the same offset). Raises ``PlanError``."""
    g = p.graph
    life = lifetimes(g, p.steps)
    if set(life) != set(p.offsets):
        raise PlanError(f"arena tensors {sorted(set(life) ^ set(p.offsets))} are "
                        f"missing from or extra in the plan")
    for t, off in p.offsets.items():
        if off % p.alignment or off < 0 or (p.sizes[t] and off + p.sizes[t] > p.peak):
            raise PlanError(f"tensor {t!r} at offset {off} (size {p.sizes[t]}) is unaligned "
                            f"or outside the arena of {p.peak} bytes")
        if life[t] != p.lifetimes[t]:
            raise PlanError(f"tensor {t!r}: lifetime {p.lifetimes[t]} differs from {life[t]}")
    if p.peak < p.lower_bound:
        raise PlanError(f"peak {p.peak} below the lower bound {p.lower_bound}")
    names = sorted(life, key=lambda n: life[n])
    for i, a in enumerate(names):
        a0, a1 = life[a]
        for b in names[i + 1:]:
            b0, b1 = life[b]
            if b0 > a1:
                break  # sorted by first step: no later tensor overlaps a in time
            if not p.sizes[a] or not p.sizes[b]:
                continue
            oa, ob = p.offsets[a], p.offsets[b]
            if oa + p.sizes[a] <= ob or ob + p.sizes[b] <= oa:
                continue
            shared = max(a0, b0)
            node = p.steps[shared] if shared < len(p.steps) else None
            ok = (node is not None and min(a1, b1) == shared and oa == ob
                  and (node.op in IN_PLACE_OPS or node.outputs[0] in p.views)
                  and {node.inputs[0], node.outputs[0]} == {a, b}
                  and life[node.inputs[0]][1] == shared)
            if not ok:
                raise PlanError(f"tensors {a!r} {life[a]} and {b!r} {life[b]} are live at "
                                f"the same step and overlap in memory "
                                f"([{oa}, {oa + p.sizes[a]}) and [{ob}, {ob + p.sizes[b]}))")
