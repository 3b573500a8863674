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
(``Backend.runtime_ram_bytes``). What it does not do: read devices (the caller refreshes the
snapshot) or decide anything (``choice``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
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


def _from_profile(endpoint: str, data: Mapping[str, Any], _profiles: Mapping[str, Profile]) -> DeviceTarget:
    if "sram_free" not in data:
        raise NoCapabilities(f"{endpoint}: the Device object matched no device profile, so its SRAM, "
                             f"flash and runtimes for ML are unknown (add a profile or the ML Capability object)")
    operators = tuple(data.get("operators", ()))
    runtimes = tuple(RuntimeSpec(n, r["version"], tuple(r.get("features", ())), int(r.get("ram", 0)),
                                 operators if lists_operators(n) else ())
                     for n, r in data.get("runtimes", {}).items())
    return DeviceTarget(endpoint, "device-object+profile", data.get("profile"), data["core"], int(data["clock_mhz"]),
                        data["fpu"], int(data["sram_free"]), int(data["flash_free"]), int(data["max_package"]),
                        runtimes)


SOURCES = {"ml-capability-object": _from_object, "device-object+profile": _from_profile,
           "device-object": _from_profile}


def target_from_snapshot(endpoint: str, source: str, data: Mapping[str, Any],
                         profiles: Mapping[str, Profile]) -> DeviceTarget:
    if source not in SOURCES:
        raise NoCapabilities(f"{endpoint}: capability source {source!r} is not understood")
    return SOURCES[source](endpoint, data, profiles)


__all__ = ["DeviceTarget", "NoCapabilities", "default_runtime_ram", "parse_runtime", "target_from_snapshot"]
