"""The backend interface: what the rest of tinymlaas asks of a compiler backend, and the frozen
records that travel between the compiler, the deploy decision and the (simulated) device.

A backend is one object (``Backend``) registered under the entry-point group
``tinymlaas.backends`` (``registry``). It says what it makes (``ArtifactKind``: the package
kind, media type and file suffix; None for an export-only backend such as portable C), which
device runtimes run it (names as a device reports them in the ML Capability object,
``/33100/0/9``), which precisions it builds, and it does four things:

* ``build(graph, options) -> Artifact``: compile an imported model (the artifact's bytes, the
  files an export writes, what it needs on a device, its tensors);
* ``measure(data) -> Needs``: what an artifact needs on a device, from its bytes alone — the
  same function the build ends with, so the server's figures and a device's are one
  measurement;
* ``fit(needs, target) -> Fit``: whether that fits one device runtime (``Target``), with a
  typed list of shortfalls. ``BackendBase.fit`` is the shared rule (flash, RAM plus the
  runtime's own RAM, the runtime's operator list); a backend adds its own through
  ``extra_shortfalls``. The deploy choice, ``models inspect`` and the simulated device call it;
* ``device_runtime() -> DeviceRuntime``: how a (simulated) device executes the artifact.

``fit`` takes the build's measured ``Needs`` rather than a graph: the verdict is the build's
numbers ("fit on the chip is measured by building for the chip"), and a device holds only the
artifact's bytes, so judging needs in one place is what lets server and device agree.

Figures carry their unit in the field name (``_bytes``, ``_ms``, ``_mhz``); nothing here is
a dict of figures. ``Artifact.details`` holds backend-specific facts for ``build.json`` and
display only; no other code reads it.

What it does not do: discover backends (``registry``), talk LwM2M, or know any backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, runtime_checkable

from ..errors import CompilerError
from ..precision import PRECISIONS

if TYPE_CHECKING:
    from ..ir import Graph
ITEMSIZE = {"bool": 1, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "float16": 2, "int32": 4, "uint32": 4,
            "float32": 4, "int64": 8, "uint64": 8, "float64": 8}  # numpy dtype name -> bytes
SOFT_FLOAT_FACTOR = 10.0  # float32 without an FPU: software floating point, ~10x slower (estimate)


class BackendUnavailable(CompilerError):
    """A backend, or a backend for a runtime, that is not installed (the message lists those that are)."""


@dataclass(frozen=True)
class ArtifactKind:
    """What a backend delivers: ``name`` is the package manifest's ``kind``."""

    name: str  # "tflite", "wasm", ...: lower-case identifier
    media_type: str  # e.g. "application/vnd.tflite"
    suffix: str  # file suffix in exports and the compile cache, with the dot: ".tflite"
    magic: Callable[[bytes], bool] = field(compare=False, repr=False, default=lambda _b: False)

    def recognises(self, data: bytes) -> bool:
        """True when ``data`` is an artifact of this kind, by its content."""
        return bool(self.magic(data))


@dataclass(frozen=True)
class RuntimeSpec:
    """One ML runtime in a device's firmware, as the device (or its profile) describes it."""

    name: str  # as in /33100/0/9: "tflm", "wasm3", ...
    version: str
    features: tuple[str, ...] = ()
    ram_bytes: int = 0  # the runtime's own RAM, beside the model's
    operators: tuple[str, ...] = ()  # operators the runtime registers, when it reports a fixed list

    def text(self) -> str:
        """``"tflm 2024-06 [cmsis-nn]"``: how the ML Capability object writes it."""
        return f"{self.name} {self.version}" + (f" [{','.join(self.features)}]" if self.features else "")


