"""The database schema, as sqlmodel tables.

Registrations keep their link payload as the CoRE link-format text the device sent (it is
re-parsed on load); everything else is one row per fact. JSON columns hold values in the
form of ``lwm2m.jsonvalues``. Times are float seconds since the epoch.
"""

from __future__ import annotations

from typing import Any, Optional

from sqlalchemy import JSON, Column, Index, LargeBinary, Table, Text
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
    """An object definition an operator imported: that object's own ``<Object>`` element (in an
    ``<LWM2M>`` root), once per object id whatever file it came in; loaded into the object
    registry at start."""

    __tablename__ = "object_definitions"
    object_id: int = Field(primary_key=True)
    name: str
    xml: str = Field(sa_column=Column(Text))
    imported_at: float


class ApiToken(SQLModel, table=True):
    """An admin-API bearer token: only its sha256 is stored; ``scopes`` is comma-separated
    (read, operate, deploy, admin); a revoked token keeps its row (the audit refers to it)."""

    __tablename__ = "api_tokens"
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(max_length=64)
    scopes: str = Field(max_length=64)
    sha256: str = Field(max_length=64, unique=True)
    created_at: float
    revoked_at: Optional[float] = None


class AuditRecord(SQLModel, table=True):
    """One state-changing admin-API call (or a refused attempt at one): who, what, when, result."""

    __tablename__ = "audit"
    __table_args__ = (Index("ix_audit_token_ts", "token_id", "ts"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    ts: float = Field(index=True)
    token_id: Optional[int] = None
    token_name: Optional[str] = Field(default=None, max_length=64)
    method: str = Field(max_length=8)
    route: str = Field(max_length=255)  # the route's template, e.g. /devices/{endpoint}/write
    path: str = Field(sa_column=Column(Text))  # the path called, percent-encoded as sent
    status: int
    result: str = Field(sa_column=Column(Text))  # "ok" or the error message


def _table(model: type[SQLModel]) -> Table:
    return model.__table__  # type: ignore[attr-defined,no-any-return]


# The Core tables, for queries and bulk statements.
DEVICES = _table(Device)
REGISTRATIONS = _table(Registration)
CAPABILITY_SNAPSHOTS = _table(CapabilitySnapshot)
OBSERVED_VALUES = _table(ObservedValue)
EVENTS = _table(Event)
OBJECT_DEFINITIONS = _table(ObjectDefinition)
API_TOKENS = _table(ApiToken)
AUDIT = _table(AuditRecord)


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
    # cumulative fractions, e.g. [0.01, 0.1, 1.0]
    stages: list[float] = Field(default_factory=list, sa_column=Column(JSON))
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


class DeviceCredential(SQLModel, table=True):
    """A device's DTLS-PSK credential, per endpoint and purpose ("dm": the LwM2M server,
    "bootstrap": the bootstrap server). Keys are AES-GCM encrypted with the server's credentials
    key (``key_id`` names it); ``pending_key`` is a rotated key the device gets at its next
    bootstrap, which replaces ``key`` at Bootstrap-Finish. A revoked row keeps no key."""

    __tablename__ = "device_credentials"
    __table_args__ = (Index("ix_device_credentials_purpose_identity", "purpose", "identity", unique=True),)
    endpoint: str = Field(primary_key=True, max_length=255)
    purpose: str = Field(primary_key=True, max_length=16)  # "dm" | "bootstrap"
    identity: str = Field(max_length=128)  # the PSK identity (UTF-8 text, RFC 4279 5.1)
    key: Optional[bytes] = Field(default=None, sa_column=Column(LargeBinary))  # nonce + AES-GCM ciphertext
    pending_key: Optional[bytes] = Field(default=None, sa_column=Column(LargeBinary))
    key_id: str = Field(max_length=16)
    created_at: float
    rotated_at: Optional[float] = None
    revoked_at: Optional[float] = None


class BootstrapConfigRecord(SQLModel, table=True):
    """What the bootstrap server writes to a device: for one endpoint, a group, or every device
    (``scope`` "endpoint" | "group" | "default"; ``target`` the endpoint or group name)."""

    __tablename__ = "bootstrap_configs"
    scope: str = Field(primary_key=True, max_length=16)
    target: str = Field(primary_key=True, max_length=255)
    server_uri: str = Field(max_length=255)  # coaps://host:5684 (PSK) or coap://host:5683 (NoSec)
    security_mode: str = Field(default="psk", max_length=8)  # "psk" | "nosec"
    short_server_id: int = 1
    lifetime: int = 86400
    binding: str = Field(default="U", max_length=8)
    trust_anchor: bool = True  # write the package-signing key(s) to /33100/0/12
    created_at: float
    updated_at: float


class PackageSequence(SQLModel, table=True):
    """The anti-rollback sequence number of each sealed package: per model slot (name), in
    signing order; the same build always gets the same number."""

    __tablename__ = "package_sequences"
    __table_args__ = (Index("ix_package_sequences_build", "name", "version", "artifact_key", unique=True),)
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(max_length=128)
    version: str = Field(max_length=64)
    artifact_key: str = Field(max_length=64)
    artifact_sha256: str = Field(max_length=64)
    seq: int
    sealed_at: float


DEVICE_CREDENTIALS = _table(DeviceCredential)
BOOTSTRAP_CONFIGS = _table(BootstrapConfigRecord)
PACKAGE_SEQUENCES = _table(PackageSequence)
