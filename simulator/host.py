"""What the parts of a simulated device use of the device they belong to: the ``Host`` protocol.

``SimulatedDevice`` (``simulator.device``) builds its parts — the packages and update slots
(``simulator.software``), the ML Inference object (``simulator.inference``) and the bootstrap
client (``simulator.bootstrap``) — and hands each of them itself. The parts see it through
this protocol, not through ``simulator.device``, so imports go one way: the device imports its
parts, the parts import this module. ``simulator.software`` extends it with what only the
update slots need (``SlotHost``: the packages, activate, deactivate).

What it does not do: anything at run time; it is a type, checked by mypy against
``SimulatedDevice``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from device_profiles import Profile
from simulator.faults import Faults
from simulator.objects import ObjectTree
from simulator.runtimes import ModelRunner
from simulator.security import DeviceSecurity

if TYPE_CHECKING:
    from simulator.client import LwM2MClient


class Host(Protocol):
    """One simulated device, as its parts use it."""

    endpoint: str
    version: str  # the LwM2M version it speaks ("1.1")
    profile: Profile
    tree: ObjectTree
    faults: Faults
    runner: ModelRunner
    security: DeviceSecurity
    signing_key: bytes | None  # the package-signing trust anchor it holds
    sample_inputs: list[bytes] | None
    client: LwM2MClient | None
    reboots: int
    bootstraps: int

    @property
    def context(self) -> Any:
        """The device's CoAP context (aiocoap), None while it is off."""

    def route(self, uri: str) -> str:
        """``uri`` as the device reaches it: through its (faulty) link when it is the server's."""

    def capabilities_changed(self) -> None:
        """Publish the free flash again (the ML Capability object) after a package came or went."""

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` as one of the device's tasks (cancelled when it stops or reboots)."""

    def trust_anchor_from_bootstrap(self, value: bytes) -> None:
        """Take the package-signing trust anchor a bootstrap server wrote."""