@dataclass(frozen=True)
class Target:
    """What one device offers one backend through one of its runtimes."""

    name: str  # the device's endpoint, or a profile's name
    core: str  # "cortex-m4f", ...
    clock_mhz: int  # 0: unknown (no latency estimate)
    fpu: str  # "none" | "sp" | "dp"
    sram_free_bytes: int  # SRAM free for ML: the runtime's own RAM and the model's come out of it
    flash_free_bytes: int  # flash free for model packages
    max_package_bytes: int  # the largest package the device takes
    runtime: RuntimeSpec
    margin: float = 0.0  # safety fraction kept free of both (the deploy default is 0.10)

    @property
    def sram_usable_bytes(self) -> int:
        return int(self.sram_free_bytes * (1 - self.margin))

    @property
    def flash_usable_bytes(self) -> int:
        return int(min(self.flash_free_bytes, self.max_package_bytes) * (1 - self.margin))


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output as a device sees it (quantised tensors carry scale and zero point)."""

    name: str
    role: str  # "input" | "output"
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name: "int8", "float32", ...
    scale: float | None = None
    zero_point: int | None = None

    @property
    def nbytes(self) -> int:
        count = 1
        for d in self.shape:
            count *= d
        return count * ITEMSIZE[self.dtype]

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "role": self.role, "shape": list(self.shape),
                               "dtype": self.dtype}
        if self.scale is not None:
            out["scale"], out["zero_point"] = self.scale, self.zero_point
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "TensorSpec":
        return cls(str(data["name"]), str(data["role"]), tuple(int(x) for x in data["shape"]),
                   str(data["dtype"]), None if data.get("scale") is None else float(data["scale"]),
                   None if data.get("zero_point") is None else int(data["zero_point"]))


def tensor_specs(graph: "Graph") -> tuple[TensorSpec, ...]:
    """A graph's inputs and outputs as a device sees them (per-tensor quantisation only)."""
    specs = []
    for role, names in (("input", graph.inputs), ("output", graph.outputs)):
        for name in names:
            t = graph.tensors[name]
            q = t.quant if t.quant is not None and len(t.quant.scale) == 1 else None
            specs.append(TensorSpec(name, role, tuple(int(d) for d in t.shape), t.dtype.value,
                                    None if q is None else float(q.scale[0]),
                                    None if q is None else int(q.zero_point[0])))
    return tuple(specs)


@dataclass(frozen=True)
class Needs:
    """What an artifact needs on a device, measured (never guessed)."""

    flash_bytes: int  # what is stored: the artifact, or the sealed package once the server says so
    ram_bytes: int  # the model's RAM at run time, beside the runtime's own (TFLM arena, Wasm pages)
    operators: tuple[str, ...] = ()  # runtime operators the artifact uses (checked when the runtime lists its own)

    def stored_as(self, package_bytes: int) -> "Needs":
        """The same needs with the flash of the package that carries the artifact."""
        return replace(self, flash_bytes=package_bytes)

    def as_json(self) -> dict[str, Any]:
        return {"flash_bytes": self.flash_bytes, "ram_bytes": self.ram_bytes, "operators": list(self.operators)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Needs":
        return cls(int(data["flash_bytes"]), int(data["ram_bytes"]), tuple(data.get("operators", ())))


@dataclass(frozen=True)
class Shortfall:
    """One reason an artifact does not fit: ``resource`` is "sram", "flash", "operators" or
    "runtime"; ``need`` and ``usable`` are bytes (operators: counts); ``detail`` is the text shown."""

    resource: str
    need: int
    usable: int
    detail: str

    def __str__(self) -> str:
        return self.detail


@dataclass(frozen=True)
class Fit:
    """One backend and precision judged on one device runtime."""

    backend: str
    precision: str
    runtime: str
    flash_bytes: int  # what the device stores
    flash_usable_bytes: int
    ram_bytes: int  # the model's RAM plus the runtime's own
    ram_usable_bytes: int
    latency_ms: float | None  # estimated (``latency_basis``) or measured; None: no clock known
    latency_basis: str = "estimate"
    shortfalls: tuple[Shortfall, ...] = ()

    @property
    def fits(self) -> bool:
        return not self.shortfalls

    @property
    def problems(self) -> tuple[str, ...]:
        return tuple(s.detail for s in self.shortfalls)

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}"

    def verdict(self) -> str:
        return "fits" if self.fits else "does not fit: " + "; ".join(self.problems)

    def as_json(self) -> dict[str, Any]:
        return {"backend": self.backend, "precision": self.precision, "runtime": self.runtime, "fits": self.fits,
                "problems": list(self.problems), "flash_bytes": self.flash_bytes,
                "flash_usable_bytes": self.flash_usable_bytes, "ram_bytes": self.ram_bytes,
                "ram_usable_bytes": self.ram_usable_bytes, "latency_ms": self.latency_ms,
                "latency_basis": self.latency_basis,
                "shortfalls": [{"resource": s.resource, "need": s.need, "usable": s.usable, "detail": s.detail}
                               for s in self.shortfalls]}


