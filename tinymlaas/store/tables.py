"""The database schema, as sqlmodel tables.

Registrations keep their link payload as the CoRE link-format text the device sent (it is
re-parsed on load); everything else is one row per fact. JSON columns hold values in the
form of ``lwm2m.jsonvalues``. Times are float seconds since the epoch.
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
    """A model in the registry: the file is stored content-addressed under its sha256, its
    external data likewise (``external_files``: location the model names -> sha256); the
    version's import options (``input_shapes``: input name -> shape, ``input_layout``) are used
    by every import of it."""

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
    input_shapes: Optional[dict[str, Any]] = Field(default=None, sa_column=Column(JSON))
    input_layout: str = Field(default="nchw", max_length=8, sa_column_kwargs={"server_default": "nchw"})
    external_files: Optional[dict[str, Any]] = Field(default=None, sa_column=Column(JSON))


MODELS = _table(ModelRecord)


class ArtifactRecord(SQLModel, table=True):
    """A compiled artifact in the compile cache (bytes in ``<data dir>/artifacts/<key>``).

    ``key`` is the sha256 of what determines the bytes: model and calibration sha256, backend,
    precision, target features and the compiler's fingerprint (``compiler``: package version and
    a hash of the backend's and the compiler core's source files; empty for rows written before
    it was recorded); ``sha256`` is of the artifact."""

    __tablename__ = "artifacts"
    key: str = Field(primary_key=True, max_length=64)
    model_sha256: str = Field(max_length=64, index=True)
    backend: str = Field(max_length=16)
    precision: str = Field(max_length=16)
    features: str = Field(default="", max_length=255)
    sha256: str = Field(max_length=64)
    size: int
    figures: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: float
    compiler: str = Field(default="", max_length=64, sa_column_kwargs={"server_default": ""})


class DeploymentRecord(SQLModel, table=True):
    """One model delivery to one device (or a rollback), from decision to verified inference.

    ``state`` walks pending -> deciding -> compiling -> delivering -> installing -> activating ->
    verifying -> succeeded, or ends in failed / cancelled; ``decision`` holds the chosen
    candidate and every candidate's numbers; ``inference`` what the device reported after
    activation. ``previous`` is what ran before (name, version, sha256, slot), for rollback."""

    __tablename__ = "deployments"
    __table_args__ = (Index("ix_deployments_campaign_state", "campaign_id", "state"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    endpoint: str = Field(max_length=255, index=True)
    campaign_id: Optional[int] = Field(default=None)
    kind: str = Field(default="install", max_length=16)  # "install" | "rollback"
    model: str = Field(max_length=128)
    version: str = Field(max_length=64)
    model_sha256: str = Field(max_length=64)
    options: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    state: str = Field(default="pending", max_length=16)
    backend: Optional[str] = Field(default=None, max_length=16)
    precision: Optional[str] = Field(default=None, max_length=16)
    method: Optional[str] = Field(default=None, max_length=8)
    object_path: Optional[str] = Field(default=None, max_length=16)  # "/9/1" | "/5/0"
    artifact_sha256: Optional[str] = Field(default=None, max_length=64)
    package_size: Optional[int] = None
    decision: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    inference: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    previous: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    error: Optional[str] = Field(default=None, sa_column=Column(Text))
    result_code: Optional[int] = None
    attempts: int = 0
    created_at: float
    updated_at: float
    finished_at: Optional[float] = None


class GroupRecord(SQLModel, table=True):
    """A named set of devices: ``selector`` is {"tag": ..., "profile": ..., "query": ...}."""

    __tablename__ = "groups"
    name: str = Field(primary_key=True, max_length=64)
    selector: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: float


class CampaignRecord(SQLModel, table=True):
    """A staged roll-out of one model version to a group (per-device rows are deployments)."""

    __tablename__ = "campaigns"
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(max_length=128)
    model: str = Field(max_length=128)
    version: str = Field(max_length=64)
    group_name: str = Field(max_length=64)
    endpoints: list[str] = Field(default_factory=list, sa_column=Column(JSON))  # frozen at creation, in roll-out order
    stages: list[float] = Field(default_factory=list, sa_column=Column(JSON))  # cumulative fractions, e.g. [0.01, 0.1, 1.0]
    success_threshold: float = 0.95
    error_threshold: float = 0.05
    concurrency: int = 50
    options: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    state: str = Field(default="running", max_length=16)  # running | paused | cancelled | halted | completed
    stage: int = 0
    note: Optional[str] = Field(default=None, sa_column=Column(Text))
    created_at: float
    updated_at: float
    finished_at: Optional[float] = None


ARTIFACTS = _table(ArtifactRecord)
DEPLOYMENTS = _table(DeploymentRecord)
GROUPS = _table(GroupRecord)
CAMPAIGNS = _table(CampaignRecord)


class DeviceSetting(SQLModel, table=True):
    """What an operator set for one device: the board profile it is (when neither the ML
    Capability object nor the Device object tells), explicit ML figures, and queue mode (the
    awake window, and whether to treat it as queue mode whatever its registration said).
    None: not set (the registration, the capability reading or the server default decides)."""

    __tablename__ = "device_settings"
    endpoint: str = Field(primary_key=True, max_length=255)
    profile: Optional[str] = Field(default=None, max_length=64)
    sram_free: Optional[int] = None  # bytes free for ML (runtime RAM plus the model's arena)
    flash_free: Optional[int] = None  # bytes free for model packages
    runtimes: list[str] = Field(default_factory=list, sa_column=Column(JSON))  # "tflm", "wasm3 0.5"
    awake_s: Optional[float] = None
    queue_mode: Optional[bool] = None
    updated_at: float


class StoredProfile(SQLModel, table=True):
    """A device profile (the TOML text of a ``device_profiles`` file) added at run time through
    the admin API or the CLI; validated before it is stored, loaded with the shipped ones."""

    __tablename__ = "stored_profiles"
    name: str = Field(primary_key=True, max_length=64)
    toml: str = Field(sa_column=Column(Text))
    updated_at: float


class HeldRequest(SQLModel, table=True):
    """A request for a queue-mode device, held until it is awake (TS Core 1.1 6.5), so a server
    restart does not lose it: ``operation`` is the operation as JSON (``operations.to_json``).
    ``state`` held -> sent -> done | failed | expired; ``result`` what the device answered."""

    __tablename__ = "held_requests"
    __table_args__ = (Index("ix_held_requests_endpoint_state", "endpoint", "state"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    endpoint: str = Field(max_length=255)
    operation: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    content_format: Optional[int] = None
    state: str = Field(default="held", max_length=16)
    created_at: float
    deadline: float
    finished_at: Optional[float] = None
    result: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    error: Optional[str] = Field(default=None, sa_column=Column(Text))


DEVICE_SETTINGS = _table(DeviceSetting)
STORED_PROFILES = _table(StoredProfile)
HELD_REQUESTS = _table(HeldRequest)
