"""What an operator set for each device (``device_settings``), kept in memory and in the database.

A device that speaks neither our ML Capability object (33100) nor a Device object (3) that
matches a bundled profile can still be targeted: the operator names the board
(``profile``), or gives the figures a decision needs (``sram_free``, ``flash_free``,
``runtimes``). Queue mode is set here too: ``awake_s`` (how long the device listens after it
spoke, overriding the server's default) and ``queue_mode`` (True/False: treat it as a queue-mode
device, or not, whatever its registration said; None: as registered).

``set`` validates (a runtime must be one the installed backends target, figures positive, the
profile known), writes the row and only then changes the in-memory copy; nothing is half
written. Reads are from memory (every request for a queue-mode device asks). It does not decide
what the settings mean: ``queue``, ``capabilities`` and ``deploy.target`` do.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Callable, Iterable

from sqlalchemy import Connection, delete, insert, select

from compilers.backends import registry
from lwm2m.errors import BadRequest
from tinymlaas.store import Store
from tinymlaas.store.tables import DEVICE_SETTINGS

MAX_AWAKE_S = 86400.0


@dataclass(frozen=True)
class DeviceSettings:
    endpoint: str
    profile: str | None = None
    sram_free: int | None = None
    flash_free: int | None = None
    runtimes: tuple[str, ...] = ()
    awake_s: float | None = None
    queue_mode: bool | None = None

    @property
    def empty(self) -> bool:
        return self == DeviceSettings(self.endpoint)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["runtimes"] = list(self.runtimes)
        return out


FIELDS = tuple(f.name for f in fields(DeviceSettings) if f.name != "endpoint")


def check_runtime(text: str) -> str:
    """``NAME`` or ``NAME VERSION``; NAME a runtime some installed backend targets."""
    parts = text.split()
    known = registry.runtime_names()
    if not parts or len(parts) > 2 or parts[0] not in known:
        raise BadRequest(f"runtime {text!r}: expected NAME or 'NAME VERSION' with NAME one the installed "
                         f"backends run: {', '.join(sorted(known))}")
    return " ".join(parts)


def _positive(name: str, value: Any, limit: float) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= limit:
        raise BadRequest(f"{name}={value!r}: expected a positive number up to {limit:g}")
    return value


def validate(settings: DeviceSettings, known_profile: Callable[[str], bool]) -> DeviceSettings:
    """The settings, checked; BadRequest naming the field that is wrong."""
    if settings.profile is not None and not known_profile(settings.profile):
        raise BadRequest(f"{settings.endpoint}: unknown device profile {settings.profile!r} "
                         "(tinymlaas profiles list; add one with tinymlaas profiles add FILE)")
    for name in ("sram_free", "flash_free"):
        value = getattr(settings, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise BadRequest(f"{name}={value!r}: expected a whole number of bytes")
        _positive(name, value, 2**40)
    _positive("awake_s", settings.awake_s, MAX_AWAKE_S)
    return replace(settings, runtimes=tuple(check_runtime(r) for r in settings.runtimes))


def _row(s: DeviceSettings) -> dict[str, Any]:
    return {**s.as_json(), "updated_at": time.time()}


class DeviceSettingsTable:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.by_endpoint: dict[str, DeviceSettings] = {}

    def load(self, rows: Iterable[Any]) -> None:
        for r in rows:
            self.by_endpoint[r.endpoint] = DeviceSettings(
                r.endpoint, r.profile, r.sram_free, r.flash_free, tuple(r.runtimes or ()), r.awake_s, r.queue_mode)

    @staticmethod
    def sql_load(conn: Connection) -> list[Any]:
        return list(conn.execute(select(DEVICE_SETTINGS)))

    def get(self, endpoint: str) -> DeviceSettings:
        return self.by_endpoint.get(endpoint) or DeviceSettings(endpoint)

    async def change(self, endpoint: str, known_profile: Callable[[str], bool], **changes: Any) -> DeviceSettings:
        """Set (a value) or clear (None, or () for runtimes) the named fields; returns the result."""
        bad = sorted(set(changes) - set(FIELDS))
        if bad:
            raise BadRequest(f"unknown device setting(s) {', '.join(bad)}: expected {', '.join(FIELDS)}")
        if "runtimes" in changes:
            changes["runtimes"] = tuple(changes["runtimes"] or ())
        new = validate(replace(self.get(endpoint), **changes), known_profile)

        def save(c: Connection) -> None:
            c.execute(delete(DEVICE_SETTINGS).where(DEVICE_SETTINGS.c.endpoint == endpoint))
            if not new.empty:
                c.execute(insert(DEVICE_SETTINGS).values(**_row(new)))
        await self.store.write(save)
        if new.empty:
            self.by_endpoint.pop(endpoint, None)
        else:
            self.by_endpoint[endpoint] = new
        return new