@dataclass(frozen=True)
class BuildOptions:
    """How to build: precision, the names written into the artifact, and optionally the device
    (``target``: a backend checks what it can before anything is written, e.g. TFLM operators;
    a board-specific backend such as portable C measures for ``target.core``). ``input_layout``
    is the model version's: "nhwc" declares the image inputs channels-last
    (``compilers.passes.input_layout``; ``precision.prepare`` applies it), so every backend
    takes the same input bytes; a backend that cannot must refuse it, not ignore it."""

    precision: str
    name: str = "model"
    version: str = ""
    source_sha256: str = ""
    calibration: str | None = None  # an .npz of sample inputs for int8 calibration
    target: Target | None = None
    features: tuple[str, ...] = ()  # runtime features the build may use (e.g. "simd")
    input_layout: str = "nchw"  # "nchw": the model's declared input shapes; "nhwc": image inputs channels-last


@dataclass(frozen=True)
class Artifact:
    """A build: ``data`` is what is delivered (empty for export-only backends), ``files`` what
    an export writes (file name -> bytes, ``data`` included under ``backend.kind.suffix``)."""

    backend: str
    precision: str
    data: bytes = field(repr=False)
    files: Mapping[str, bytes] = field(repr=False, hash=False, compare=False)
    needs: Needs
    tensors: tuple[TensorSpec, ...]
    macs: int
    details: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)
    warnings: tuple[str, ...] = ()
    min_runtime: str = ""  # the oldest runtime the artifact runs on ("tflm 2024-06"), for the manifest

    def describe(self) -> dict[str, Any]:
        """Everything but the bytes, JSON-friendly (``build.json``, the compile cache's row)."""
        return {"backend": self.backend, "precision": self.precision, "bytes": len(self.data),
                "needs": self.needs.as_json(), "tensors": [t.as_json() for t in self.tensors],
                "macs": self.macs, "details": dict(self.details), "warnings": list(self.warnings),
                "min_runtime": self.min_runtime}

    @classmethod
    def restore(cls, data: bytes, described: Mapping[str, Any]) -> "Artifact":
        """The inverse of ``describe`` for a deliverable artifact (files are not kept)."""
        return cls(str(described["backend"]), str(described["precision"]), data, {},
                   Needs.from_json(described["needs"]),
                   tuple(TensorSpec.from_json(t) for t in described.get("tensors", ())),
                   int(described.get("macs", 0)), dict(described.get("details", {})),
                   tuple(described.get("warnings", ())), str(described.get("min_runtime", "")))


@dataclass(frozen=True)
class Loaded:
    """What a device runtime reports for an artifact it loaded: the RAM it needs and its tensors."""

    ram_bytes: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    details: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)
    operators: tuple[str, ...] = ()  # runtime operators the artifact uses (as ``Needs.operators``)

    def needs(self, stored_bytes: int) -> Needs:
        """What the loaded artifact needs, stored in ``stored_bytes`` of flash."""
        return Needs(stored_bytes, self.ram_bytes, self.operators)


@dataclass(frozen=True)
class Ran:
    """One inference: raw output bytes, the invoke's wall time and the RAM the runtime used."""

    outputs: tuple[bytes, ...]
    latency_us: int
    ram_used_bytes: int


class RuntimeFailure(Exception):
    """A device runtime cannot load or run an artifact. ``result`` is one of ``RESULTS``."""

    RESULTS = ("out-of-memory", "not-enough-storage", "unsupported-package", "install-failure", "runtime-error")

    def __init__(self, result: str, message: str) -> None:
        if result not in self.RESULTS:
            raise ValueError(f"unknown runtime result {result!r}")
        super().__init__(result, message)
        self.result, self.message = result, message

    def __str__(self) -> str:
        return self.message


@runtime_checkable
class DeviceRuntime(Protocol):
    """How a device executes a backend's artifacts. Both methods run in a worker process (the
    simulator's model runner calls them there, isolated): they must be picklable, i.e. a
    module-level object, and may block. Failures raise ``RuntimeFailure``."""

    def load(self, data: bytes, timeout_s: float) -> Loaded:
        """Load the artifact: the RAM it needs (the same figure ``Backend.measure`` gives) and its tensors."""
        ...

    def invoke(self, data: bytes, ram_bytes: int, inputs: list[bytes] | None, timeout_s: float) -> Ran:
        """One inference with ``ram_bytes`` for the model; inputs None: the value meaning 0.0."""
        ...


