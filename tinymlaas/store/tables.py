"""The database schema, as sqlmodel tables.

Registrations keep their link payload as the CoRE link-format text the device sent (it is
re-parsed on load); everything else is one row per fact. JSON columns hold values in the
form of ``tinymlaas.lwm2m.jsonvalues``. Times are float seconds since the epoch.
"""

from __future__ import annotations

from typing import Any, Optional

from sqlalchemy import JSON, Column, Index, Table, Text
from sqlmodel import Field, SQLModel


class Device(SQLModel, table=True):
    """A device ever seen, by endpoint name; survives de-registration."""

    __tablename__ = "devices"
    endpoint: str = Field(primary_key=True, max_length=255)
    first_seen: float
    last_seen: float
    lwm2m_version: str = "1.0"
    profile: Optional[str] = None
    capability_source: Optional[str] = None
    tags: str = ""


class Registration(SQLModel, table=True):
    """The live registration of a device (at most one per endpoint)."""

    __tablename__ = "registrations"
    id: str = Field(primary_key=True, max_length=32)
    endpoint: str = Field(index=True, unique=True, max_length=255)
    address: str  # host:port as CoAP hostinfo, e.g. "127.0.0.1:5684" or "[::1]:5684"
    lifetime: int
    binding: str
    lwm2m_version: str
    queue_mode: bool = False
    sms: Optional[str] = None
    links: str = Field(default="", sa_column=Column(Text))
    registered_at: float
    updated_at: float


class CapabilitySnapshot(SQLModel, table=True):
    """What the server learned of a device's ML capabilities, and from where."""

    __tablename__ = "capability_snapshots"
    id: Optional[int] = Field(default=None, primary_key=True)
    endpoint: str = Field(index=True, max_length=255)
    taken_at: float
    source: str  # "ml-capability-object" | "device-object+profile" | "device-object"
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))


class ObservedValue(SQLModel, table=True):
    """The latest value of an observed path, per device."""

    __tablename__ = "observed_values"
    endpoint: str = Field(primary_key=True, max_length=255)
    path: str = Field(primary_key=True, max_length=64)
    updated_at: float
    content_format: Optional[int] = None
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))


class Event(SQLModel, table=True):
    """Append-only log: registered, updated, deregistered, expired, replaced, ..."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_endpoint_ts", "endpoint", "ts"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    ts: float
    endpoint: str = Field(max_length=255)
    kind: str = Field(max_length=32)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))


class ObjectDefinition(SQLModel, table=True):
    """A DDF XML file an operator imported; loaded into the object registry at start."""

    __tablename__ = "object_definitions"
    object_id: int = Field(primary_key=True)
    name: str
    xml: str = Field(sa_column=Column(Text))
    imported_at: float


def _table(model: type[SQLModel]) -> Table:
    return model.__table__  # type: ignore[attr-defined,no-any-return]


# The Core tables, for queries and bulk statements.
DEVICES = _table(Device)
REGISTRATIONS = _table(Registration)
CAPABILITY_SNAPSHOTS = _table(CapabilitySnapshot)
OBSERVED_VALUES = _table(ObservedValue)
EVENTS = _table(Event)
OBJECT_DEFINITIONS = _table(ObjectDefinition)


class ModelRecord(SQLModel, table=True):
    """A model in the registry: the file is stored content-addressed under its sha256."""

    __tablename__ = "models"
    __table_args__ = (Index("ix_models_name_version", "name", "version", unique=True),)
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(max_length=128)
    version: str = Field(max_length=64)
    sha256: str = Field(max_length=64, index=True)
    format: str = Field(max_length=16)  # "onnx" | "tflite"
    size: int
    calibration_sha256: Optional[str] = Field(default=None, max_length=64)
    added_at: float


MODELS = _table(ModelRecord)
