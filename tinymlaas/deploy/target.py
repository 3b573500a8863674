"""What a device offers a model, from its latest capability snapshot: ``DeviceTarget``.

The snapshot is what ``tinymlaas.server.capabilities`` read: either the ML Capability object
(33100, keys are paths such as ``/33100/0/1``) or the Device object matched to a device
profile (keys such as ``sram_free``, ``runtimes``). Both become one ``DeviceTarget``: free SRAM
and flash for ML, the largest package, core, clock, FPU, and the runtimes (name, version,
features, their own RAM, and for a runtime judged by its operator list — TFLM — the operators
its build registers). ``DeviceTarget.target(runtime, margin)`` is what it offers one backend
(``compilers.backends.base.Target``, which ``Backend.fit`` judges).

The ML Capability object does not carry a runtime's own RAM: it comes from the device profile
the object names (resource 13), else from the installed backend's estimate for that runtime
(``Backend.runtime_ram_bytes``).

Explicit figures (``Figures``: SRAM free, flash free, runtimes), given by the operator on a
deployment (``deploy --sram-free/--flash-free/--runtime``) or stored for the device
(``devices set-figures``), replace what the snapshot says; for a device with neither our
objects nor a profile they are all there is, and what is missing is named in the error with
the commands that give it. What it does not do: read devices (the caller refreshes the
snapshot) or decide anything (``choice``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Mapping

from compilers.backends import registry
from compilers.backends.base import RuntimeSpec, Target
from device_profiles import Profile
from lwm2m.errors import PreconditionFailed

RUNTIME_TEXT = re.compile(r"(?P<name>\S+)\s+(?P<version>\S+)(?:\s+\[(?P<features>[^\]]*)\])?")


class NoCapabilities(PreconditionFailed):
    """The server knows nothing a decision could rest on (message says what is missing; 4.12)."""


def default_runtime_ram(name: str) -> int:
    """A runtime's own RAM when nothing names it: the installed backends' estimate (0 if none)."""
    return max((b.runtime_ram_bytes.get(name, 0) for b in registry.for_runtime(name)), default=0)


def lists_operators(name: str) -> bool:
    """True when an installed backend judges runtime ``name`` by its operator list."""
    return any(b.operator_list for b in registry.for_runtime(name))


@dataclass(frozen=True)
class DeviceTarget:
    endpoint: str
    source: str
    profile: str | None
    core: str
    clock_mhz: int
    fpu: str
    sram_free: int
    flash_free: int
    max_package: int
    runtimes: tuple[RuntimeSpec, ...]

    def runtime(self, name: str) -> RuntimeSpec | None:
        return next((r for r in self.runtimes if r.name == name), None)

    @property
    def operators(self) -> tuple[str, ...]:
        """The operators of the runtime that reports a list of them (TFLM's op resolver)."""
        return next((r.operators for r in self.runtimes if r.operators), ())

    def target(self, runtime: str, margin: float = 0.0) -> Target:
        r = self.runtime(runtime)
        if r is None:
            raise NoCapabilities(f"{self.endpoint} has no runtime {runtime!r}")
        return Target(self.endpoint, self.core, self.clock_mhz, self.fpu, self.sram_free, self.flash_free,
                      self.max_package, r, margin)

    def as_json(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "source": self.source, "profile": self.profile, "core": self.core,
                "clock_mhz": self.clock_mhz, "fpu": self.fpu, "sram_free": self.sram_free,
                "flash_free": self.flash_free, "max_package": self.max_package,
                "runtimes": [f"{r.name} {r.version}" for r in self.runtimes]}


def _multi(data: Mapping[str, Any], prefix: str) -> list[Any]:
    items = [(int(k[len(prefix):]), v) for k, v in data.items()
             if k.startswith(prefix) and k[len(prefix):].isdigit()]
    return [v for _, v in sorted(items)]


def parse_runtime(text: str, profile: Profile | None, operators: tuple[str, ...] = ()) -> RuntimeSpec | None:
    """``"tflm 2024-06 [cmsis-nn]"`` (33100/0/9) -> RuntimeSpec; "none" -> None."""
    m = RUNTIME_TEXT.fullmatch(text.strip())
    if m is None or m["name"] == "none":
        return None
    known = profile.runtime(m["name"]) if profile else None
    features = tuple(f.strip() for f in (m["features"] or "").split(",") if f.strip())
    ram = known.ram if known else default_runtime_ram(m["name"])
    return RuntimeSpec(m["name"], m["version"], features, ram, operators if lists_operators(m["name"]) else ())


def _from_object(endpoint: str, data: Mapping[str, Any], profiles: Mapping[str, Profile]) -> DeviceTarget:
    def need(rid: int) -> Any:
        value = data.get(f"/33100/0/{rid}")
        if value is None:
            raise NoCapabilities(f"{endpoint}: ML Capability resource /33100/0/{rid} was not reported")
        return value

    name = data.get("/33100/0/13") or None
    profile = profiles.get(name) if name else None
    operators = tuple(o for o in _multi(data, "/33100/0/10/") if o != "none")
    runtimes = tuple(r for r in (parse_runtime(t, profile, operators) for t in _multi(data, "/33100/0/9/")) if r)
    max_package = int(data.get("/33100/0/11") or need(3))
    return DeviceTarget(endpoint, "ml-capability-object", name, str(need(4)), int(data.get("/33100/0/5") or 0),
                        str(data.get("/33100/0/6") or "none"), int(need(1)), int(need(3)), max_package, runtimes)


@dataclass(frozen=True)
class Figures:
    """Explicit ML figures for one device (None / (): not given)."""

    sram_free: int | None = None
    flash_free: int | None = None
    runtimes: tuple[str, ...] = ()  # "tflm" or "tflm 2024-06"

    @property
    def given(self) -> bool:
        return self.sram_free is not None or self.flash_free is not None or bool(self.runtimes)

    def over(self, other: "Figures") -> "Figures":
        """These figures where given, else ``other``'s."""
        return Figures(other.sram_free if self.sram_free is None else self.sram_free,
                       other.flash_free if self.flash_free is None else self.flash_free,
                       self.runtimes or other.runtimes)

    def missing(self) -> list[str]:
        return [what for what, absent in (("SRAM free (--sram-free BYTES)", self.sram_free is None),
                                          ("flash free (--flash-free BYTES)", self.flash_free is None),
                                          ("a runtime (--runtime NAME)", not self.runtimes)) if absent]


def _runtime_spec(text: str, profile: Profile | None) -> RuntimeSpec:
    name, _, version = text.partition(" ")
    known = profile.runtime(name) if profile else None
    return RuntimeSpec(name, version or (known.version if known else "unknown"),
                       known.features if known else (), known.ram if known else default_runtime_ram(name),
                       known.operators if known and lists_operators(name) else ())


def missing_figures(endpoint: str, figures: Figures, device: Mapping[str, Any]) -> NoCapabilities:
    """The error for a device nothing describes: which figures are missing and how to give them."""
    what = device.get("manufacturer"), device.get("model_number")
    seen = (f"its Device object (manufacturer {_show(what[0])}, model {_show(what[1])}) matches no device profile"
            if any(what) else "its Device object names no manufacturer and model")
    runtimes = ", ".join(sorted(registry.runtime_names()))
    return NoCapabilities(
        f"{endpoint}: no ML figures: no ML Capability object (33100), no profile assigned, and {seen}; "
        f"missing {', '.join(figures.missing())}. Give them with 'tinymlaas devices set-profile {endpoint} BOARD' "
        f"(boards: tinymlaas profiles list; your own: tinymlaas profiles add FILE), or "
        f"'tinymlaas deploy {endpoint} MODEL --sram-free BYTES --flash-free BYTES --runtime NAME' "
        f"(runtimes: {runtimes}), or store them with 'tinymlaas devices set-figures {endpoint} ...'")


def _show(value: Any) -> str:
    if isinstance(value, dict):  # a string the device sent that is not clean text
        value = value.get("text")
    return repr(value) if value else "none"


def _from_figures(endpoint: str, data: Mapping[str, Any], figures: Figures) -> DeviceTarget:
    if figures.missing():
        raise missing_figures(endpoint, figures, data)
    assert figures.sram_free is not None and figures.flash_free is not None
    return DeviceTarget(endpoint, "figures", None, "unknown", 0, "none", figures.sram_free, figures.flash_free,
                        figures.flash_free, tuple(_runtime_spec(r, None) for r in figures.runtimes))


def with_figures(target: DeviceTarget, figures: Figures, profiles: Mapping[str, Profile]) -> DeviceTarget:
    """``target`` with the explicit figures that were given in place of its own."""
    if not figures.given:
        return target
    profile = profiles.get(target.profile) if target.profile else None
    return replace(target, source=f"{target.source}+figures",
                   sram_free=target.sram_free if figures.sram_free is None else figures.sram_free,
                   flash_free=target.flash_free if figures.flash_free is None else figures.flash_free,
                   max_package=target.max_package if figures.flash_free is None else
                   min(target.max_package, figures.flash_free),
                   runtimes=tuple(_runtime_spec(r, profile) for r in figures.runtimes) or target.runtimes)


def _from_profile(endpoint: str, data: Mapping[str, Any], _profiles: Mapping[str, Profile]) -> DeviceTarget:
    """A profile's figures (matched or assigned; the caller names the source)."""
    if "sram_free" not in data:
        raise missing_figures(endpoint, Figures(), data)
    operators = tuple(data.get("operators", ()))
    runtimes = tuple(RuntimeSpec(n, r["version"], tuple(r.get("features", ())), int(r.get("ram", 0)),
                                 operators if lists_operators(n) else ())
                     for n, r in data.get("runtimes", {}).items())
    return DeviceTarget(endpoint, "device-object+profile", data.get("profile"), data["core"], int(data["clock_mhz"]),
                        data["fpu"], int(data["sram_free"]), int(data["flash_free"]), int(data["max_package"]),
                        runtimes)


SOURCES = {"ml-capability-object": _from_object, "device-object+profile": _from_profile,
           "assigned-profile": _from_profile, "device-object": _from_profile}


def target_from_snapshot(endpoint: str, source: str, data: Mapping[str, Any],
                         profiles: Mapping[str, Profile], figures: Figures = Figures()) -> DeviceTarget:
    """The device's target from its snapshot, with explicit ``figures`` in place of its own."""
    if source not in SOURCES:
        raise NoCapabilities(f"{endpoint}: capability source {source!r} is not understood")
    if source == "device-object" and "sram_free" not in data:
        return _from_figures(endpoint, data, figures)
    target = SOURCES[source](endpoint, data, profiles)
    return with_figures(replace(target, source=source), figures, profiles)


__all__ = ["DeviceTarget", "Figures", "NoCapabilities", "default_runtime_ram", "missing_figures", "parse_runtime",
           "target_from_snapshot", "with_figures"]
