"""toy: a third-party tinymlaas backend, the worked example of the README's "Writing a backend".

It "compiles" a model to a ``toyir`` artifact — the float32 IR graph serialised (``codec``) —
that a device with the ``toyvm`` runtime executes with the compiler's reference interpreter.
It uses only the public interface: ``compilers.backends.base`` for the records and the fit
rule, ``compilers.precision.prepare``, ``compilers.planner`` for the RAM the interpreter needs,
``compilers.reference`` to run. Registered by ``entry_points.txt`` in its dist-info, like any
plug-in; tinymlaas itself names it nowhere.
"""

from __future__ import annotations

from typing import Any

from compilers.backends.base import (Artifact, ArtifactKind, BackendBase, BuildOptions, DeviceRuntime, Loaded, Needs,
                                     Ran, tensor_specs)

from . import codec


class ToyRuntime:
    """The ``toyvm`` runtime: the reference interpreter over the decoded graph."""

    def load(self, data: bytes, timeout_s: float) -> Loaded:
        g = codec.decode(data)
        return Loaded(codec.ram_bytes(g), tensor_specs(g)[:len(g.inputs)], tensor_specs(g)[len(g.inputs):])

    def invoke(self, data: bytes, ram_bytes: int, inputs: list[bytes] | None, timeout_s: float) -> Ran:
        import time

        import numpy as np

        from compilers.reference import run

        g = codec.decode(data)
        feed: dict[str, Any] = {}
        for i, name in enumerate(g.inputs):
            t = g.tensors[name]
            raw = bytes(t.nbytes) if inputs is None else inputs[i]
            feed[name] = np.frombuffer(raw, t.dtype.numpy).reshape(t.shape)
        t0 = time.perf_counter_ns()
        out = run(g, feed)
        latency = (time.perf_counter_ns() - t0) // 1000
        return Ran(tuple(np.ascontiguousarray(out[o]).tobytes() for o in g.outputs), latency, codec.ram_bytes(g))


RUNTIME = ToyRuntime()


class ToyBackend(BackendBase):
    name = "toy"
    title = "Toy IR interpreter"
    short_title = "Toy"
    kind = ArtifactKind("toyir", "application/x-tinyml-toyir", ".toyir", codec.is_toyir)
    runtimes = ("toyvm",)
    precisions = ("float32",)
    runtime_ram_bytes = {"toyvm": 2048}
    cycles_per_mac = {"float32": 50.0}
    min_runtime = "toyvm 1"

    def build(self, graph: Any, options: BuildOptions) -> Artifact:
        from compilers.passes import optimize
        from compilers.precision import prepare
        from compilers.stats import stats

        g = prepare(graph, options.precision).graph
        data = codec.encode(g)
        return Artifact(self.name, options.precision, data, {f"{options.name}{self.kind.suffix}": data},
                        self.measure(data), tensor_specs(g), stats(optimize(graph)).macs, {"nodes": len(g.nodes)},
                        (), self.min_runtime)

    def measure(self, data: bytes) -> Needs:
        return Needs(len(data), codec.ram_bytes(codec.decode(data)))

    def device_runtime(self) -> DeviceRuntime:
        return RUNTIME


BACKEND = ToyBackend()
