"""Device profiles: one TOML file per real board (core, clock, SRAM, flash, runtimes), with its datasheet reference.

What it does: loads and validates the shipped profiles in ``device_profiles/profiles/`` and
any operator directories (the ``extra_dirs`` argument, then the ``TINYMLAAS_PROFILES``
environment variable, an ``os.pathsep``-separated list); a later directory's profile replaces
an earlier one of the same name. ``parse_profile`` validates a profile given as text (the
server stores those in its database). It computes what is free for ML (``sram_free``,
``flash_free``) and matches a device's LwM2M Device object (3) manufacturer and model number
to a profile. Every problem in a file is a :class:`ProfileError` naming the file, the key and
the reason; unknown keys are errors.

A runtime's name is free-form (a board may carry a runtime no installed backend targets yet;
``installed_backends`` tells which do); a runtime that some installed backend targets with an
operator list (TFLM: its op resolver) must list its operators, and only such a runtime may.
``Profile.target(runtime)`` is what the board offers one backend through that runtime (the
``compilers.backends`` ``Target`` that ``Backend.fit`` judges).

What it does not do: talk to devices, decide whether a given model fits (``Backend.fit``
does, on a ``Profile.target``), or cache anything. It uses the standard library and the
backend interface (``compilers.backends``) only, and never imports ``tinymlaas``.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Union

from compilers.backends import registry
from compilers.backends.base import Backend, RuntimeSpec, Target

__all__ = ["Runtime", "Profile", "ProfileError", "load_profile", "parse_profile", "load_profiles", "get_profile",
           "match_device", "installed_backends", "PROFILE_DIR", "ENV_VAR", "FPUS"]

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
ENV_VAR = "TINYMLAAS_PROFILES"
FPUS = ("none", "sp", "dp")

PathLike = Union[str, "os.PathLike[str]"]


class ProfileError(ValueError):
    """A profile that cannot be used: ``path: key 'k': reason`` (path and key when known)."""

    def __init__(self, path: PathLike | None, key: str | None, reason: str) -> None:
        self.path = None if path is None else str(path)
        self.key = key
        self.reason = reason
        parts = [p for p in (self.path, key and f"key '{key}'", reason) if p]
        super().__init__(": ".join(parts))


@dataclass(frozen=True)
class Runtime:
    name: str
    version: str
    features: tuple[str, ...]
    ram: int        # the runtime's own RAM, bytes (not the model's tensor arena)
    flash: int      # the runtime's own code size, bytes
    operators: tuple[str, ...]  # operators its build registers (runtimes with an operator list: TFLM)

    def spec(self) -> RuntimeSpec:
        return RuntimeSpec(self.name, self.version, self.features, self.ram, self.operators)


def installed_backends(runtime: str) -> tuple[Backend, ...]:
    """The installed backends whose artifacts ``runtime`` runs."""
    return registry.for_runtime(runtime)


@dataclass(frozen=True)
class Profile:
    name: str
    title: str
    vendor: str
    core: str
    clock_mhz: int
    sram_total: int
    flash_total: int
    firmware_sram: int
    firmware_flash: int
    fpu: str
    extensions: tuple[str, ...]
    accelerator: str
    runtimes: tuple[Runtime, ...]
    max_package: int
    match_manufacturer: tuple[str, ...]
    match_model: tuple[str, ...]
    references: tuple[str, ...]
    notes: str
    source: str

    @property
    def sram_free(self) -> int:
        """RAM left for ML after the base firmware: a runtime's ``ram`` plus the model's arena must fit."""
        return self.sram_total - self.firmware_sram

    @property
    def flash_free(self) -> int:
        """Flash left for model packages after the base firmware and every runtime's code."""
        return self.flash_total - self.firmware_flash - sum(r.flash for r in self.runtimes)

    def runtime(self, name: str) -> Runtime | None:
        return next((r for r in self.runtimes if r.name == name), None)

    @property
    def operators(self) -> tuple[str, ...]:
        """The operators of the board's runtime that lists them (TFLM's op resolver)."""
        return next((r.operators for r in self.runtimes if r.operators), ())

    def unused_runtimes(self) -> tuple[str, ...]:
        """The board's runtimes that no installed backend targets."""
        return tuple(r.name for r in self.runtimes if not installed_backends(r.name))

    def target(self, runtime: str, *, margin: float = 0.0, name: str | None = None,
               flash_free_bytes: int | None = None) -> Target:
        """What this board offers a backend through ``runtime`` (``flash_free_bytes``: the flash
        free now, when packages already took some)."""
        r = self.runtime(runtime)
        if r is None:
            raise ProfileError(self.source, "runtimes", f"{self.name} has no runtime {runtime!r} "
                                                        f"(it has {', '.join(x.name for x in self.runtimes)})")
        return Target(name or self.name, self.core, self.clock_mhz, self.fpu, self.sram_free,
                      self.flash_free if flash_free_bytes is None else flash_free_bytes, self.max_package,
                      r.spec(), margin)

    def figures(self) -> dict[str, Any]:
        """JSON-friendly summary of what the device offers for ML (for capability snapshots)."""
        return {"sram_total": self.sram_total, "flash_total": self.flash_total,
                "sram_free": self.sram_free, "flash_free": self.flash_free,
                "max_package": self.max_package, "core": self.core, "clock_mhz": self.clock_mhz,
                "fpu": self.fpu, "extensions": list(self.extensions), "accelerator": self.accelerator,
                "runtimes": {r.name: {"version": r.version, "features": list(r.features), "ram": r.ram,
                                      "flash": r.flash} for r in self.runtimes},
                "operators": list(self.operators)}


