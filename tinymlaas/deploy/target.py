"""What a device offers a model, from its latest capability snapshot: ``Target``.

The snapshot is what ``tinymlaas.server.capabilities`` read: either the ML Capability object
(33100, keys are paths such as ``/33100/0/1``) or the Device object matched to a device
profile (keys such as ``sram_free``, ``runtimes``). Both become one ``Target``: free SRAM and
flash for ML, the largest package, core, clock, FPU, the runtimes (name, version, features,
their own RAM) and TFLM's registered operators.

The ML Capability object does not carry a runtime's own RAM: it comes from the device profile
the object names (resource 13), else from ``DEFAULT_RUNTIME_RAM`` (the shipped profiles'
figures for that runtime, an estimate). What it does not do: read devices (the caller refreshes
the snapshot) or decide anything (``choice``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from device_profiles import Profile
from tinymlaas.lwm2m.errors import PreconditionFailed

# A runtime's own RAM when the device names no known profile: bytes (the profiles' estimates).
DEFAULT_RUNTIME_RAM = {"tflm": 4096, "wasm3": 16384, "wamr": 32768}
RUNTIME_TEXT = re.compile(r"(?P<name>\S+)\s+(?P<version>\S+)(?:\s+\[(?P<features>[^\]]*)\])?")


class NoCapabilities(PreconditionFailed):
    """The server knows nothing a decision could rest on (message says what is missing; 4.12)."""


@dataclass(frozen=True)
class RuntimeInfo:
    name: str
    version: str
    features: tuple[str, ...]
    ram: int


@dataclass(frozen=True)
class Target:
    endpoint: str
    source: str
    profile: str | None
    core: str
    clock_mhz: int
    fpu: str
    sram_free: int
    flash_free: int
    max_package: int
    runtimes: tuple[RuntimeInfo, ...]
    operators: tuple[str, ...]

    def runtime(self, name: str) -> RuntimeInfo | None:
        return next((r for r in self.runtimes if r.name == name), None)

    def as_json(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "source": self.source, "profile": self.profile, "core": self.core,
                "clock_mhz": self.clock_mhz, "fpu": self.fpu, "sram_free": self.sram_free,
                "flash_free": self.flash_free, "max_package": self.max_package,
                "runtimes": [f"{r.name} {r.version}" for r in self.runtimes]}


def _multi(data: Mapping[str, Any], prefix: str) -> list[Any]:
    items = [(int(k[len(prefix):]), v) for k, v in data.items()
             if k.startswith(prefix) and k[len(prefix):].isdigit()]
    return [v for _, v in sorted(items)]


def parse_runtime(text: str, profile: Profile | None) -> RuntimeInfo | None:
    """``"tflm 2024-06 [cmsis-nn]"`` (33100/0/9) -> RuntimeInfo; "none" -> None."""
    m = RUNTIME_TEXT.fullmatch(text.strip())
    if m is None or m["name"] == "none":
        return None
    known = profile.runtime(m["name"]) if profile else None
    features = tuple(f.strip() for f in (m["features"] or "").split(",") if f.strip())
    ram = known.ram if known else DEFAULT_RUNTIME_RAM.get(m["name"], 0)
    return RuntimeInfo(m["name"], m["version"], features, ram)


def _from_object(endpoint: str, data: Mapping[str, Any], profiles: Mapping[str, Profile]) -> Target:
    def need(rid: int) -> Any:
        value = data.get(f"/33100/0/{rid}")
        if value is None:
            raise NoCapabilities(f"{endpoint}: ML Capability resource /33100/0/{rid} was not reported")
        return value

    name = data.get("/33100/0/13") or None
    profile = profiles.get(name) if name else None
    runtimes = tuple(r for r in (parse_runtime(t, profile) for t in _multi(data, "/33100/0/9/")) if r)
    operators = tuple(o for o in _multi(data, "/33100/0/10/") if o != "none")
    max_package = int(data.get("/33100/0/11") or need(3))
    return Target(endpoint, "ml-capability-object", name, str(need(4)), int(data.get("/33100/0/5") or 0),
                  str(data.get("/33100/0/6") or "none"), int(need(1)), int(need(3)), max_package, runtimes,
                  operators)


def _from_profile(endpoint: str, data: Mapping[str, Any], _profiles: Mapping[str, Profile]) -> Target:
    if "sram_free" not in data:
        raise NoCapabilities(f"{endpoint}: the Device object matched no device profile, so its SRAM, "
                             f"flash and runtimes for ML are unknown (add a profile or the ML Capability object)")
    runtimes = tuple(RuntimeInfo(n, r["version"], tuple(r.get("features", ())), int(r.get("ram", 0)))
                     for n, r in data.get("runtimes", {}).items())
    return Target(endpoint, "device-object+profile", data.get("profile"), data["core"], int(data["clock_mhz"]),
                  data["fpu"], int(data["sram_free"]), int(data["flash_free"]), int(data["max_package"]),
                  runtimes, tuple(data.get("operators", ())))


SOURCES = {"ml-capability-object": _from_object, "device-object+profile": _from_profile,
           "device-object": _from_profile}


def target_from_snapshot(endpoint: str, source: str, data: Mapping[str, Any],
                         profiles: Mapping[str, Profile]) -> Target:
    if source not in SOURCES:
        raise NoCapabilities(f"{endpoint}: capability source {source!r} is not understood")
    return SOURCES[source](endpoint, data, profiles)
