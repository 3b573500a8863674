"""``Deployer``: one deployment of a registered model to one device, persisted step by step.

``create`` writes a ``pending`` row; ``run`` drives it: read the device's capabilities afresh
-> build every candidate (compile cache) -> decide (``choice``) -> seal the package (server
key) -> give the device the server's public key if it lacks it -> deliver through object 9
(or 5) -> read the ML Inference object (33101) to confirm the new artifact's sha256 is the
one running and that it produced an inference. Each step is written to the ``deployments``
row (and an ``events`` row) before it starts, so a restart knows where every deployment was;
``run`` on a row that is not terminal resumes it (the delivery loop starts from whatever the
device reports). Failures end in state ``failed`` with a one-line ``error`` (and the device's
Update Result); ``run`` never raises for them.

One deployment per device at a time (``turns``): ``create`` refuses a second one with a 4.09
naming the running one, or queues it behind (``after_current``; campaigns always queue), and
``run`` waits its turn. The device's ML objects are evidence where it announced them at
registration, never required: without 33101 a delivery is verified by the update object alone
(object 9 INSTALLED and Activation State true; object 5 Update Result 1 and then a Register or
registration Update), and 33101 is not read at all. Which object 9 instance holds what is the
server's own record of what it delivered where, checked against what the device reports
(``slots``); PkgName / PkgVersion are the device's words, shown and kept, never compared with
the manifest.

If the new model is active but does not run (no inference, errors, another sha256), the
previously active object 9 instance is activated again, so a device that had a runnable model
keeps one. ``rollback`` activates the previous model on demand: the installed but inactive
object 9 instance our record says holds it, or (object 5 devices, or nothing left installed)
the previous successful deployment delivered again.

What it does not do: choose which devices (``campaigns``), or talk HTTP (``tinymlaas.api``).
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path as FsPath
from typing import Any

from sqlalchemy import desc, insert, select, update

from tinymlaas.deploy import choice, verdict
from tinymlaas.deploy.cache import Built, CompileCache, CompileFailed
from tinymlaas.deploy import slots, turns
from tinymlaas.deploy.delivery import Delivered, DeliveryFailed, Policy, Session, Shipment, deliver5, deliver9
from tinymlaas.deploy.signing import model_version, package_version
from tinymlaas.deploy.target import DeviceTarget, Figures, NoCapabilities, target_from_snapshot
from lwm2m.errors import LwM2MError, NotFound
from lwm2m.retry import Backoff, retrying
from lwm2m.path import Path
from tinymlaas.registry import ModelEntry, ModelRegistry, RegistryError
from tinymlaas.deploy.package_trust import PackageSequences, SigningKeys
from tinymlaas.store import Store
from tinymlaas.store.tables import DEPLOYMENTS, EVENTS

log = logging.getLogger(__name__)

TERMINAL = turns.TERMINAL
STATES = ("pending", "queued", "deciding", "compiling", "delivering", "installing", "activating", "verifying",
          "succeeded", "failed", "cancelled")
ML_CAPABILITY, ML_INFERENCE = 33100, 33101
KEY = Path(ML_CAPABILITY, 0, 12)
INFERENCE = {name: Path(ML_INFERENCE, 0, rid) for rid, name in enumerate(
    ("name", "version", "sha256", "count", "output", "latency_us", "mean_us", "arena", "errors", "last_error"))}
EXPECTED = (ValueError, LwM2MError)  # NoFit, CompileFailed, DeliveryFailed, NoCapabilities, RegistryError ...


@dataclass(frozen=True)
class DeployOptions:
    backend: str | None = None      # None: chosen from the device's capabilities
    precision: str | None = None    # None: chosen
    method: str = "pull"            # "pull" (Package URI + Block2) | "push" (Package + Block1)
    object_id: int | None = None    # 9 | 5 | None (9 when the device has it, else 5)
    margin: float = 0.10            # safety margin on free SRAM and flash (fraction)
    sram_free: int | None = None    # explicit figures (``target.Figures``), over the device's own
    flash_free: int | None = None
    runtimes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.method not in ("pull", "push"):
            raise ValueError(f"delivery method {self.method!r}: expected pull or push")
        if self.object_id not in (None, 5, 9):
            raise ValueError(f"update object {self.object_id}: expected 9 (Software Management) or 5 (Firmware Update)")
        if not 0 <= self.margin < 1:
            raise ValueError(f"margin {self.margin}: expected a fraction in [0, 1)")
        object.__setattr__(self, "runtimes", tuple(self.runtimes))
        for name in ("sram_free", "flash_free"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise ValueError(f"{name} {value!r}: expected a positive number of bytes")

    @property
    def figures(self) -> Figures:
        return Figures(self.sram_free, self.flash_free, self.runtimes)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "DeployOptions":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def as_dict(row: Any) -> dict[str, Any]:
    """A deployments row as a dict; JSON columns never None."""
    d = dict(row._mapping)
    for k in ("options", "decision", "inference", "previous"):
        d[k] = d[k] or {}
    return d


class Failed(Exception):
    """Internal: end the deployment as failed with this message (and device result code)."""

    def __init__(self, message: str, result: int | None = None, **fields: Any) -> None:
        super().__init__(message)
        self.result, self.fields = result, fields


class Deployer:
    def __init__(self, server: Any, data_dir: FsPath, *, registry: ModelRegistry | None = None,
                 policy: Policy = Policy(), workers: int = 1, key_file: FsPath | None = None) -> None:
        self.server = server
        self.store: Store = server.store
        self.registry = registry or ModelRegistry(data_dir, self.store)
        self.cache = CompileCache(data_dir / "artifacts", self.store, workers)
        self.key = SigningKeys.load_or_create(data_dir, key_file)
        self.sequences = PackageSequences(self.store)
        self.policy = policy
        self.tasks: dict[int, "asyncio.Task[dict[str, Any]]"] = {}
        self._cancelled: set[int] = set()  # cancelled by the operator (a shutdown is not a cancel)

    @property
    def profiles(self) -> Any:
        """The server's device profiles (every source, those added at run time too)."""
        return self.server.profiles.all()

    def close(self) -> None:
        """Stop every deployment in flight without ending it: its row stays as it is, for ``resume``."""
        for task in self.tasks.values():
            task.cancel()
        self.cache.close()

    # -- rows ---------------------------------------------------------------------------------

    async def create(self, endpoint: str, entry: ModelEntry, options: DeployOptions,
                     campaign_id: int | None = None, kind: str = "install", after_current: bool = False) -> int:
        """A ``pending`` row; ``DeploymentConflict`` (4.09) when the device has a deployment in
        progress, unless ``after_current`` (or a campaign's): then ``queued`` behind it."""
        now = time.time()
        row = {"endpoint": endpoint, "campaign_id": campaign_id, "kind": kind, "model": entry.name,
               "version": entry.version, "model_sha256": entry.sha256, "options": options.as_json(),
               "state": "pending", "created_at": now, "updated_at": now}
        queue = after_current or campaign_id is not None
        new_id, running = await self.store.write(lambda c: turns.claim(c, row, queue))
        if not new_id:
            raise turns.conflict(endpoint, running)
        return new_id

    async def get(self, deployment_id: int) -> dict[str, Any]:
        row = await self.store.read(
            lambda c: c.execute(select(DEPLOYMENTS).where(DEPLOYMENTS.c.id == deployment_id)).first())
        if row is None:
            raise NotFound(f"no deployment {deployment_id}")
        return as_dict(row)

    async def list(self, endpoint: str | None = None, campaign_id: int | None = None,
                   limit: int = 100) -> list[dict[str, Any]]:
        q = select(DEPLOYMENTS).order_by(desc(DEPLOYMENTS.c.id)).limit(limit)
        if endpoint is not None:
            q = q.where(DEPLOYMENTS.c.endpoint == endpoint)
        if campaign_id is not None:
            q = q.where(DEPLOYMENTS.c.campaign_id == campaign_id)
        return [as_dict(r) for r in await self.store.read(lambda c: list(c.execute(q)))]

    async def resume(self) -> builtins.list[int]:
        """At start: run again every deployment outside a campaign that a stop left in flight
        (campaigns resume their own); returns their ids."""
        q = select(DEPLOYMENTS.c.id).where(DEPLOYMENTS.c.state.not_in(TERMINAL), DEPLOYMENTS.c.campaign_id.is_(None))
        ids = [r.id for r in await self.store.read(lambda c: list(c.execute(q)))]
        for deployment_id in ids:
            self.server.spawn(self.run(deployment_id), name=f"deployment {deployment_id}")
        return ids

    async def _set(self, deployment_id: int, endpoint: str, **values: Any) -> None:
        now = time.time()
        values["updated_at"] = now
        if values.get("state") in TERMINAL:
            values["finished_at"] = now
        detail = {"id": deployment_id, **{k: v for k, v in values.items()
                                          if k in ("state", "error", "backend", "precision", "object_path")}}

        def save(c: Any) -> None:
            c.execute(update(DEPLOYMENTS).where(DEPLOYMENTS.c.id == deployment_id).values(**values))
            if "state" in values:
                c.execute(insert(EVENTS).values(ts=now, endpoint=endpoint, kind="deployment", detail=detail))
        await self.store.write(save)

    # -- running ------------------------------------------------------------------------------

    async def deploy(self, endpoint: str, entry: ModelEntry,
                     options: DeployOptions = DeployOptions()) -> dict[str, Any]:
        return await self.run(await self.create(endpoint, entry, options))

    async def run(self, deployment_id: int) -> dict[str, Any]:
        """Drive a deployment to a terminal state (joining it if it is running); its final row."""
        task = self.tasks.get(deployment_id)
        if task is None:
            task = asyncio.ensure_future(self._run(deployment_id))
            self.tasks[deployment_id] = task
            task.add_done_callback(lambda _t: self.tasks.pop(deployment_id, None))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if task.cancelled() and not (me is not None and me.cancelling()):
                return await self.get(deployment_id)  # cancelled through ``cancel``: report the row
            raise

    def cancel(self, deployment_id: int) -> None:
        task = self.tasks.get(deployment_id)
        if task is not None:
            self._cancelled.add(deployment_id)
            task.cancel()

    async def cancel_row(self, deployment_id: int) -> None:
        """The operator's cancel: the running task, or a row that nothing runs (left in flight by
        a stop) that would otherwise hold its device's turn."""
        row = await self.get(deployment_id)
        if deployment_id in self.tasks:
            self.cancel(deployment_id)
        elif row["state"] not in TERMINAL:
            await self._set(deployment_id, row["endpoint"], state="cancelled",
                            error="cancelled by the operator (it was not running)")

    async def _run(self, deployment_id: int) -> dict[str, Any]:
        row = await self.get(deployment_id)
        if row["state"] in TERMINAL:
            return row
        ep = row["endpoint"]
        offer: str | None = None
        try:
            await turns.wait_turn(self, deployment_id, ep)
            await self._set(deployment_id, ep, state="deciding", attempts=row["attempts"] + 1, error=None)
            options = DeployOptions.from_json(row["options"])
            entry = await asyncio.to_thread(self.registry.get, row["model"], row["version"])
            if row["kind"] == "rollback" and await self._reactivate(deployment_id, row):
                return await self.get(deployment_id)
            target = await self.target(ep, options.figures)
            await self._set(deployment_id, ep, state="compiling")
            try:
                chosen, candidates, built = await self.decide(target, entry, options)
            except choice.NoFit as exc:  # keep every candidate's numbers with the failure
                await self._set(deployment_id, ep, decision={
                    "chosen": None, "candidates": [c.as_json() for c in exc.candidates],
                    "margin": options.margin, "target": target.as_json()})
                raise
            package = self.key.seal(built, entry, *await self._sequence(row, entry, built))
            await self._set(deployment_id, ep, backend=chosen.backend, precision=chosen.precision,
                            artifact_sha256=built.sha256, package_size=len(package), method=options.method,
                            decision={"chosen": chosen.as_json(), "candidates": [c.as_json() for c in candidates],
                                      "margin": options.margin, "target": target.as_json(),
                                      "macs": built.artifact.macs})
            session = Session(self.server, ep, self.policy)
            obj = self._update_object(ep, options)
            await self._give_key(session, ep)
            previous = await self._running(session)
            uri = None
            if options.method == "pull":
                offer = self.server.packages.publish(package)
                uri = self.server.package_uri(offer, ep)
            shipment = Shipment(ep, entry.name, package_version(entry, built), package, uri)

            async def step(state: str, extra: dict[str, Any]) -> None:
                fields = {"object_path": extra["object_path"]} if "object_path" in extra else {}
                await self._set(deployment_id, ep, state=state, **fields)

            # our own steps before a restart: the package this row delivered is in its slot
            resumed = row["object_path"] if row["state"] in ("installing", "activating", "verifying") \
                and row["artifact_sha256"] == built.sha256 else None
            if obj == 9:
                instance, prev_path, ours = await self._pick_instance(session, row, built.sha256, resumed)
                previous["object_path"] = prev_path
                await self._set(deployment_id, ep, previous=previous, object_path=f"/9/{instance}")
                delivered = await deliver9(session, instance, shipment, step, ours=ours)
            else:
                await self._set(deployment_id, ep, previous=previous, object_path="/5/0")
                delivered = await deliver5(session, shipment, step, ours=resumed == "/5/0")
            await self._set(deployment_id, ep, state="verifying")
            inference = await self._verify(session, built.sha256, delivered)
            if "problem" in inference:
                note = await self._restore(session, previous) if obj == 9 else ""
                raise Failed(f"{entry.name}:{entry.version} is active on {ep} but {inference['problem']}{note}",
                             inference=inference)
            await self._set(deployment_id, ep, state="succeeded", inference=inference,
                            attempts=row["attempts"] + 1 + session.retries)
        except asyncio.CancelledError:
            if deployment_id in self._cancelled:
                self._cancelled.discard(deployment_id)
                await asyncio.shield(self._set(deployment_id, ep, state="cancelled", error="cancelled by the operator"))
            raise
        except Failed as exc:
            await self._set(deployment_id, ep, state="failed", error=str(exc), result_code=exc.result, **exc.fields)
        except EXPECTED as exc:
            result = getattr(exc, "result", None)
            await self._set(deployment_id, ep, state="failed", error=str(exc), result_code=result)
        except Exception as exc:  # a bug must not leave the row in flight forever
            log.exception("deployment %d to %s", deployment_id, ep)
            await self._set(deployment_id, ep, state="failed", error=f"internal error: {type(exc).__name__}: {exc}")
        finally:
            if offer is not None:
                self.server.packages.revoke(offer)
        return await self.get(deployment_id)

    # -- steps ----------------------------------------------------------------------------------

    def figures(self, endpoint: str, given: Figures = Figures()) -> Figures:
        """Explicit figures: those ``given`` (a deployment's), else those stored for the device."""
        s = self.server.device_settings.get(endpoint)
        return given.over(Figures(s.sram_free, s.flash_free, s.runtimes))

    async def target(self, endpoint: str, figures: Figures = Figures()) -> DeviceTarget:
        """The device's capabilities, read now (a stale snapshot would misjudge free flash),
        with explicit figures (``figures``, else the device's stored ones) over its own."""
        async def read() -> dict[str, Any] | None:
            self.server.device_client.registration(endpoint)  # NotFound when it is not registered
            return await self.server.capabilities.refresh(endpoint)  # type: ignore[no-any-return]  # None: failed (an event)

        snap: dict[str, Any] | None = await retrying(Backoff(*self.policy.backoff_s), until=lambda s: s is not None,
                                                     deadline_s=self.policy.deadline_s)(read)
        if snap is None:
            raise NoCapabilities(f"{endpoint}: could not read its capabilities within "
                                 f"{self.policy.deadline_s:g} s (see its events)")
        return target_from_snapshot(endpoint, snap["source"], snap["data"], self.profiles,
                                    self.figures(endpoint, figures))

    async def decide(self, target: DeviceTarget, entry: ModelEntry,
                     options: DeployOptions) -> tuple[choice.Candidate, builtins.list[choice.Candidate], Built]:
        """Build every candidate (cached) and pick; ``NoFit`` lists them all when none fits."""
        pairs = choice.plan(target, options.backend, options.precision)
        candidates, by_key = await verdict.candidates(self.cache, self.key.seal, target, entry, pairs, options.margin)
        chosen = choice.decide(target, candidates, options.margin)
        return chosen, candidates, by_key[chosen.artifact_key]

    def _update_object(self, endpoint: str, options: DeployOptions) -> int:
        reg = self.server.device_client.registration(endpoint)
        objects = reg.objects()
        if options.object_id is not None:
            if options.object_id not in objects:
                raise Failed(f"{endpoint} did not register object {options.object_id}")
            return options.object_id
        for obj in (9, 5):
            if obj in objects:
                return obj
        raise Failed(f"{endpoint} has neither Software Management (9) nor Firmware Update (5): "
                     "it cannot take packages over LwM2M")

    async def _give_key(self, session: Session, endpoint: str) -> None:
        if ML_CAPABILITY not in self.server.device_client.registration(endpoint).objects():
            return  # no ML Capability object: the key must come at bootstrap
        current = (await session.read(KEY)).get(KEY)
        if current != self.key.anchor:
            await session.write(KEY, self.key.anchor)

    async def _sequence(self, row: dict[str, Any], entry: ModelEntry, built: Built) -> tuple[int, int | None]:
        """The package's anti-rollback number, and for a rollback the number it rolls back from
        (the highest this device installed in the slot, when that is newer)."""
        seq = await self.sequences.number(entry.name, entry.version, built.key, built.sha256)
        if row["kind"] != "rollback":
            return seq, None
        top = await self.sequences.installed_on(row["endpoint"], entry.name)
        return seq, top if top is not None and top > seq else None

    async def _inference(self, session: Session) -> dict[str, Any]:
        """The ML Inference object (33101/0) as JSON-friendly values (sha256 and output in hex)."""
        v = await session.read(Path(ML_INFERENCE, 0))
        out = {name: v.get(path) for name, path in INFERENCE.items()}
        for name in ("sha256", "output"):
            value = out[name]
            out[name] = value.hex() if isinstance(value, bytes) and value else None
        out["package_version"], out["version"] = out["version"] or None, model_version(out["version"]) or None
        out["name"] = out["name"] or None
        return out

    def _announced(self, endpoint: str, object_id: int) -> bool:
        """Whether the device announced ``object_id`` in its registration (else it is not read)."""
        return object_id in self.server.device_client.registration(endpoint).objects()

    async def _running(self, session: Session) -> dict[str, Any]:
        """What the device runs now, or {} when it has no ML Inference object."""
        if not self._announced(session.endpoint, ML_INFERENCE):
            return {}
        try:
            inf = await self._inference(session)
        except LwM2MError:
            return {}
        return {k: inf[k] for k in ("name", "version", "package_version", "sha256")}

    async def _slots(self, session: Session) -> dict[int, slots.Slot]:
        return slots.slots_of(await session.read(Path(9)))

    async def _records(self, endpoint: str, skip: int | None = None) -> dict[str, slots.Held | None]:
        return slots.record(await self.list(endpoint=endpoint, limit=10_000), skip=skip)

    async def _pick_instance(self, session: Session, row: dict[str, Any], sha256: str,
                             resumed: str | None) -> tuple[int, str | None, bool]:
        """The object 9 instance to deliver into, the active one's path, and whether the chosen
        one holds this very build already (our record, or this deployment's own steps before a
        restart): that one, else a free one, else one that is not active - never the active one
        unless it runs this build."""
        found = await self._slots(session)
        active = next((i for i, s in found.items() if s.active), None)
        records = await self._records(session.endpoint, skip=row["id"])
        ours = slots.holding(found, records, row["model"], row["version"], sha256)
        if resumed is not None and resumed.startswith("/9/"):
            i = int(resumed.rsplit("/", 1)[1])
            if i in found and found[i].state in slots.HOLDING:
                ours = [i] + [j for j in ours if j != i]
        free = [i for i, s in found.items() if not s.active and s.state == 0]
        idle = [i for i in found if i != active]
        candidates = ours or free or idle
        if not candidates:
            raise Failed(f"{session.endpoint}: no object 9 instance to deliver into without removing the active "
                         f"model (/9/{active}); the device needs a second instance")
        pick = candidates[0]
        return pick, None if active is None else f"/9/{active}", pick in ours

    async def _verify(self, session: Session, sha256: str, delivered: Delivered) -> dict[str, Any]:
        """The update object's report is the verdict; the ML Inference object, where the device
        has it, adds evidence that must agree: the new sha256 runs and produced an inference."""
        slot = {"slot": delivered.as_json()}
        if not self._announced(session.endpoint, ML_INFERENCE):
            return slot  # verified by the update object alone
        out = await self._inference(session) | slot
        count, errors = out["count"], out["errors"]
        if out["sha256"] != sha256:
            out["problem"] = f"reports model sha256 {str(out['sha256'])[:16]}, not the delivered {sha256[:16]}"
        elif not isinstance(count, int) or count < 1 or errors:
            out["problem"] = f"produced no inference ({count} runs, {errors} errors: {out['last_error']})"
        return out

    async def _restore(self, session: Session, previous: dict[str, Any]) -> str:
        path = previous.get("object_path")
        if not path:
            return "; there was no previous model to restore"
        try:
            await session.execute(Path.parse(path).child(10))
        except (LwM2MError, ValueError) as exc:
            return f"; re-activating the previous model at {path} failed: {exc}"
        return f"; the previous model ({previous.get('name')}:{previous.get('version')} at {path}) is active again"

    async def _reactivate(self, deployment_id: int, row: dict[str, Any]) -> bool:
        """Rollback through an installed, inactive object 9 instance that our record says holds
        the model (the device reporting it as it did after that delivery); False if none."""
        ep = row["endpoint"]
        if not self._announced(ep, 9):
            return False
        session = Session(self.server, ep, self.policy)
        found = await self._slots(session)
        match = slots.holding_version(found, await self._records(ep, skip=deployment_id), row["model"], row["version"])
        if match is None:
            return False
        i, held = match
        await self._set(deployment_id, ep, state="activating", object_path=f"/9/{i}", method="activate",
                        previous=await self._running(session))
        if not found[i].active:
            await session.execute(Path(9, i, 10))
        await self._set(deployment_id, ep, state="verifying")
        for _ in range(max(1, math.ceil(self.policy.stale_s / self.policy.poll_s))):  # the device's turn, bounded
            now = (await self._slots(session))[i]
            if now.active:
                break
            await asyncio.sleep(self.policy.poll_s)
        else:
            raise Failed(f"rollback on {ep}: Execute Activate on /9/{i} succeeded but Activation State stayed false "
                         f"for {self.policy.stale_s:g} s (Update State {now.state})")
        evidence: dict[str, Any] = {"slot": {"path": now.path, "state": now.state, "active": now.active,
                                             "pkg_name": now.pkg_name, "pkg_version": now.pkg_version}}
        if self._announced(ep, ML_INFERENCE):
            inf = await self._inference(session)
            if inf["name"] != row["model"] or inf["sha256"] != held.sha256 or not isinstance(inf["count"], int) \
                    or inf["count"] < 1:
                raise Failed(f"rollback on {ep}: /9/{i} activated but the device runs "
                             f"{inf['name']!r} ({str(inf['sha256'])[:16]}) with {inf['count']} inferences")
            evidence = inf | evidence
        await self._set(deployment_id, ep, state="succeeded", artifact_sha256=held.sha256, inference=evidence)
        return True

    async def rollback(self, endpoint: str) -> dict[str, Any]:
        """Activate the model that ran before the current one on ``endpoint``."""
        rows = await self.list(endpoint=endpoint, limit=1000)
        done = [r for r in rows if r["state"] == "succeeded"]
        if not done:
            raise NotFound(f"{endpoint}: no successful deployment to roll back from")
        current = done[0]
        current_release = (current["model"], current["version"])
        before = next((r for r in done[1:] if (r["model"], r["version"]) != current_release), None)
        if before is None:
            raise NotFound(f"{endpoint}: runs {current['model']}:{current['version']}, and no other model was "
                           "deployed successfully before it")
        entry = await asyncio.to_thread(self.registry.get, before["model"], before["version"])
        options = DeployOptions(backend=before["backend"], precision=before["precision"],
                                method=before["method"] or "pull")
        return await self.run(await self.create(endpoint, entry, options, kind="rollback"))


__all__ = ["Deployer", "DeployOptions", "TERMINAL", "STATES", "RegistryError", "CompileFailed", "DeliveryFailed"]
