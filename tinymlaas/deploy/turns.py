"""One active deployment per device: a second one is refused, or queued behind the first.

A device runs one deployment at a time (two deliveries into one device would fight over its
update objects, its flash and its active model). ``claim`` is what ``Deployer.create`` runs in
the store's writer thread, so the check and the insert are one step: when the endpoint has a
deployment that is not finished (``TERMINAL``), the new one is refused with
``DeploymentConflict`` (CoAP 4.09 Conflict, HTTP 409) naming the running one and what the
operator can do, unless the caller asked to queue it (``--after-current``, ``after_current``
in the API body; a campaign's deployments always queue: the campaign chose the device, a
refusal would count as its failure). A queued row is in state ``queued``.

``wait_turn`` is what ``Deployer._run`` awaits first: a deployment runs once every older
unfinished deployment of its device has ended, so queued ones run in the order they were
made, across a server restart too (the order is the rows' ids). The wait is bounded in time
(``Policy.queue_wait_s``) and in count; past it the deployment fails naming the one ahead.

What it does not do: run or cancel deployments (``service``), or talk HTTP (``tinymlaas.api``).
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from aiocoap import Code
from sqlalchemy import insert, select

from lwm2m.errors import LwM2MError
from tinymlaas.store.tables import DEPLOYMENTS, EVENTS

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
QUEUED = "queued"


class DeploymentConflict(LwM2MError):
    """The device has a deployment running (4.09 Conflict)."""

    code = Code.CONFLICT

    def __init__(self, message: str, running_id: int) -> None:
        super().__init__(message)
        self.running_id = running_id


class TurnExpired(LwM2MError):
    """A queued deployment waited longer than the policy allows."""

    code = Code.GATEWAY_TIMEOUT


def _running(c: Any, endpoint: str, before: int | None = None) -> Any:
    q = (select(DEPLOYMENTS.c.id, DEPLOYMENTS.c.model, DEPLOYMENTS.c.version, DEPLOYMENTS.c.state,
                DEPLOYMENTS.c.campaign_id)
         .where(DEPLOYMENTS.c.endpoint == endpoint, DEPLOYMENTS.c.state.not_in(TERMINAL)))
    if before is not None:
        q = q.where(DEPLOYMENTS.c.id < before)
    return c.execute(q.order_by(DEPLOYMENTS.c.id).limit(1)).first()


def describe(row: Any) -> str:
    campaign = f", campaign {row.campaign_id}" if row.campaign_id is not None else ""
    return f"deployment {row.id} ({row.model}:{row.version}, {row.state}{campaign})"


def claim(c: Any, row: dict[str, Any], queue: bool) -> tuple[int, Any]:
    """Insert the deployment ``row`` (and its event) unless its device has one running: then
    return (0, the running one) when not ``queue``, else insert it as ``queued``."""
    running = _running(c, row["endpoint"])
    if running is not None and not queue:
        return 0, running
    if running is not None:
        row = {**row, "state": QUEUED}
    new_id = int(c.execute(insert(DEPLOYMENTS).values(**row)).inserted_primary_key[0])
    c.execute(insert(EVENTS).values(ts=row["created_at"], endpoint=row["endpoint"], kind="deployment",
                                    detail={"id": new_id, "state": row["state"],
                                            "model": f"{row['model']}:{row['version']}",
                                            **({"after": running.id} if running is not None else {})}))
    return new_id, running


def conflict(endpoint: str, running: Any) -> DeploymentConflict:
    return DeploymentConflict(
        f"{endpoint} has {describe(running)} in progress: one deployment per device at a time; wait "
        f"for it, cancel it (tinymlaas deployments cancel {running.id}), or queue this one behind it "
        "(tinymlaas deploy --after-current; \"after_current\": true in the API)", running.id)


async def wait_turn(deployer: Any, deployment_id: int, endpoint: str) -> None:
    """Return once no older deployment of ``endpoint`` is unfinished; ``TurnExpired`` after
    ``queue_wait_s``. While the one ahead runs here its task is awaited (not polled); a row
    ahead that nothing runs (a restart before it resumed) is looked at every ``poll_s``."""
    policy = deployer.policy
    end = time.monotonic() + policy.queue_wait_s
    ahead = None
    for _ in range(math.ceil(policy.queue_wait_s / policy.poll_s) + 1):
        ahead = await deployer.server.store.read(lambda c: _running(c, endpoint, before=deployment_id))
        if ahead is None:
            return
        left = end - time.monotonic()
        if left <= 0:
            break
        task = deployer.tasks.get(ahead.id)
        if task is not None:
            await asyncio.wait({task}, timeout=left)  # its end, not its result (it may fail)
        else:
            await asyncio.sleep(min(left, policy.poll_s))
    assert ahead is not None
    raise TurnExpired(f"{endpoint}: waited {policy.queue_wait_s:g} s behind {describe(ahead)}; gave up "
                      "(policy queue_wait_s)")


__all__ = ["QUEUED", "TERMINAL", "DeploymentConflict", "TurnExpired", "claim", "conflict", "describe", "wait_turn"]
