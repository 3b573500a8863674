"""What an update slot holds: the server's own record of what it delivered where, checked
against what the device reports now.

A real LwM2M client fills PkgName / PkgVersion (object 9 resources 0 and 1, object 5 6 and 7)
from its own package metadata, or leaves them empty: they are the device's words, never the
manifest's. So the server does not ask "does the device name my package?"; it asks "did I
deliver this artifact into this slot, and does the device still report the slot as it did
when that delivery succeeded?":

* ``record(rows)``: from the device's deployment rows, per slot path, what the latest
  deployment that wrote into it left there (``Held``: artifact sha256, model and version, and
  the PkgName / PkgVersion / Update State the device reported at the end, kept in the row's
  ``inference["slot"]``). Only a succeeded delivery leaves a record; a later deployment that
  got as far as choosing the slot and did not succeed makes the slot unknown (it may have
  written there). Activations (rollback by Activate, method ``activate``) write nothing.
* ``holds(held, slot)``: the record stands if the device still reports the same PkgName and
  PkgVersion for that slot as it did then and the package is still there (Update State
  DELIVERED or INSTALLED). A record without the device's names (a row from before they were
  kept) does not stand.

The deployer uses it to pick the object 9 instance to deliver into (one holding this very
build already, else a free one, never the active one), to tell the delivery that a slot it
finds holding a package holds this one (``deliver9(..., ours=True)``: Install / Activate, no
new download), and for rollback by Activate. Where the device has our ML Inference object, the
running model's sha256 is checked after activation as well (``service``).

What it does not do: talk to the device (``service`` reads the instances), or judge success
(the update objects' tables do, in ``lwm2m.updates``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lwm2m.path import Path, Value
from lwm2m.updates.software import Res9, UpdateState

HOLDING = frozenset({UpdateState.DELIVERED, UpdateState.INSTALLED})


@dataclass(frozen=True)
class Slot:
    """One object 9 instance as the device reports it now."""

    instance: int
    state: int
    active: bool
    pkg_name: str | None
    pkg_version: str | None

    @property
    def path(self) -> str:
        return f"/9/{self.instance}"


def slots_of(content: Mapping[Path, Value]) -> dict[int, Slot]:
    """The instances of a Read of /9."""
    by: dict[int, dict[int, Value]] = {}
    for p, value in content.items():
        if p.depth == 3 and p.instance_id is not None and p.resource_id is not None:
            by.setdefault(p.instance_id, {})[p.resource_id] = value
    out = {}
    for i, v in sorted(by.items()):
        state = v.get(Res9.UPDATE_STATE, 0)
        out[i] = Slot(i, int(state) if isinstance(state, int) and not isinstance(state, bool) else 0,
                      bool(v.get(Res9.ACTIVATION_STATE)), _text(v.get(Res9.PKG_NAME)), _text(v.get(Res9.PKG_VERSION)))
    return out


def _text(value: Value | None) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class Held:
    """Deployment ``deployment_id`` delivered ``sha256`` (``model``:``version``) into ``path``;
    the device then reported ``pkg_name`` / ``pkg_version`` there (None: not kept)."""

    deployment_id: int
    path: str
    model: str
    version: str
    sha256: str | None
    names: tuple[str | None, str | None] | None


def record(rows: Iterable[Mapping[str, Any]], skip: int | None = None) -> dict[str, Held | None]:
    """Per slot path, what the latest deployment that wrote into it left there (None: unknown);
    ``skip``: a deployment id not to count (the one asking)."""
    out: dict[str, Held | None] = {}
    for r in sorted(rows, key=lambda r: r["id"]):
        path = r.get("object_path")
        if not path or r["id"] == skip or r.get("method") == "activate":
            continue
        if r["state"] != "succeeded":
            out[path] = None
            continue
        slot = (r.get("inference") or {}).get("slot") or {}
        names = (slot["pkg_name"], slot["pkg_version"]) if "pkg_name" in slot else None
        out[path] = Held(r["id"], path, r["model"], r["version"], r.get("artifact_sha256"), names)
    return out


def holds(held: Held | None, slot: Slot) -> bool:
    """Whether the record ``held`` still stands for ``slot`` as the device reports it now."""
    return (held is not None and held.names is not None and slot.state in HOLDING
            and held.names == (slot.pkg_name, slot.pkg_version))


def holding(slots: Mapping[int, Slot], records: Mapping[str, Held | None], model: str, version: str,
            sha256: str) -> list[int]:
    """The instances that hold this very package (``model``:``version`` built as the artifact
    ``sha256``), by our record."""
    return [i for i, s in slots.items() if holds(records.get(s.path), s)
            and (h := records[s.path]) is not None and (h.model, h.version, h.sha256) == (model, version, sha256)]


def holding_version(slots: Mapping[int, Slot], records: Mapping[str, Held | None], model: str,
                    version: str) -> tuple[int, Held] | None:
    """An installed instance that holds a build of ``model``:``version``, by our record."""
    for i, s in slots.items():
        h = records.get(s.path)
        if (h is not None and holds(h, s) and s.state == UpdateState.INSTALLED
                and (h.model, h.version) == (model, version)):
            return i, h
    return None


__all__ = ["Held", "Slot", "holding", "holding_version", "holds", "record", "slots_of"]