@runtime_checkable
class Backend(Protocol):
    name: str  # the entry point's name: "tflm"
    title: str  # "TensorFlow Lite Micro"
    kind: ArtifactKind | None  # None: export-only (writes sources, no device runs them over the air)
    runtimes: tuple[str, ...]  # device runtimes that run its artifacts, as they are reported
    precisions: tuple[str, ...]
    runtime_ram_bytes: Mapping[str, int]  # a runtime's own RAM when the device does not say (estimate)
    board_specific: bool  # the artifact depends on the target's core (compile cache key, export needs a board)
    min_runtime: str  # the oldest runtime its artifacts run on, as the package manifest states it
    operator_list: bool  # its runtimes register a fixed operator list a device reports (TFLM's op resolver)

    def build(self, graph: Graph, options: BuildOptions) -> Artifact: ...

    def measure(self, data: bytes) -> Needs: ...

    def fit(self, needs: Needs, target: Target, precision: str, macs: int = 0) -> Fit: ...

    def device_runtime(self) -> DeviceRuntime: ...

    def summary(self, artifact: Artifact) -> str: ...


class BackendBase:
    """The shared parts of a backend: the fit rule and the latency estimate.

    ``cycles_per_mac`` (precision -> cycles) and ``feature_speedup`` (runtime feature -> factor
    for int8 kernels, e.g. CMSIS-NN) are ESTIMATES used only to rank candidates; a float32 model
    on a core without an FPU costs ``SOFT_FLOAT_FACTOR`` more."""

    name = ""
    title = ""
    short_title = ""  # in messages: "TFLM build lacks operators ..."
    kind: ArtifactKind | None = None
    runtimes: tuple[str, ...] = ()
    precisions: tuple[str, ...] = PRECISIONS
    runtime_ram_bytes: Mapping[str, int] = {}
    board_specific = False
    min_runtime = ""
    operator_list = False
    cycles_per_mac: Mapping[str, float] = {}
    feature_speedup: Mapping[str, float] = {}

    def latency_ms(self, target: Target, precision: str, macs: int) -> float | None:
        if not target.clock_mhz or not macs or precision not in self.cycles_per_mac:
            return None
        cycles = self.cycles_per_mac[precision]
        if precision == "int8":
            cycles /= max([self.feature_speedup.get(f, 1.0) for f in target.runtime.features], default=1.0)
        elif target.fpu == "none":
            cycles *= SOFT_FLOAT_FACTOR
        return round(macs * cycles / (target.clock_mhz * 1000.0), 3)

    def extra_shortfalls(self, needs: Needs, target: Target) -> tuple[Shortfall, ...] | None:
        """A backend's own reasons; a tuple replaces the SRAM check, None keeps it."""
        return None

    def fit(self, needs: Needs, target: Target, precision: str, macs: int = 0) -> Fit:
        rt = target.runtime
        ram, ram_usable = needs.ram_bytes + rt.ram_bytes, target.sram_usable_bytes
        flash_usable = target.flash_usable_bytes
        own = self.extra_shortfalls(needs, target)
        short: list[Shortfall] = list(own) if own else []
        if own is None and ram > ram_usable:
            short.append(Shortfall("sram", ram, ram_usable, f"SRAM short by {ram - ram_usable:,} B"))
        if needs.flash_bytes > flash_usable:
            short.append(Shortfall("flash", needs.flash_bytes, flash_usable,
                                   f"flash short by {needs.flash_bytes - flash_usable:,} B"))
        if rt.operators:
            missing = sorted(set(needs.operators) - set(rt.operators))
            if missing:
                short.append(Shortfall("operators", len(missing), 0,
                                       f"{self.short_title} build lacks operators {', '.join(missing)}"))
        return Fit(self.name, precision, rt.name, needs.flash_bytes, flash_usable, ram, ram_usable,
                   self.latency_ms(target, precision, macs), "estimate", tuple(short))

    def summary(self, artifact: Artifact) -> str:
        return (f"{len(artifact.data):,} B, needs {artifact.needs.ram_bytes:,} B of RAM"
                if artifact.data else f"{len(artifact.files)} files")


__all__ = ["Artifact", "ArtifactKind", "Backend", "BackendBase", "BackendUnavailable", "BuildOptions",
           "DeviceRuntime", "Fit", "Loaded", "Needs", "PRECISIONS", "Ran", "RuntimeFailure", "RuntimeSpec",
           "SOFT_FLOAT_FACTOR", "Shortfall", "Target", "TensorSpec", "tensor_specs"]
