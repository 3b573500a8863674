"""A client's object tree: the values of its object instances, and the operations on them.

``ObjectTree`` holds ``Path -> Value`` for every resource (or resource instance) of every
instance the client has, checks operations against the object model (readable, writable,
executable; types) and raises the LwM2M errors that become 4.04 / 4.05 / 4.00 on the wire.
Executable resources call registered Python callbacks. Listeners hear about every change
(the client turns them into Observe notifications).

It does not speak CoAP (see ``client``) and does not know about content formats.
"""

from __future__ import annotations

import inspect
from typing import Awaitable, Callable, Iterable, Mapping

from lwm2m.errors import BadRequest, MethodNotAllowed, NotFound
from lwm2m.model import ObjectRegistry
from lwm2m.path import Path, Value

ExecuteHandler = Callable[[str], "Awaitable[None] | None"]
WriteHandler = Callable[[Value], None]
Listener = Callable[[Path], None]


class ObjectTree:
    def __init__(self, registry: ObjectRegistry) -> None:
        self.registry = registry
        self.values: dict[Path, Value] = {}
        self.instances: set[tuple[int, int]] = set()
        self.executables: dict[Path, ExecuteHandler] = {}
        self.write_handlers: dict[Path, WriteHandler] = {}
        self.listeners: list[Listener] = []

    # -- building ----------------------------------------------------------------------

    def add_instance(self, object_id: int, instance_id: int, values: Mapping[int, Value | list[Value]]) -> None:
        """Add an instance; a list value fills a multiple resource's instances 0..n-1."""
        self.instances.add((object_id, instance_id))
        for rid, value in values.items():
            if isinstance(value, list):
                for i, v in enumerate(value):
                    self.values[Path(object_id, instance_id, rid, i)] = v
            else:
                self.values[Path(object_id, instance_id, rid)] = value

    def on_execute(self, path: Path, handler: ExecuteHandler) -> None:
        self.executables[path] = handler

    def on_write(self, path: Path, handler: WriteHandler) -> None:
        """Writes to ``path`` go to ``handler`` instead of being stored (e.g. a Package)."""
        self.write_handlers[path] = handler

    def set(self, path: Path, value: Value) -> None:
        """Change a value from the device side (sensor reading, state machine)."""
        self.values[path] = value
        self._changed(path)

    def set_multiple(self, path: Path, values: Iterable[Value]) -> None:
        for p in [p for p in self.values if p.parent == path and p.depth == 4]:
            del self.values[p]
        for i, v in enumerate(values):
            self.values[path.child(i)] = v
        self._changed(path)

    def _changed(self, path: Path) -> None:
        for listener in list(self.listeners):
            listener(path)

    # -- operations --------------------------------------------------------------------

    def read(self, path: Path) -> dict[Path, Value]:
        if path.depth >= 2 and path.ids[:2] and (path.object_id, path.instance_id) not in self.instances:
            raise NotFound(f"no object instance {Path.of(*path.ids[:2])}")
        if path.depth >= 3:
            model = self.registry.resource(path.object_id, path.resource_id)  # type: ignore[arg-type]
            if model is not None and not model.operations.readable:
                raise MethodNotAllowed(f"resource {path} ({model.name}) is not readable")
        out = {p: v for p, v in self.values.items() if p.startswith(path) and self._readable(p)}
        if not out and path.depth >= 3:
            raise NotFound(f"no resource {path}")
        if not out and path.depth == 1 and not any(o == path.object_id for o, _ in self.instances):
            raise NotFound(f"no object {path}")
        return out

    def _readable(self, p: Path) -> bool:
        model = self.registry.resource(p.object_id, p.resource_id)  # type: ignore[arg-type]
        return model is None or model.operations.readable

    def write(self, path: Path, content: Mapping[Path, Value], replace: bool) -> None:
        if path.depth < 2 or (path.object_id, path.instance_id) not in self.instances:
            raise NotFound(f"no object instance at {path}")
        for p, v in content.items():
            if not p.startswith(path):
                raise BadRequest(f"value for {p} outside the written path {path}")
            self.registry.check_value(p, v)
        if replace and path.depth == 3:  # replacing a multiple resource drops its old instances
            for p in [p for p in self.values if p.startswith(path) and p.depth == 4]:
                del self.values[p]
        for p, v in content.items():
            handler = self.write_handlers.get(p)
            if handler is not None:
                handler(v)
            else:
                self.values[p] = v
                self._changed(p)

    async def execute(self, path: Path, arguments: str) -> None:
        model = self.registry.resource(path.object_id, path.resource_id)  # type: ignore[arg-type]
        if (path.object_id, path.instance_id) not in self.instances or path not in self.executables:
            if model is not None and not model.operations.executable:
                raise MethodNotAllowed(f"resource {path} ({model.name}) is not executable")
            raise NotFound(f"nothing to execute at {path}")
        result = self.executables[path](arguments)
        if inspect.isawaitable(result):
            await result

    def create(self, path: Path, content: Mapping[Path, Value]) -> Path:
        instance_ids = {p.instance_id for p in content}
        if len(instance_ids) != 1:
            raise BadRequest(f"Create on {path} must carry exactly one instance")
        iid = instance_ids.pop()
        assert iid is not None
        if (path.object_id, iid) in self.instances:
            raise BadRequest(f"instance {path}/{iid} exists already")
        for p, v in content.items():
            self.registry.check_value(p, v, for_write=False)
        self.instances.add((path.object_id, iid))  # type: ignore[arg-type]
        self.values.update(content)
        return path.child(iid)

    def delete(self, path: Path) -> None:
        if (path.object_id, path.instance_id) not in self.instances:
            raise NotFound(f"no object instance {path}")
        self.instances.discard((path.object_id, path.instance_id))
        for p in [p for p in self.values if p.startswith(path)]:
            del self.values[p]

    def links(self) -> list[str]:
        return [f"</{o}/{i}>" for o, i in sorted(self.instances)]
