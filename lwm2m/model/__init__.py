"""The LwM2M object model as data (as Eclipse Leshan's ``ObjectModel``/``ResourceModel``).

Objects and resources are frozen dataclasses; an ``ObjectRegistry`` holds the models the
server or a client knows. The built-in models are loaded from the OMA DDF XML files in
``objects/`` by ``ddf.py``; operators add vendor objects the same way. Value checking
(``ObjectRegistry.check_value``) lives in ``values.py``.

This module does not encode or decode payloads (see ``lwm2m.codecs``).
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Mapping

if TYPE_CHECKING:
    from lwm2m.path import Path, Value


class ResourceType(str, enum.Enum):
    """Resource data types, spelled as in DDF XML ``<Type>``."""

    STRING = "String"
    INTEGER = "Integer"
    UNSIGNED_INTEGER = "Unsigned Integer"
    FLOAT = "Float"
    BOOLEAN = "Boolean"
    OPAQUE = "Opaque"
    TIME = "Time"
    OBJLNK = "Objlnk"
    CORELNK = "Corelnk"
    NONE = "none"  # executable resources carry no value


class Operations(enum.Flag):
    """Operations a resource allows, spelled as in DDF XML ``<Operations>`` (R, W, RW, E)."""

    NONE = 0
    R = enum.auto()
    W = enum.auto()
    E = enum.auto()
    RW = R | W

    @classmethod
    def parse(cls, text: str) -> "Operations":
        ops = cls.NONE
        for ch in text.strip().upper():
            ops |= cls[ch]
        return ops

    @property
    def readable(self) -> bool:
        return bool(self & Operations.R)

    @property
    def writable(self) -> bool:
        return bool(self & Operations.W)

    @property
    def executable(self) -> bool:
        return bool(self & Operations.E)


@dataclass(frozen=True, slots=True)
class ResourceModel:
    id: int
    name: str
    operations: Operations
    multiple: bool
    mandatory: bool
    type: ResourceType
    range: str = ""
    units: str = ""
    description: str = ""


@dataclass(frozen=True, slots=True)
class ObjectModel:
    id: int
    name: str
    multiple: bool
    mandatory: bool
    resources: Mapping[int, ResourceModel]
    version: str = "1.0"
    lwm2m_version: str = "1.0"
    urn: str = ""
    description: str = ""


@dataclass
class ObjectRegistry:
    """The object models one side knows, by object id. Later ``add`` replaces earlier."""

    objects: dict[int, ObjectModel] = field(default_factory=dict)

    def add(self, model: ObjectModel) -> None:
        self.objects[model.id] = model

    def get(self, object_id: int) -> ObjectModel | None:
        return self.objects.get(object_id)

    def resource(self, object_id: int, resource_id: int) -> ResourceModel | None:
        obj = self.objects.get(object_id)
        return obj.resources.get(resource_id) if obj else None

    def __iter__(self) -> Iterator[ObjectModel]:
        return iter(sorted(self.objects.values(), key=lambda o: o.id))

    def __contains__(self, object_id: object) -> bool:
        return object_id in self.objects

    def check_value(self, path: "Path", value: "Value", *, for_write: bool = True) -> "Value":
        """Type-check a value for a Write (or Create) at ``path``; see ``values.check_value``."""
        from lwm2m.model.values import check_value

        return check_value(self, path, value, for_write=for_write)


@functools.cache
def _builtin_models() -> tuple[ObjectModel, ...]:
    """Parse the DDF files shipped in ``objects/`` once per process."""
    from importlib import resources

    from lwm2m.model.ddf import parse_ddf

    models: list[ObjectModel] = []
    folder = resources.files(__name__).joinpath("objects")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".xml"):
            models.extend(parse_ddf(entry.read_bytes(), source=f"objects/{entry.name}"))
    return tuple(models)


def default_registry() -> ObjectRegistry:
    """A new registry holding the built-in models (OMA 0, 1, 3, 4, 5, 9 and TinyML 33100, 33101).

    The parsed models are cached and shared (they are frozen; do not mutate their
    ``resources`` mappings); the registry itself is new on every call, so adding vendor
    models to it does not affect other callers.
    """
    registry = ObjectRegistry()
    for model in _builtin_models():
        registry.add(model)
    return registry
