"""How a simulated device behaves where real LwM2M clients differ from ours: personalities.

Our own firmware has the ML Capability (33100) and ML Inference (33101) objects, a Device
object that names its board, and sends Updates when it wakes. Real clients that no one here
wrote do otherwise; each ``Personality`` is one such way, taken from clients seen in the field:

=================  ==========================================================================
``tinymlaas``      our firmware (the default)
``no-ml-objects``  no 33100/33101, and a Device object that names no board we have a profile
                   for (Wakaama's example client: "Open Mobile Alliance" / "Lightweight M2M
                   Client"): it can be targeted only through ``devices set-profile`` or figures
``reregisters``    queue mode, and a new Register (new registration id) on every wake instead
                   of an Update (Anjay does this); no 33100/33101
``firmware-only``  object 5 (Firmware Update) only, no 33100/33101, an unknown Device object
=================  ==========================================================================

A personality is data: ``SimulatedDevice`` takes its fields as keyword arguments
(``device_kwargs``). It does not touch object 9 or 5 semantics (``software``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

UNKNOWN_IDENTITY = ("Open Mobile Alliance", "Lightweight M2M Client")


@dataclass(frozen=True)
class Personality:
    name: str
    with_capability_object: bool = True
    with_inference_object: bool = True
    identity: tuple[str, str] | None = None  # Device object (manufacturer, model); None: the board's
    register_on_wake: bool = False
    queue_mode: bool | None = None  # None: as the caller says
    update_objects: tuple[int, ...] | None = None  # None: as the caller says

    def device_kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {"with_capability_object": self.with_capability_object,
                               "with_inference_object": self.with_inference_object,
                               "identity": self.identity, "register_on_wake": self.register_on_wake}
        if self.queue_mode is not None:
            out["queue_mode"] = self.queue_mode
        if self.update_objects is not None:
            out["update_objects"] = self.update_objects
        return out


PERSONALITIES: dict[str, Personality] = {p.name: p for p in (
    Personality("tinymlaas"),
    Personality("no-ml-objects", with_capability_object=False, with_inference_object=False,
                identity=UNKNOWN_IDENTITY),
    Personality("reregisters", with_capability_object=False, with_inference_object=False,
                register_on_wake=True, queue_mode=True),
    Personality("firmware-only", with_capability_object=False, with_inference_object=False,
                identity=UNKNOWN_IDENTITY, update_objects=(5,)),
)}


def personality(name: str) -> Personality:
    if name not in PERSONALITIES:
        raise ValueError(f"unknown personality {name!r}: expected one of {', '.join(PERSONALITIES)}")
    return PERSONALITIES[name]


__all__ = ["PERSONALITIES", "Personality", "UNKNOWN_IDENTITY", "personality"]
