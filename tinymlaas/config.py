"""One typed configuration for a tinymlaas server: every setting, where it came from, checked.

A value comes from the first of these that sets it:

1. CLI flags: ``tinymlaas serve --coap HOST:PORT --api HOST:PORT --db URL --data-dir DIR ...``
   and, for any setting, ``--set section.key=value`` (repeatable);
2. environment variables, one prefix: ``TINYMLAAS_<SECTION>__<KEY>`` (``TINYMLAAS_COAP__PORT=5684``,
   lists as JSON), plus the three short names kept from before: ``TINYMLAAS_HOME`` (data.home),
   ``TINYMLAAS_DB`` (database.url) and ``TINYMLAAS_PROFILES`` (profiles.dirs, ``os.pathsep``-separated;
   the long form wins when both are set);
3. the TOML file ``tinymlaas.toml`` whose path is ``--config FILE`` or ``$TINYMLAAS_CONFIG``
   (no file is read unless one is named; a named file that is missing is an error);
4. the defaults below.

An unknown key (in the file, as ``TINYMLAAS_SECTION__KEY`` or through ``--set``) and a value of
the wrong type are a ``ConfigError`` naming the key and where it came from; ``load`` returns a
``Loaded``: the ``Settings`` and, per dotted key, its source (what ``tinymlaas config show``
prints, with secrets masked by ``masked``). Reading is done by pydantic-settings (its
environment and TOML sources, deep-merged in the order above); this module adds the short
names, the per-key sources and the one-line errors.

Adding a setting: add a typed field, with its unit in the name (``_s``, ``_bytes``), a default
and a ``description``, to the section model it belongs to (or add a section: a ``Section``
subclass and a field of ``Settings``), then read it from the ``Settings`` the component is given
(``tinymlaas.runtime`` builds the server from it) - never from ``os.environ``. It is then
accepted in the file, from the environment and by ``--set``, listed by ``config show`` and
validated by ``config check`` with no other change. A secret is typed ``SecretStr`` (or listed
in ``URL_KEYS`` when it is a URL with a password) so that it is masked.

What it does not do: watch the file (a change takes effect at the next start) or write it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from tinymlaas.security.settings import SecuritySettings
from tinymlaas.server.limits import Limits

PREFIX = "TINYMLAAS_"
CONFIG_ENV = "TINYMLAAS_CONFIG"
SHORT_ENV: dict[str, tuple[str, str]] = {  # the short names kept from before -> (section, key)
    "TINYMLAAS_HOME": ("data", "home"),
    "TINYMLAAS_DB": ("database", "url"),
    "TINYMLAAS_PROFILES": ("profiles", "dirs"),
}
URL_KEYS = frozenset({"database.url"})  # URLs whose password is masked


class ConfigError(ValueError):
    """A setting that cannot be used: the message names the key, its source and the problem."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CoapSettings(Section):
    host: str = Field(default="127.0.0.1", description="address the LwM2M (CoAP over UDP) server binds")
    port: int = Field(default=5683, ge=0, le=65535, description="its UDP port (0: any free port)")
    expiry_interval_s: float = Field(default=1.0, gt=0, description="how often expired registrations are removed")
    read_capabilities: bool = Field(default=True, description="read 33100 or object 3 after each new registration")
    lifetime_min_s: int = Field(default=1, ge=1, description="shortest registration lifetime accepted (else 4.00)")
    lifetime_max_s: int = Field(default=10 * 365 * 86400, ge=1, description="longest registration lifetime accepted")


class AdminSettings(Section):
    host: str = Field(default="127.0.0.1", description="address of the admin HTTP API (keep it on loopback)")
    port: int = Field(default=8683, ge=0, le=65535, description="its TCP port (0: any free port)")
    token: SecretStr | None = Field(default=None, description="bearer token; default: created in the data dir")
    cert_file: Path | None = Field(default=None, description="PEM certificate: serve the admin API over HTTPS")
    key_file: Path | None = Field(default=None, description="PEM private key of cert_file")


