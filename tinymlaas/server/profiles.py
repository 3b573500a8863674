"""The board profiles a running server knows, from every source, and profiles added at run time.

Sources, later ones replacing earlier ones of the same name:

1. the profiles shipped in ``device_profiles/profiles/``;
2. the server's profile directories (``serve --profiles-dir DIR``, repeatable);
3. the directories in ``$TINYMLAAS_PROFILES`` (``os.pathsep``-separated);
4. profiles stored in the database (``stored_profiles``): added or replaced through the admin
   API (``POST /profiles``, TOML text) or ``tinymlaas profiles add FILE``, removed with
   ``DELETE /profiles/NAME``. Each is validated by ``device_profiles.parse_profile`` before it
   is stored, so a bad profile is refused with the key and the reason and nothing changes.

How a device gets one of them (``capabilities``): the ML Capability object names its profile
(/33100/0/13), the operator assigns one (``devices set-profile``, ``device_settings``), or the
Device object's manufacturer and model match one. This module only holds the set.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from sqlalchemy import Connection, delete, insert, select

from device_profiles import PROFILE_DIR, Profile, ProfileError, load_profiles, parse_profile
from lwm2m.errors import BadRequest, NotFound
from tinymlaas.store import Store
from tinymlaas.store.tables import STORED_PROFILES

ORIGIN = "database"  # Profile.source of a stored profile: "database/NAME.toml"


class ProfileBook:
    def __init__(self, store: Store, dirs: Iterable[str | Path] = ()) -> None:
        self.store = store
        self.dirs = tuple(Path(d) for d in dirs)
        self.files: dict[str, Profile] = load_profiles(self.dirs)
        self.stored: dict[str, Profile] = {}
        self.profiles: dict[str, Profile] = dict(self.files)

    def load(self, rows: Iterable[Any]) -> list[str]:
        """Add the stored profiles (at start); returns the problems of rows that no longer validate."""
        problems = []
        for r in rows:
            try:
                self.stored[r.name] = parse_profile(r.toml, ORIGIN)
            except ProfileError as exc:  # e.g. a runtime whose backend was uninstalled since
                problems.append(str(exc))
        self._merge()
        return problems

    @staticmethod
    def sql_load(conn: Connection) -> list[Any]:
        return list(conn.execute(select(STORED_PROFILES)))

    def _merge(self) -> None:
        self.profiles = {**self.files, **self.stored}

    def __contains__(self, name: object) -> bool:
        return name in self.profiles

    def all(self) -> Mapping[str, Profile]:
        return self.profiles

    def get(self, name: str) -> Profile:
        if name not in self.profiles:
            raise NotFound(f"unknown device profile {name!r}; known: {', '.join(sorted(self.profiles))}")
        return self.profiles[name]

    def origin(self, profile: Profile) -> str:
        if profile.name in self.stored:
            return "database"
        return "shipped" if Path(profile.source).parent == PROFILE_DIR else "directory"

    def _saving(self, text: str) -> tuple[Profile, Any]:
        try:
            profile = parse_profile(text, ORIGIN)
        except ProfileError as exc:
            raise BadRequest(f"profile refused: {exc}") from None
        now = time.time()

        def save(c: Connection) -> None:
            c.execute(delete(STORED_PROFILES).where(STORED_PROFILES.c.name == profile.name))
            c.execute(insert(STORED_PROFILES).values(name=profile.name, toml=text, updated_at=now))
        return profile, save

    def _removing(self, name: str) -> Any:
        if name not in self.stored:
            where = "shipped or in a profile directory" if name in self.files else "not known"
            raise NotFound(f"profile {name!r} is not stored in the database ({where}); only added profiles "
                           "can be removed")
        return lambda c: c.execute(delete(STORED_PROFILES).where(STORED_PROFILES.c.name == name))

    async def add(self, text: str) -> Profile:
        """Validate and store a profile (TOML text); it replaces one of the same name."""
        profile, save = self._saving(text)
        await self.store.write(save)
        self.stored[profile.name] = profile
        self._merge()
        return profile

    def add_sync(self, text: str) -> Profile:
        """``add`` without a running server (the CLI on the server's database)."""
        profile, save = self._saving(text)
        self.store.write_sync(save)
        self.stored[profile.name] = profile
        self._merge()
        return profile

    async def remove(self, name: str) -> None:
        await self.store.write(self._removing(name))
        del self.stored[name]
        self._merge()

    def remove_sync(self, name: str) -> None:
        self.store.write_sync(self._removing(name))
        del self.stored[name]
        self._merge()


def profile_row(p: Profile, origin: str) -> dict[str, Any]:
    """What the API and the CLI show of a profile."""
    return {"name": p.name, "title": p.title, "core": p.core, "clock_mhz": p.clock_mhz, **p.figures(),
            "firmware": {"sram": p.firmware_sram, "flash": p.firmware_flash}, "references": list(p.references),
            "match": {"manufacturer": list(p.match_manufacturer), "model": list(p.match_model)},
            "source": str(p.source), "origin": origin}