# --- field checks: each returns None when the value is fine, else the reason -------------------

Check = Callable[[Any], "str | None"]
IDENT = re.compile(r"[a-z0-9][a-z0-9_-]*")      # names, cores, features, extensions
OPERATOR = re.compile(r"[A-Z][A-Z0-9_]*")        # TFLite builtin operator names


def _pos_int(v: Any) -> str | None:
    ok = isinstance(v, int) and not isinstance(v, bool) and v > 0
    return None if ok else f"expected a positive integer, got {v!r}"


def _text(v: Any) -> str | None:
    return None if isinstance(v, str) and v.strip() else f"expected a non-empty string, got {v!r}"


def _string(v: Any) -> str | None:
    return None if isinstance(v, str) else f"expected a string, got {v!r}"


def _pattern(rx: re.Pattern[str], what: str) -> Check:
    return lambda v: None if isinstance(v, str) and rx.fullmatch(v) else f"expected {what}, got {v!r}"


def _one_of(choices: tuple[str, ...]) -> Check:
    return lambda v: None if v in choices else f"expected one of {', '.join(map(repr, choices))}, got {v!r}"


def _array(item: Check, nonempty: bool = False) -> Check:
    def check(v: Any) -> str | None:
        if not isinstance(v, list) or (nonempty and not v):
            return f"expected {'a non-empty' if nonempty else 'an'} array, got {v!r}"
        for i, x in enumerate(v):
            if (reason := item(x)) is not None:
                return f"item {i}: {reason}"
        dupes = sorted({x for x in v if v.count(x) > 1})
        return f"duplicate entries {dupes}" if dupes else None
    return check


_ident = _pattern(IDENT, "a lower-case identifier ([a-z0-9_-])")
# A spec maps key -> (required, check); a dict check is a sub-table, a one-item list an array of tables.
Spec = Mapping[str, tuple[bool, Any]]
FIRMWARE: Spec = {"sram": (True, _pos_int), "flash": (True, _pos_int)}
MATCH: Spec = {"manufacturer": (True, _array(_text, nonempty=True)),
               "model": (True, _array(_text, nonempty=True))}
RUNTIME: Spec = {"name": (True, _ident), "version": (True, _text),
                 "features": (False, _array(_ident)), "ram": (True, _pos_int), "flash": (True, _pos_int),
                 "operators": (False, _array(_pattern(OPERATOR, "an upper-case operator name such as "
                                                     "'CONV_2D'"), nonempty=True))}
PROFILE: Spec = {"name": (True, _ident), "title": (True, _text), "vendor": (True, _text),
                 "core": (True, _ident), "clock_mhz": (True, _pos_int), "sram_total": (True, _pos_int),
                 "flash_total": (True, _pos_int), "fpu": (True, _one_of(FPUS)),
                 "extensions": (True, _array(_ident)), "accelerator": (True, _ident),
                 "max_package": (True, _pos_int), "references": (True, _array(_text, nonempty=True)),
                 "notes": (False, _string), "firmware": (True, FIRMWARE), "match": (True, MATCH),
                 "runtimes": (True, [RUNTIME])}