class DatabaseSettings(Section):
    url: str | None = Field(default=None, description="SQLAlchemy URL; default: SQLite in the data dir")
    pool_size: int = Field(default=5, ge=1, description="connections kept open (not SQLite)")
    max_overflow: int = Field(default=10, ge=0, description="extra connections under load (not SQLite)")


class DataSettings(Section):
    home: Path = Field(default_factory=lambda: Path.home() / ".tinymlaas",
                       description="data directory: SQLite database, models, compile cache, api.json")
    signing_key_file: Path | None = Field(default=None, description="Ed25519 package-signing key (PEM); "
                                                             "default: signing-key.pem in the data dir")


class ProfilesSettings(Section):
    dirs: list[Path] = Field(default_factory=list, description="folders of extra device profiles (*.toml)")


class QueueSettings(Section):
    awake_s: float = Field(default=93.0, gt=0, description="how long a queue-mode device listens after it spoke "
                                                    "(CoAP MAX_TRANSMIT_WAIT)")


class DeliverySettings(Section):
    op_timeout_s: float = Field(default=10.0, gt=0, description="one LwM2M operation of a delivery")
    push_timeout_s: float = Field(default=120.0, gt=0, description="a Block1 write of a whole package")
    deadline_s: float = Field(default=300.0, gt=0, description="a whole delivery")
    download_attempts: int = Field(default=3, ge=1, description="deliveries of one package (connection lost, "
                                   "stale-state retries): bytes sent <= this x the package size")
    install_attempts: int = Field(default=2, ge=1, description="Install/Update executions after a retryable "
                                  "install failure")
    op_attempts: int = Field(default=12, ge=1, description="tries of one operation (timeouts, not registered, asleep)")
    poll_s: float = Field(default=1.0, gt=0, description="re-read interval when the device cannot be observed")
    observed_poll_s: float = Field(default=5.0, gt=0, description="re-read interval while observing")
    stale_s: float = Field(default=60.0, gt=0, description="no change in what the device reports this long, while "
                           "it answers: the state machine's stale rule (reset, retry or fail naming the state)")
    download_min_Bps: float = Field(default=256.0, gt=0, description="a pull being fetched may take "
                                    "package size / this longer before it is stale")
    reregister_s: float = Field(default=60.0, gt=0, description="object 5: wait for the device's Register/Update "
                                "after Update Result 1")
    max_reports: int = Field(default=5000, ge=1, description="device reports handled per delivery")
    queue_wait_s: float = Field(default=1800.0, gt=0, description="a deployment queued behind the device's "
                                "running one waits at most this long")


class RetrySettings(Section):
    first_s: float = Field(default=0.5, gt=0, description="bound of the first retry delay; it doubles per retry "
                                                   "(full jitter: each delay uniform from 0 to its bound)")
    longest_s: float = Field(default=8.0, gt=0, description="bound of any retry delay")

    @model_validator(mode="after")
    def _ordered(self) -> RetrySettings:
        if self.longest_s < self.first_s:
            raise ValueError(f"retry.longest_s ({self.longest_s:g}) is below retry.first_s ({self.first_s:g})")
        return self


class CompileSettings(Section):
    workers: int = Field(default=1, ge=1, description="compiler worker processes")


class LoggingSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = Field(default="warning", description="log level")
    format: Literal["text", "json"] = Field(default="text", description="text lines, or one JSON object per line")


class MetricsSettings(Section):
    enabled: bool = Field(default=True, description="serve Prometheus metrics at GET /metrics on the admin API")


