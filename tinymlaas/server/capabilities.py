"""What a device can run: read after each new registration, stored as a snapshot.

A device that registered the ML Capability object (33100) is read there (source
``ml-capability-object``). Otherwise the server reads the Device object (3): manufacturer,
model number, memory free/total; then the profile the operator assigned to the device
(``devices set-profile``, source ``assigned-profile``), or else the profile its manufacturer
and model match (source ``device-object+profile``; ``device-object`` with no match: the
deployer then needs explicit figures) supplies the ML figures. Profiles are the server's
``ProfileBook`` (every source, including those added at run time). Values are stored as
``lwm2m.jsonvalues`` JSON (a manufacturer string that is not clean text is matched by its
best-effort text). The snapshot and its source go to ``capability_snapshots``; the device row
records the source and profile.

Reading runs as a background task after the registration was acknowledged; a failure is
logged as an event (``capabilities-failed``) and never affects the registration.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

from sqlalchemy import Connection, insert, update

from device_profiles import Profile, match_device
from lwm2m.errors import LwM2MError
from lwm2m.jsonvalues import content_to_json, value_to_json
from lwm2m.path import Path, RawString
from tinymlaas.server.registrations import Registration, event_row
from tinymlaas.store.tables import CAPABILITY_SNAPSHOTS, DEVICES

if TYPE_CHECKING:
    from tinymlaas.server.core import Core

log = logging.getLogger(__name__)

ML_CAPABILITY = 33100
DEVICE = 3
# Device object resources that identify hardware: manufacturer, model, memory free/total (KB).
DEVICE_RESOURCES = {0: "manufacturer", 1: "model_number", 10: "memory_free_kb", 21: "memory_total_kb"}

ProfileMatcher = Callable[[dict[str, Any]], "tuple[str, dict[str, Any]] | None"]


def sql_snapshot(conn: Connection, endpoint: str, source: str, data: dict[str, Any], profile: str | None) -> None:
    conn.execute(insert(CAPABILITY_SNAPSHOTS).values(endpoint=endpoint, taken_at=time.time(),
                                                             source=source, data=data))
    conn.execute(update(DEVICES).where(DEVICES.c.endpoint == endpoint)
                 .values(capability_source=source, profile=profile))


def _text(value: Any) -> str | None:
    return value.text if isinstance(value, RawString) else value if isinstance(value, str) else None


def profile_matcher(profiles: Mapping[str, Profile] | Callable[[], Mapping[str, Profile]]) -> ProfileMatcher:
    """Match a Device-object reading (manufacturer, model number) to one of ``profiles`` (a
    mapping, or a function returning the current one)."""
    def match(data: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        pool = profiles() if callable(profiles) else profiles
        profile = match_device(_text(data.get("manufacturer")), _text(data.get("model_number")), pool)
        return (profile.name, profile.figures()) if profile is not None else None
    return match


class Capabilities:
    def __init__(self, server: "Core", enabled: bool = True,
                 profiles: Mapping[str, Profile] | Callable[[], Mapping[str, Profile]] | None = None) -> None:
        self.server = server
        self.enabled = enabled
        self.profiles = profiles
        self.profile_matcher: ProfileMatcher | None = profile_matcher(profiles) if profiles else None

    def _pool(self) -> Mapping[str, Profile]:
        if self.profiles is None:
            return {}
        return self.profiles() if callable(self.profiles) else self.profiles

    def on_registered(self, reg: Registration) -> None:
        if self.enabled:
            self.server.spawn(self.refresh(reg.endpoint), name=f"capabilities {reg.endpoint}")

    async def refresh(self, endpoint: str) -> dict[str, Any] | None:
        try:
            return await self._refresh(endpoint)
        except LwM2MError as exc:
            log.info("reading capabilities of %s failed: %s", endpoint, exc)
            await self.server.store.put(event_row(endpoint, "capabilities-failed", error=exc.message))
            return None

    async def _refresh(self, endpoint: str) -> dict[str, Any]:
        reg = self.server.device_client.registration(endpoint)
        profile: str | None = None
        if ML_CAPABILITY in reg.objects():
            content = await self.server.read(endpoint, Path(ML_CAPABILITY, 0))
            source, data = "ml-capability-object", content_to_json(content)
        else:
            content = await self.server.read(endpoint, Path(DEVICE, 0))
            values = {name: content.get(Path(DEVICE, 0, rid)) for rid, name in DEVICE_RESOURCES.items()}
            data = {name: None if v is None else value_to_json(v) for name, v in values.items()}
            source = "device-object"
            assigned = self.server.device_settings.get(endpoint).profile
            pool = self._pool()
            if assigned is not None and assigned in pool:
                match: tuple[str, dict[str, Any]] | None = (assigned, pool[assigned].figures())
                source = "assigned-profile"
            else:
                match = self.profile_matcher(values) if self.profile_matcher else None
                source = "device-object+profile" if match is not None else source
            if match is not None:
                profile, figures = match
                data = {**data, "profile": profile, **figures}
        await self.server.store.write(lambda c: sql_snapshot(c, endpoint, source, data, profile))
        return {"source": source, "profile": profile, "data": data}
