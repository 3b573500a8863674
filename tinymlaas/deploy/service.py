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

If the new model is active but does not run (no inference, errors, another sha256), the
previously active object 9 instance is activated again, so a device that had a runnable model
keeps one. ``rollback`` activates the previous model on demand: the installed but inactive
object 9 instance, or (object 5 devices, or nothing left installed) the previous successful
deployment delivered again.

What it does not do: choose which devices (``campaigns``), or talk HTTP (``tinymlaas.api``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path as FsPath
from typing import Any

from sqlalchemy import desc, insert, select, update

from tinymlaas.deploy import choice, verdict
from tinymlaas.deploy.cache import Built, CompileCache, CompileFailed
from tinymlaas.deploy.delivery import DeliveryFailed, Policy, Session, Shipment, deliver5, deliver9
from tinymlaas.deploy.signing import ServerKey, model_version, package_version
from tinymlaas.deploy.target import DeviceTarget, Figures, NoCapabilities, target_from_snapshot
from lwm2m.errors import LwM2MError, NotFound
from lwm2m.retry import Backoff, retrying
from lwm2m.path import Path, Value
from tinymlaas.registry import ModelEntry, ModelRegistry, RegistryError
from tinymlaas.store.tables import DEPLOYMENTS, EVENTS

log = logging.getLogger(__name__)

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
STATES = ("pending", "deciding", "compiling", "delivering", "installing", "activating", "verifying",
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
        self.registry = registry or ModelRegistry(data_dir, server.store)
        self.cache = CompileCache(data_dir / "artifacts", server.store, workers)
        self.key = ServerKey.load_or_create(data_dir, key_file)
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
                     campaign_id: int | None = None, kind: str = "install") -> int:
        now = time.time()
        row = {"endpoint": endpoint, "campaign_id": campaign_id, "kind": kind, "model": entry.name,
               "version": entry.version, "model_sha256": entry.sha256, "options": options.as_json(),
               "state": "pending", "created_at": now, "updated_at": now}

        def save(c: Any) -> int:
            new_id = int(c.execute(insert(DEPLOYMENTS).values(**row)).inserted_primary_key[0])
            c.execute(insert(EVENTS).values(ts=now, endpoint=endpoint, kind="deployment",
                                            detail={"id": new_id, "state": "pending", "model": f"{entry.name}:{entry.version}"}))
            return new_id
        return await self.server.store.write(save)

    async def get(self, deployment_id: int) -> dict[str, Any]:
        row = await self.server.store.read(
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
        return [as_dict(r) for r in await self.server.store.read(lambda c: list(c.execute(q)))]

    async def resume(self) -> list[int]:
        """At start: run again every deployment outside a campaign that a stop left in flight
        (campaigns resume their own); returns their ids."""
        q = select(DEPLOYMENTS.c.id).where(DEPLOYMENTS.c.state.not_in(TERMINAL), DEPLOYMENTS.c.campaign_id.is_(None))
        ids = [r.id for r in await self.server.store.read(lambda c: list(c.execute(q)))]
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
        await self.server.store.write(save)

    # -- running ------------------------------------------------------------------------------

    async def deploy(self, endpoint: str, entry: ModelEntry, options: DeployOptions = DeployOptions()) -> dict[str, Any]:
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

    async def _run(self, deployment_id: int) -> dict[str, Any]:
        row = await self.get(deployment_id)
        if row["state"] in TERMINAL:
            return row
        ep = row["endpoint"]
        offer: str | None = None
        try:
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
            package = self.key.seal(built, entry)
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
                uri = self.server.package_uri(offer)
            shipment = Shipment(ep, entry.name, package_version(entry, built), package, uri)

            async def step(state: str, extra: dict[str, Any]) -> None:
                fields = {"object_path": extra["object_path"]} if "object_path" in extra else {}
                await self._set(deployment_id, ep, state=state, **fields)

            if obj == 9:
                instance, prev_path = await self._pick_instance(session, shipment)
                previous["object_path"] = prev_path
                await self._set(deployment_id, ep, previous=previous, object_path=f"/9/{instance}")
                await deliver9(session, instance, shipment, step)
            else:
                await self._set(deployment_id, ep, previous=previous, object_path="/5/0")
                await deliver5(session, shipment, step)
            await self._set(deployment_id, ep, state="verifying")
            inference = await self._verify(session, built.sha256)
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
                     options: DeployOptions) -> tuple[choice.Candidate, list[choice.Candidate], Built]:
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
        if current != self.key.public:
            await session.write(KEY, self.key.public)

    async def _inference(self, session: Session) -> dict[str, Any]:
        """The ML Inference object (33101/0) as JSON-friendly values (sha256 and output in hex)."""
        v = await session.read(Path(ML_INFERENCE, 0))
        out = {name: v.get(path) for name, path in INFERENCE.items()}
        for name in ("sha256", "output"):
            out[name] = out[name].hex() if isinstance(out[name], bytes) and out[name] else None
        out["package_version"], out["version"] = out["version"] or None, model_version(out["version"]) or None
        out["name"] = out["name"] or None
        return out

    async def _running(self, session: Session) -> dict[str, Any]:
        """What the device runs now, or {} when it has no ML Inference object."""
        try:
            inf = await self._inference(session)
        except LwM2MError:
            return {}
        return {k: inf[k] for k in ("name", "version", "package_version", "sha256")}

    async def _instances(self, session: Session) -> dict[int, dict[int, Value]]:
        content = await session.read(Path(9))
        out: dict[int, dict[int, Value]] = {}
        for p, value in content.items():
            if p.depth == 3:
                out.setdefault(p.instance_id, {})[p.resource_id] = value  # type: ignore[arg-type,index]
        return out

    async def _pick_instance(self, session: Session, shipment: Shipment) -> tuple[int, str | None]:
        """The object 9 instance to deliver into: one that holds this very build already (the
        package version names the artifact), else never the active one; and the active one's path."""
        slots = await self._instances(session)
        active = next((i for i, v in slots.items() if v.get(12)), None)
        ours = [i for i, v in slots.items() if v.get(0) == shipment.name and v.get(1) == shipment.version]
        free = [i for i, v in sorted(slots.items()) if not v.get(12) and int(v.get(7, 0)) == 0]  # type: ignore[call-overload]
        idle = [i for i in sorted(slots) if i != active]
        pick = (ours or free or idle or [None])[0]
        if pick is None:
            raise Failed(f"{session.endpoint}: no object 9 instance to deliver into without removing the active "
                         f"model (/9/{active}); the device needs a second instance")
        return pick, None if active is None else f"/9/{active}"

    async def _verify(self, session: Session, sha256: str) -> dict[str, Any]:
        """Read the ML Inference object: the new sha256 must run and have produced an inference."""
        out = await self._inference(session)
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
        """Rollback through an installed, inactive object 9 instance holding the model; False if none."""
        ep = row["endpoint"]
        if 9 not in self.server.device_client.registration(ep).objects():
            return False
        session = Session(self.server, ep, self.policy)
        slots = await self._instances(session)
        match = next((i for i, v in slots.items() if v.get(0) == row["model"] and model_version(v.get(1)) == row["version"]
                      and int(v.get(7, 0)) == 4), None)  # type: ignore[call-overload]
        if match is None:
            return False
        await self._set(deployment_id, ep, state="activating", object_path=f"/9/{match}", method="activate",
                        previous=await self._running(session))
        if not slots[match].get(12):
            await session.execute(Path(9, match, 10))
        await self._set(deployment_id, ep, state="verifying")
        inf = await self._inference(session)
        if inf["name"] != row["model"] or not isinstance(inf["count"], int) or inf["count"] < 1:
            raise Failed(f"rollback on {ep}: /9/{match} activated but the device runs "
                         f"{inf['name']!r} with {inf['count']} inferences")
        await self._set(deployment_id, ep, state="succeeded", artifact_sha256=inf["sha256"], inference=inf)
        return True

    async def rollback(self, endpoint: str) -> dict[str, Any]:
        """Activate the model that ran before the current one on ``endpoint``."""
        rows = await self.list(endpoint=endpoint, limit=1000)
        done = [r for r in rows if r["state"] == "succeeded"]
        if not done:
            raise NotFound(f"{endpoint}: no successful deployment to roll back from")
        current = done[0]
        before = next((r for r in done[1:] if (r["model"], r["version"]) != (current["model"], current["version"])), None)
        if before is None:
            raise NotFound(f"{endpoint}: runs {current['model']}:{current['version']}, and no other model was "
                           "deployed successfully before it")
        entry = await asyncio.to_thread(self.registry.get, before["model"], before["version"])
        options = DeployOptions(backend=before["backend"], precision=before["precision"],
                                method=before["method"] or "pull")
        return await self.run(await self.create(endpoint, entry, options, kind="rollback"))


__all__ = ["Deployer", "DeployOptions", "TERMINAL", "STATES", "RegistryError", "CompileFailed", "DeliveryFailed"]