class Settings(BaseSettings):
    """Everything a server reads at start; the sections are the TOML tables."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, env_nested_delimiter="__", extra="forbid",
                                      frozen=True, nested_model_default_partial_update=True)

    coap: CoapSettings = CoapSettings()
    admin: AdminSettings = AdminSettings()
    database: DatabaseSettings = DatabaseSettings()
    data: DataSettings = DataSettings()
    profiles: ProfilesSettings = ProfilesSettings()
    queue: QueueSettings = QueueSettings()
    delivery: DeliverySettings = DeliverySettings()
    retry: RetrySettings = RetrySettings()
    compile: CompileSettings = CompileSettings()
    logging: LoggingSettings = LoggingSettings()
    metrics: MetricsSettings = MetricsSettings()
    limits: Limits = Field(default_factory=Limits)  # every protocol bound (tinymlaas.server.limits)
    security: SecuritySettings = Field(default_factory=SecuritySettings)  # DTLS, NoSec, bootstrap (tinymlaas.security)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return tuple(source for _, source in _layers(settings_cls, init_settings))


# -- sources ----------------------------------------------------------------------------------

_FILE: ContextVar[Path | None] = ContextVar("tinymlaas_config_file", default=None)
_USE_ENV: ContextVar[bool] = ContextVar("tinymlaas_config_env", default=True)


class LongEnvSource(EnvSettingsSource):
    """``TINYMLAAS_<SECTION>__<KEY>``; the short names are ``ShortEnvSource``'s (``TINYMLAAS_PROFILES``
    would otherwise be read as the whole ``profiles`` section)."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        short = {n.lower() for n in SHORT_ENV}
        return {k: v for k, v in super()._load_env_vars().items() if k.lower() not in short}


