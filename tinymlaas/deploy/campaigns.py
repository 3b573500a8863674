"""Campaigns: one model version rolled out to a group of devices in stages.

``Campaigns.start`` resolves the group's members once and freezes them in the campaign row in
a deterministic roll-out order (sorted by sha256 of model sha256 + endpoint: the same inputs
give the same order, and the first stages are spread over the fleet rather than taken from
the start of the alphabet). A runner task per campaign then hands devices to the
``Deployer``, one deployment row per device.

Staging. ``stages`` are cumulative fractions, e.g. (0.01, 0.1, 1.0). Stage k covers the first
``ceil(stages[k] * N)`` devices of the order (at least 1); its thresholds are judged over all
of those devices (the earlier stages included). The runner starts the current stage's devices
with at most ``concurrency`` deployments in flight.

- Error threshold, at any moment: once at least ``min(10, stage size)`` of the stage's devices
  are finished, if failed / finished > ``error_threshold`` no new device starts and the
  campaign ends ``halted`` when the in-flight deployments are done.
- Success threshold, when every device of the stage is finished: succeeded / finished >=
  ``success_threshold`` moves to the next stage (persisted in ``stage``), else ``halted``.
- Last stage passed: ``completed``.

"Finished" means a terminal deployment state (succeeded, failed, cancelled); a cancelled
deployment counts as finished but neither succeeded nor failed.

Control: ``pause`` (no new devices start; in-flight ones finish), ``resume``, ``cancel`` (no
new devices; in-flight ones are cancelled through ``Deployer.cancel``; the campaign ends
``cancelled``). Every state change is persisted in ``campaigns`` and appended to ``events``
(endpoint = the campaign's name, kind ``campaign``, detail ``{id, state, note}``).

A device that has a deployment in progress when the campaign reaches it gets the campaign's
queued behind that one (``Deployer.create`` queues a campaign's deployments: one deployment per
device at a time, and the campaign chose the device).

Crash safety: the campaign row is written before its runner starts, and each deployment row
(by ``Deployer.create``) before its work starts. ``stop()`` ends the runners without touching
persisted state; ``resume_all()`` at the next start re-runs every non-terminal deployment of
each ``running`` campaign with ``Deployer.run`` and starts the devices that have no row yet, so
each device gets exactly one deployment row per campaign.

This module does not deploy anything itself (the ``Deployer`` does) and does not parse
HTTP or CLI input.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from sqlalchemy import Connection, func, insert, select, update

from tinymlaas import names
from tinymlaas.deploy.groups import get_group, members
from tinymlaas.deploy.service import TERMINAL, DeployOptions
from lwm2m.errors import BadRequest, NotFound
from tinymlaas.store import Store
from tinymlaas.store.tables import CAMPAIGNS, DEPLOYMENTS, EVENTS

log = logging.getLogger(__name__)

ACTIVE = frozenset({"running", "paused"})
MIN_FINISHED_FOR_ERRORS = 10
STOP_GRACE_S = 10.0


class DeployerLike(Protocol):
    """What campaigns need of ``tinymlaas.deploy.service.Deployer``."""

    registry: Any
    server: Any

    async def create(self, endpoint: str, entry: Any, options: DeployOptions,
                     campaign_id: int | None = None) -> int: ...

    async def run(self, deployment_id: int) -> dict[str, Any]: ...

    def cancel(self, deployment_id: int) -> None: ...


def stage_bounds(stages: Sequence[float], n: int) -> list[int]:
    """How many devices (from the start of the order) each stage covers."""
    return [min(n, max(1, math.ceil(round(f * n, 9)))) for f in stages]


def check_stages(stages: Sequence[float]) -> list[float]:
    out = [float(s) for s in stages]
    if not out:
        raise ValueError("a campaign needs at least one stage")
    if any(not 0 < s <= 1 for s in out):
        raise ValueError(f"stages must be fractions in (0, 1], got {out}")
    if any(b <= a for a, b in itertools.pairwise(out)):
        raise ValueError(f"stages must increase, got {out}")
    if out[-1] != 1.0:
        raise ValueError(f"the last stage must be 1.0 (every device), got {out[-1]}")
    return out


def rollout_order(endpoints: Sequence[str], salt: str) -> list[str]:
    return sorted(endpoints, key=lambda ep: (hashlib.sha256(f"{salt}\0{ep}".encode()).hexdigest(), ep))


@dataclass(frozen=True)
class Tally:
    """Deployment outcomes over a set of devices."""

    devices: int
    started: int
    finished: int
    succeeded: int
    failed: int

    @classmethod
    def of(cls, endpoints: Sequence[str], states: dict[str, str]) -> "Tally":
        got = [states[ep] for ep in endpoints if ep in states]
        return cls(len(endpoints), len(got), sum(s in TERMINAL for s in got),
                   sum(s == "succeeded" for s in got), sum(s == "failed" for s in got))

    def as_json(self) -> dict[str, int]:
        return {"devices": self.devices, "started": self.started, "finished": self.finished,
                "succeeded": self.succeeded, "failed": self.failed}


def error_note(t: Tally, threshold: float) -> str | None:
    """Why the error threshold stops the campaign, or None."""
    if t.finished < min(MIN_FINISHED_FOR_ERRORS, t.devices) or t.finished == 0:
        return None
    rate = t.failed / t.finished
    if rate <= threshold:
        return None
    return (f"error threshold exceeded: {t.failed} of {t.finished} finished devices failed "
            f"({rate:.1%} > {threshold:.1%})")


def success_note(t: Tally, threshold: float, stage: int) -> str | None:
    """Why stage ``stage`` (0-based) misses the success threshold, or None."""
    rate = t.succeeded / t.finished if t.finished else 0.0
    if rate >= threshold:
        return None
    return (f"success threshold missed in stage {stage + 1}: {t.succeeded} of {t.finished} devices "
            f"succeeded ({rate:.1%} < {threshold:.1%})")


@dataclass(eq=False)
class _Run:
    """The in-memory side of one campaign's runner."""

    cid: int
    state: str
    stage: int
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: bool = False
    inflight: dict[int, "asyncio.Task[None]"] = field(default_factory=dict)
    task: "asyncio.Task[None] | None" = None

    def poke(self) -> None:
        self.wake.set()