def _check(src: Path, data: Mapping[str, Any], spec: Spec, prefix: str = "") -> None:
    for key in data:
        if key not in spec:
            close = difflib.get_close_matches(key, list(spec), n=1)
            hint = f"did you mean '{prefix}{close[0]}'? " if close else ""
            raise ProfileError(src, prefix + key, f"unknown key ({hint}allowed: {', '.join(spec)})")
    for key, (required, check) in spec.items():
        where = prefix + key
        if key not in data:
            if required:
                raise ProfileError(src, where, "missing required key")
            continue
        value = data[key]
        if isinstance(check, Mapping):
            if not isinstance(value, dict):
                raise ProfileError(src, where, f"expected a table [{where}], got {value!r}")
            _check(src, value, check, where + ".")
        elif isinstance(check, list):
            if not isinstance(value, list) or not value or not all(isinstance(t, dict) for t in value):
                raise ProfileError(src, where, f"expected one or more [[{where}]] tables, got {value!r}")
            for i, table in enumerate(value):
                _check(src, table, check[0], f"{where}[{i}].")
        elif (reason := check(value)) is not None:
            raise ProfileError(src, where, reason)


# --- rules across fields, checked on the built profile: (key, rule) -> reason or None ----------

def _lists_operators(runtime: str) -> bool | None:
    """Whether the installed backends judge this runtime by its operator list (None: no
    installed backend targets it, so nothing can be said)."""
    backends = installed_backends(runtime)
    return any(b.operator_list for b in backends) if backends else None


def _runtime_rules(p: Profile) -> Iterable[tuple[str, str | None]]:
    seen: set[str] = set()
    for i, r in enumerate(p.runtimes):
        yield f"runtimes[{i}].name", f"runtime {r.name!r} listed twice" if r.name in seen else None
        seen.add(r.name)
        listed = _lists_operators(r.name)
        yield f"runtimes[{i}].operators", (
            f"{r.name} needs an operators array (the operators its build registers)"
            if listed and not r.operators else
            f"operators apply to runtimes with an operator list ({', '.join(_operator_runtimes()) or 'none'}), "
            f"not {r.name}" if r.operators and listed is False else None)
        yield f"runtimes[{i}].ram", (f"runtime RAM {r.ram} exceeds the RAM free for ML {p.sram_free} "
                                     f"(sram_total - firmware.sram)" if r.ram > p.sram_free else None)


def _operator_runtimes() -> tuple[str, ...]:
    return tuple(n for n in registry.runtime_names() if _lists_operators(n))


RULES: tuple[Callable[[Profile], Iterable[tuple[str, str | None]]], ...] = (
    lambda p: [("name", None if p.name == Path(p.source).stem
                else f"name {p.name!r} must equal the file stem {Path(p.source).stem!r}")],
    lambda p: [("firmware.sram", None if p.firmware_sram <= p.sram_total
                else f"firmware SRAM {p.firmware_sram} exceeds sram_total {p.sram_total}")],
    lambda p: [("firmware.flash", None if p.firmware_flash <= p.flash_total
                else f"firmware flash {p.firmware_flash} exceeds flash_total {p.flash_total}")],
    lambda p: [("runtimes", None if p.flash_free >= 0 else
                f"firmware flash {p.firmware_flash} + runtime flash {sum(r.flash for r in p.runtimes)} "
                f"exceeds flash_total {p.flash_total}")],
    lambda p: [("max_package", None if p.max_package <= p.flash_free
                else f"max_package {p.max_package} exceeds the flash free for packages {p.flash_free}")],
    _runtime_rules,
)


