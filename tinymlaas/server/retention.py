"""Retention: device rows nobody manages are pruned, so unauthenticated registrations do not pile up.

A device row is made at a device's first registration and outlives it (``devices list`` shows
devices that are gone). Without a bound every endpoint name ever seen would stay: a fuzzer or
a misconfigured fleet leaves thousands. Every ``retention_sweep_s`` the sweeper deletes the
rows (with their capability snapshots, observed values and events) of devices that have no
live registration, carry nothing an operator gave them (no tags, no profile), and either

- never completed a registration in the sense that matters to the server: it never learned
  what the device is (no capability source) and never deployed to it, and it was last seen
  more than ``junk_device_retention_s`` ago (default one day), or
- were last seen more than ``device_retention_s`` ago (default 30 days).

Deployment and campaign rows are history and stay. The conditions are evaluated in SQL in
the store's writer, so a device that registers again meanwhile (its ``last_seen`` is new)
is never pruned. Pruned rows are counted in metrics (``devices_pruned``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from sqlalchemy import Connection, and_, delete, or_, select

from tinymlaas.store.tables import (
    CAPABILITY_SNAPSHOTS,
    DEPLOYMENTS,
    DEVICES,
    EVENTS,
    OBSERVED_VALUES,
    REGISTRATIONS,
)

if TYPE_CHECKING:
    from tinymlaas.server.core import Core

log = logging.getLogger(__name__)

BATCH = 1000
FIRST_SWEEP_S = 60.0


def prune_rows(conn: Connection, now: float, junk_after_s: float, unseen_after_s: float) -> list[str]:
    """Delete one batch of prunable devices; return their endpoints."""
    d = DEVICES.c
    unmanaged = and_(d.endpoint.not_in(select(REGISTRATIONS.c.endpoint)),
                     or_(d.tags == "", d.tags.is_(None)), d.profile.is_(None))
    junk = and_(d.last_seen < now - junk_after_s, d.capability_source.is_(None),
                d.endpoint.not_in(select(DEPLOYMENTS.c.endpoint)))
    unseen = d.last_seen < now - unseen_after_s
    endpoints = [r.endpoint for r in conn.execute(select(d.endpoint).where(unmanaged, or_(junk, unseen)).limit(BATCH))]
    if endpoints:
        for table in (CAPABILITY_SNAPSHOTS, OBSERVED_VALUES, EVENTS, DEVICES):
            conn.execute(delete(table).where(table.c.endpoint.in_(endpoints)))
    return endpoints


class Retention:
    def __init__(self, server: "Core") -> None:
        self.server = server

    async def prune(self, now: float | None = None) -> int:
        """Prune every prunable device row now; the number pruned."""
        limits, total = self.server.limits, 0
        now = time.time() if now is None else now
        while True:
            batch = await self.server.store.write(
                lambda c: prune_rows(c, now, limits.junk_device_retention_s, limits.device_retention_s))
            total += len(batch)
            if len(batch) < BATCH:
                break
        if total:
            self.server.metrics.inc("devices_pruned", total)
            log.info("pruned %d device rows nobody manages", total)
        return total

    async def forever(self) -> None:
        await asyncio.sleep(min(FIRST_SWEEP_S, self.server.limits.retention_sweep_s))
        while True:
            try:
                await self.prune()
            except Exception as exc:  # a failed sweep is retried at the next one
                log.warning("retention sweep failed: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(self.server.limits.retention_sweep_s)