def _row(conn: Connection, cid: int) -> dict[str, Any] | None:
    r = conn.execute(select(CAMPAIGNS).where(CAMPAIGNS.c.id == cid)).first()
    return dict(r._mapping) if r is not None else None


def _deployments(conn: Connection, cid: int) -> list[dict[str, Any]]:
    q = (select(DEPLOYMENTS.c.id, DEPLOYMENTS.c.endpoint, DEPLOYMENTS.c.state, DEPLOYMENTS.c.error,
                DEPLOYMENTS.c.updated_at).where(DEPLOYMENTS.c.campaign_id == cid).order_by(DEPLOYMENTS.c.id))
    return [dict(r._mapping) for r in conn.execute(q)]


class Campaigns:
    """Every campaign of one server. Construct with the server's ``Deployer``."""

    def __init__(self, deployer: DeployerLike) -> None:
        self.deployer = deployer
        self.store: Store = deployer.server.store
        self.registrations = deployer.server.registrations
        self._runs: dict[int, _Run] = {}

    # -- persistence -------------------------------------------------------------------------

    async def _set(self, cid: int, name: str, state: str, note: str | None = None, **values: Any) -> None:
        now = time.time()
        values = {"state": state, "updated_at": now, **values}
        if note is not None:
            values["note"] = note
        if state not in ACTIVE:
            values["finished_at"] = now

        def write(conn: Connection) -> None:
            conn.execute(update(CAMPAIGNS).where(CAMPAIGNS.c.id == cid).values(**values))
            conn.execute(insert(EVENTS).values(ts=now, endpoint=name, kind="campaign",
                                               detail={"id": cid, "state": state, "note": note}))
        await self.store.write(write)

    async def _get(self, cid: int) -> dict[str, Any]:
        row = await self.store.read(lambda c: _row(c, cid))
        if row is None:
            raise NotFound(f"no campaign {cid}")
        return row

    # -- the operator's side -----------------------------------------------------------------

    async def start(self, name: str | None, model: str, group: str, stages: Sequence[float] = (0.01, 0.1, 1.0),
                    success_threshold: float = 0.95, error_threshold: float = 0.05, concurrency: int = 50,
                    options: DeployOptions | None = None) -> int:
        """Freeze the group's members, write the campaign row, start its runner; its id."""
        stages = check_stages(stages)
        if name is not None:
            names.check("campaign", name)
        for label, value in (("success threshold", success_threshold), ("error threshold", error_threshold)):
            if not 0 <= value <= 1:
                raise ValueError(f"{label} must be a fraction in [0, 1], got {value}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        options = options or DeployOptions()
        entry = await asyncio.to_thread(self.deployer.registry.get, model)
        grp = await get_group(self.store, group)
        found = await members(self.store, self.registrations, grp["selector"])
        if not found:
            raise BadRequest(f"group {group!r} has no members")
        name = name or f"{entry.name}:{entry.version} to {group}"
        now = time.time()
        row = {"name": name, "model": entry.name, "version": entry.version, "group_name": group,
               "endpoints": rollout_order(found, entry.sha256), "stages": stages,
               "success_threshold": success_threshold, "error_threshold": error_threshold,
               "concurrency": concurrency, "options": options.as_json(), "state": "running", "stage": 0,
               "created_at": now, "updated_at": now}

        def write(conn: Connection) -> int:
            key = conn.execute(insert(CAMPAIGNS).values(**row)).inserted_primary_key
            assert key is not None
            cid = int(key[0])
            conn.execute(insert(EVENTS).values(ts=now, endpoint=name, kind="campaign", detail={
                "id": cid, "state": "running", "note": f"started: {len(found)} devices, stages {stages}"}))
            return cid
        cid = await self.store.write(write)
        self._spawn(cid, "running", 0)
        return cid

    async def pause(self, cid: int) -> dict[str, Any]:
        row = await self._control(cid, ("running",), "paused")
        return row

    async def resume(self, cid: int) -> dict[str, Any]:
        row = await self._control(cid, ("paused", "running"), "running")
        if cid not in self._runs:
            self._spawn(cid, "running", row["stage"])
        return row

    async def cancel(self, cid: int) -> dict[str, Any]:
        row = await self._control(cid, ("running", "paused"), "cancelled")
        if cid not in self._runs:  # nothing in flight here: close the rows a stopped server left open
            await self._close_open_rows(cid)
        return row

    async def _control(self, cid: int, allowed: tuple[str, ...], state: str) -> dict[str, Any]:
        row = await self._get(cid)
        if row["state"] not in allowed:
            raise BadRequest(f"campaign {cid} is {row['state']}; only a {' or '.join(allowed)} campaign "
                             f"can be {'resumed' if state == 'running' else state}")
        if row["state"] != state:
            await self._set(cid, row["name"], state, note=f"{state} by the operator")
        run = self._runs.get(cid)
        if run is not None:
            run.state = state
            run.poke()
        return await self._get(cid)

    async def _close_open_rows(self, cid: int) -> None:
        def write(conn: Connection) -> None:
            now = time.time()
            conn.execute(update(DEPLOYMENTS)
                         .where(DEPLOYMENTS.c.campaign_id == cid, DEPLOYMENTS.c.state.not_in(TERMINAL))
                         .values(state="cancelled", error="campaign cancelled", updated_at=now, finished_at=now))
        await self.store.write(write)

    async def status(self, cid: int) -> dict[str, Any]:
        """The campaign row, counts per deployment state, per-stage progress, per-device list."""
        def q(conn: Connection) -> tuple[Any, ...]:
            row = _row(conn, cid)
            if row is None:
                return None, [], []
            events = conn.execute(select(EVENTS).where(EVENTS.c.kind == "campaign", EVENTS.c.endpoint == row["name"])
                                  .order_by(EVENTS.c.id))
            return row, _deployments(conn, cid), [dict(e._mapping) for e in events]
        row, deps, events = await self.store.read(q)
        if row is None:
            raise NotFound(f"no campaign {cid}")
        by_ep = {d["endpoint"]: d for d in deps}
        states = {ep: d["state"] for ep, d in by_ep.items()}
        eps: list[str] = row["endpoints"]
        counts: dict[str, int] = {}
        for d in deps:
            counts[d["state"]] = counts.get(d["state"], 0) + 1
        counts["not started"] = sum(ep not in by_ep for ep in eps)
        stages, lo = [], 0
        for k, hi in enumerate(stage_bounds(row["stages"], len(eps))):
            stages.append({"index": k, "fraction": row["stages"][k], "cumulative": hi,
                           **Tally.of(eps[lo:hi], states).as_json()})
            lo = hi
        devices = [{"endpoint": ep, "deployment": by_ep[ep]["id"] if ep in by_ep else None,
                    "state": states.get(ep, "not started"), "error": by_ep[ep]["error"] if ep in by_ep else None,
                    "updated_at": by_ep[ep]["updated_at"] if ep in by_ep else None} for ep in eps]
        history = [{"ts": e["ts"], **(e["detail"] or {})} for e in events if (e["detail"] or {}).get("id") == cid]
        return {**row, "counts": counts, "overall": Tally.of(eps, states).as_json(), "stage_progress": stages,
                "devices": devices, "history": history}

    # -- server start and stop ---------------------------------------------------------------

    async def resume_all(self) -> list[int]:
        """Continue every campaign persisted as ``running`` (at server start); their ids."""
        rows = await self.store.read(lambda c: list(c.execute(
            select(CAMPAIGNS.c.id, CAMPAIGNS.c.stage).where(CAMPAIGNS.c.state == "running"))))
        for r in rows:
            if r.id not in self._runs:
                self._spawn(r.id, "running", r.stage)
        return [r.id for r in rows]

    async def stop(self) -> None:
        """End every runner (in-flight deployment tasks are cancelled) without changing any row."""
        runs = list(self._runs.values())
        for run in runs:
            run.stopping = True
            run.poke()
        for run in runs:
            if run.task is None:
                continue
            try:
                await asyncio.wait_for(asyncio.shield(run.task), STOP_GRACE_S)
            except asyncio.TimeoutError:
                run.task.cancel()
                await asyncio.gather(run.task, return_exceptions=True)
        self._runs.clear()

    async def wait(self, cid: int) -> None:
        """Until this process's runner of the campaign ends (for tests and tools)."""
        run = self._runs.get(cid)
        if run is not None and run.task is not None:
            await asyncio.shield(run.task)

    # -- the runner --------------------------------------------------------------------------

    def _spawn(self, cid: int, state: str, stage: int) -> None:
        run = _Run(cid, state, stage)
        self._runs[cid] = run
        run.task = asyncio.create_task(self._runner(run), name=f"campaign {cid}")

    async def _runner(self, run: _Run) -> None:
        try:
            await self._drive(run)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or a lost database: end the campaign visibly
            log.exception("campaign %d failed", run.cid)
            row = await self.store.read(lambda c: _row(c, run.cid))
            if row is not None and row["state"] in ACTIVE and not run.stopping:
                await self._set(run.cid, row["name"], "halted", note=f"internal error: {exc}")
        finally:
            for task in run.inflight.values():
                task.cancel()
            await asyncio.gather(*run.inflight.values(), return_exceptions=True)
            if self._runs.get(run.cid) is run:
                del self._runs[run.cid]

    async def _drive(self, run: _Run) -> None:
        row = await self._get(run.cid)
        run.state, run.stage = row["state"], row["stage"]
        name, eps = row["name"], list(row["endpoints"])
        bounds = stage_bounds(row["stages"], len(eps))
        options = DeployOptions.from_json(row["options"])
        try:
            entry = await asyncio.to_thread(self.deployer.registry.get, f"{row['model']}:{row['version']}")
        except ValueError as exc:
            await self._set(run.cid, name, "halted", note=f"model unavailable: {exc}")
            return
        ids: dict[str, int] = {}
        states: dict[str, str] = {}
        for d in await self.store.read(lambda c: _deployments(c, run.cid)):
            ids.setdefault(d["endpoint"], d["id"])
            states.setdefault(d["endpoint"], d["state"])
        resume = [ids[ep] for ep in eps if ep in ids and states[ep] not in TERMINAL]
        endpoint_of = {i: ep for ep, i in ids.items()}
        cursor = 0
        halt: str | None = None

        def launch(dep_id: int, ep: str) -> None:
            run.inflight[dep_id] = asyncio.create_task(self._deliver(run, dep_id, ep, states),
                                                       name=f"campaign {run.cid} {ep}")

        while True:
            if run.stopping:
                return
            if run.state == "cancelled":
                for dep_id in list(run.inflight):
                    self.deployer.cancel(dep_id)
                await asyncio.gather(*run.inflight.values(), return_exceptions=True)
                await self._close_open_rows(run.cid)
                return
            if run.state == "running":
                hi = bounds[run.stage]
                tally = Tally.of(eps[:hi], states)
                halt = halt or error_note(tally, row["error_threshold"])
                if halt is not None:
                    if not run.inflight:
                        await self._set(run.cid, name, "halted", note=halt)
                        return
                else:
                    while len(run.inflight) < row["concurrency"] and run.state == "running" and not run.stopping:
                        if resume:
                            dep_id = resume.pop(0)
                            launch(dep_id, endpoint_of[dep_id])
                            continue
                        while cursor < hi and eps[cursor] in ids:
                            cursor += 1
                        if cursor >= hi:
                            break
                        ep = eps[cursor]
                        dep_id = await self.deployer.create(ep, entry, options, campaign_id=run.cid)
                        ids[ep], states[ep], endpoint_of[dep_id] = dep_id, "pending", ep
                        launch(dep_id, ep)
                    if not run.inflight and not resume and tally.finished == hi:
                        missed = success_note(tally, row["success_threshold"], run.stage)
                        if missed is not None:
                            await self._set(run.cid, name, "halted", note=missed)
                            return
                        if run.stage + 1 == len(bounds):
                            await self._set(run.cid, name, "completed",
                                            note=f"{tally.succeeded} of {tally.devices} devices succeeded")
                            return
                        run.stage += 1
                        await self._set(run.cid, name, "running", stage=run.stage,
                                        note=f"stage {run.stage + 1} of {len(bounds)}: {bounds[run.stage]} devices")
                        continue
            await run.wake.wait()
            run.wake.clear()

    async def _deliver(self, run: _Run, dep_id: int, ep: str, states: dict[str, str]) -> None:
        """One device's deployment; its outcome goes to ``states`` and wakes the runner."""
        try:
            result = await self.deployer.run(dep_id)
            state = result.get("state")
            if state not in TERMINAL:
                await self._fail(dep_id, f"deployer returned state {state!r}")
                state = "failed"
            states[ep] = str(state)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("deployment %d (%s) raised", dep_id, ep)
            await self._fail(dep_id, f"deployer error: {exc}")
            states[ep] = "failed"
        finally:
            run.inflight.pop(dep_id, None)
            run.poke()

    async def _fail(self, dep_id: int, error: str) -> None:
        def write(conn: Connection) -> None:
            now = time.time()
            conn.execute(update(DEPLOYMENTS).where(DEPLOYMENTS.c.id == dep_id, DEPLOYMENTS.c.state.not_in(TERMINAL))
                         .values(state="failed", error=error, updated_at=now, finished_at=now))
        await self.store.write(write)

    async def list(self) -> list[dict[str, Any]]:
        def q(conn: Connection) -> tuple[list[Any], list[Any]]:
            rows = list(conn.execute(select(CAMPAIGNS).order_by(CAMPAIGNS.c.id)))
            counts = list(conn.execute(select(DEPLOYMENTS.c.campaign_id, DEPLOYMENTS.c.state, func.count())
                                       .where(DEPLOYMENTS.c.campaign_id.is_not(None))
                                       .group_by(DEPLOYMENTS.c.campaign_id, DEPLOYMENTS.c.state)))
            return rows, counts
        rows, counts = await self.store.read(q)
        per: dict[int, dict[str, int]] = {}
        for cid, state, n in counts:
            per.setdefault(cid, {})[state] = n
        out = []
        for r in rows:
            c = per.get(r.id, {})
            out.append({"id": r.id, "name": r.name, "model": r.model, "version": r.version, "group": r.group_name,
                        "state": r.state, "stage": r.stage, "stages": r.stages, "devices": len(r.endpoints),
                        "started": sum(c.values()), "succeeded": c.get("succeeded", 0), "failed": c.get("failed", 0),
                        "note": r.note, "created_at": r.created_at, "finished_at": r.finished_at})
        return out


__all__ = ["Campaigns", "DeployerLike", "Tally", "check_stages", "rollout_order", "stage_bounds"]