def load_profile(path: PathLike) -> Profile:
    """Read and validate one profile file; any problem is a ProfileError naming file, key and reason."""
    src = Path(path)
    try:
        with src.open("rb") as f:
            text = f.read().decode("utf-8")
    except OSError as exc:
        raise ProfileError(src, None, f"cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ProfileError(src, None, f"not UTF-8 text at byte {exc.start}") from exc
    return _parse(src, text)


def parse_profile(text: str, origin: str = "uploaded profile") -> Profile:
    """Validate a profile given as TOML text (added at run time, not read from a file): the same
    checks as a file, the profile's own ``name`` standing for the file stem. ``origin`` names
    where it came from in errors and in ``Profile.source``."""
    try:
        name = tomllib.loads(text).get("name")
    except tomllib.TOMLDecodeError:
        name = None  # _parse reports the TOML error with its line
    stem = name if isinstance(name, str) and IDENT.fullmatch(name) else "profile"
    return _parse(Path(origin) / f"{stem}.toml", text)


def _parse(src: Path, text: str) -> Profile:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = re.search(r"line (\d+)", str(exc))
        raise ProfileError(src, None, f"{'line ' + line.group(1) + ': ' if line else ''}"
                                      f"invalid TOML: {exc}") from exc
    _check(src, data, PROFILE)
    runtimes = tuple(Runtime(r["name"], r["version"], tuple(r.get("features", ())), r["ram"], r["flash"],
                             tuple(r.get("operators", ()))) for r in data["runtimes"])
    profile = Profile(
        name=data["name"], title=data["title"], vendor=data["vendor"], core=data["core"],
        clock_mhz=data["clock_mhz"], sram_total=data["sram_total"], flash_total=data["flash_total"],
        firmware_sram=data["firmware"]["sram"], firmware_flash=data["firmware"]["flash"], fpu=data["fpu"],
        extensions=tuple(data["extensions"]), accelerator=data["accelerator"], runtimes=runtimes,
        max_package=data["max_package"], match_manufacturer=tuple(data["match"]["manufacturer"]),
        match_model=tuple(data["match"]["model"]), references=tuple(data["references"]),
        notes=data.get("notes", ""), source=str(src))
    for rule in RULES:
        for key, reason in rule(profile):
            if reason is not None:
                raise ProfileError(src, key, reason)
    return profile


def _env_dirs() -> list[Path]:
    return [Path(d) for d in os.environ.get(ENV_VAR, "").split(os.pathsep) if d.strip()]


def load_profiles(extra_dirs: Iterable[PathLike] = ()) -> dict[str, Profile]:
    """The shipped profiles, then every ``*.toml`` of each extra directory, then of ``$TINYMLAAS_PROFILES``.

    A later directory's profile replaces an earlier one of the same name. A directory that
    does not exist is an error (a mistyped path must not silently drop an operator's profiles).
    """
    profiles: dict[str, Profile] = {}
    for directory in [PROFILE_DIR, *(Path(d) for d in extra_dirs), *_env_dirs()]:
        if not directory.is_dir():
            raise ProfileError(directory, None, "profile directory does not exist")
        for file in sorted(directory.glob("*.toml")):
            profile = load_profile(file)
            profiles[profile.name] = profile
    return profiles


def get_profile(name: str, extra_dirs: Iterable[PathLike] = ()) -> Profile:
    profiles = load_profiles(extra_dirs)
    if name not in profiles:
        raise ProfileError(None, None, f"unknown device profile {name!r}; known profiles: "
                                       f"{', '.join(sorted(profiles))}")
    return profiles[name]


def match_device(manufacturer: str | None, model: str | None,
                 profiles: Mapping[str, Profile] | Iterable[Profile] | None = None) -> Profile | None:
    """The profile for a device's object 3 Manufacturer (/3/0/0) and Model Number (/3/0/1), or None.

    Case-insensitive: the manufacturer must equal one of ``match.manufacturer`` and the model
    must start with one of ``match.model``; when several match, the longest model prefix wins
    (so "ESP32-S3-WROOM-1" is esp32s3, not esp32), then the first name in sorted order.
    """
    if not manufacturer or not model:
        return None
    pool = load_profiles() if profiles is None else profiles
    candidates = pool.values() if isinstance(pool, Mapping) else pool
    maker, mod = manufacturer.strip().casefold(), model.strip().casefold()
    best: tuple[int, Profile] | None = None
    for p in sorted(candidates, key=lambda p: p.name):
        if maker not in (m.strip().casefold() for m in p.match_manufacturer):
            continue
        length = max((len(x) for x in p.match_model if mod.startswith(x.strip().casefold())), default=0)
        if length and (best is None or length > best[0]):
            best = (length, p)
    return best[1] if best else None