class ShortEnvSource(PydanticBaseSettingsSource):
    """``TINYMLAAS_HOME``, ``TINYMLAAS_DB``, ``TINYMLAAS_PROFILES``: the names used before sections."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, (section, key) in SHORT_ENV.items():
            value = os.environ.get(name)
            if value:
                parsed: Any = [p for p in value.split(os.pathsep) if p.strip()] if key == "dirs" else value
                out.setdefault(section, {})[key] = parsed
        return out


def _layers(settings_cls: type[BaseSettings],
            init: PydanticBaseSettingsSource) -> list[tuple[str, PydanticBaseSettingsSource]]:
    """(label, source), highest precedence first."""
    layers: list[tuple[str, PydanticBaseSettingsSource]] = [("cli", init)]
    if _USE_ENV.get():
        layers += [("env", LongEnvSource(settings_cls)), ("env-short", ShortEnvSource(settings_cls))]
    path = _FILE.get()
    if path is not None:
        layers.append(("file", TomlConfigSettingsSource(settings_cls, toml_file=path)))
    return layers


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _label(layer: str, key: str, path: Path | None) -> str:
    if layer == "env":
        return "env " + PREFIX + key.upper().replace(".", "__")
    if layer == "env-short":
        return "env " + next(n for n, sk in SHORT_ENV.items() if ".".join(sk) == key)
    if layer == "file":
        return f"file {path}"
    return "cli"


# -- loading ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Loaded:
    settings: Settings
    sources: dict[str, str]  # dotted key -> "cli" | "env NAME" | "file PATH" | "default"
    file: Path | None


def config_file(explicit: Path | None = None) -> Path | None:
    """``--config`` if given, else ``$TINYMLAAS_CONFIG``, else none."""
    if explicit is not None:
        return explicit
    named = os.environ.get(CONFIG_ENV)
    return Path(named) if named else None


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``--set section.key=value`` items as a nested dict (JSON values are parsed: lists, numbers)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 2 or not all(parts):
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. coap.port=5684")
        parsed: Any = value
        if value[:1] in "[{":
            try:
                parsed = json.loads(value)
            except ValueError:
                raise ConfigError(f"--set {key}: {value!r} is not valid JSON") from None
        out.setdefault(parts[0], {})[parts[1]] = parsed
    return out


def _known(section: str) -> str:
    field = Settings.model_fields.get(section)
    if field is None:
        return "sections: " + ", ".join(Settings.model_fields)
    return f"[{section}] has: " + ", ".join(_keys(field.annotation))


def _keys(model: Any) -> list[str]:
    """The keys of a section: a pydantic model's fields, or a frozen dataclass's (``Limits``)."""
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return [f.name for f in dataclasses.fields(model)] if dataclasses.is_dataclass(model) else []


def load(file: Path | None = None, cli: Mapping[str, Any] | None = None, *, use_env: bool = True) -> Loaded:
    """The effective settings: ``cli`` (a nested dict) > environment > ``file`` > defaults."""
    path = config_file(file) if use_env else file
    if path is not None and not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path is not None:
        try:
            tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path}: invalid TOML: {exc}") from None
    if use_env:
        _check_sections_in_env()
    tokens = (_FILE.set(path), _USE_ENV.set(use_env))
    try:
        layered = [(label, _flatten(src())) for label, src in _layers(Settings, _Init(Settings, dict(cli or {})))]
        sources: dict[str, str] = {}
        for label, values in reversed(layered):
            for key in values:
                sources[key] = _label(label, key, path)
        try:
            settings = Settings(**dict(cli or {}))
        except ValidationError as exc:
            raise ConfigError(_describe(exc, sources)) from None
        except SettingsError as exc:
            raise ConfigError(f"{exc}: a section is set by TINYMLAAS_<SECTION>__<KEY> variables") from None
    finally:
        _FILE.reset(tokens[0])
        _USE_ENV.reset(tokens[1])
    return Loaded(settings, sources, path)


def _check_sections_in_env() -> None:
    """``TINYMLAAS_<SECTION>__<KEY>`` with a section that does not exist (pydantic-settings would
    ignore it: only names with ``__`` are settings, so ``TINYMLAAS_API`` and the like stay free)."""
    for name in os.environ:
        if name.upper().startswith(PREFIX) and "__" in name:
            section = name[len(PREFIX):].split("__", 1)[0].lower()
            if section not in Settings.model_fields:
                raise ConfigError(f"unknown key {name[len(PREFIX):].lower().replace('__', '.')} (env {name}); "
                                  + _known(""))


class _Init(PydanticBaseSettingsSource):
    """The CLI layer as a source (only used to attribute keys; ``Settings(**cli)`` validates it)."""

    def __init__(self, settings_cls: type[BaseSettings], values: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self.values = values

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return self.values


def _describe(exc: ValidationError, sources: dict[str, str]) -> str:
    """The first problem as one line: key, where it came from, what is wrong."""
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        key = ".".join(loc[:2])
        where = sources.get(key) or next((s for k, s in sources.items() if k.startswith(key + ".")), "default")
        if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            problems.append(f"unknown key {key} ({where}); {_known(loc[0]) if len(loc) > 1 else _known('')}")
        else:
            problems.append(f"{key} ({where}): {err['msg']}, got {err.get('input')!r}")
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return problems[0] + more


# -- showing ----------------------------------------------------------------------------------

def masked(key: str, value: Any) -> str:
    """A value as ``config show`` prints it: secrets as ``********``, URL passwords as ``***``."""
    if value is None:
        return "-"
    if isinstance(value, SecretStr):
        return "********"
    if key in URL_KEYS:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            return make_url(str(value)).render_as_string(hide_password=True)
        except (ArgumentError, ValueError):  # not a URL SQLAlchemy reads: show nothing of it
            return "********"
    if isinstance(value, list):
        return json.dumps([str(v) for v in value])
    return str(value)


def rows(loaded: Loaded) -> list[tuple[str, str, str]]:
    """(key, masked value, source) for every setting, in section order."""
    out = []
    for section in Settings.model_fields:
        model = getattr(loaded.settings, section)
        for name in _keys(type(model)):
            key = f"{section}.{name}"
            out.append((key, masked(key, getattr(model, name)), loaded.sources.get(key, "default")))
    return out
