"""The operator files in ``deploy/`` agree with the configuration this release reads.

What can be checked without a container engine: the compose file's structure, every
``TINYMLAAS_*`` variable the Containerfile, compose file and systemd unit set is a setting
(``tinymlaas.config`` loads them with no unknown key), the example ``tinymlaas.toml``
validates, the ports they publish are the ones the configuration uses, the files the
Containerfile copies exist. ``.ci/wheel`` installs the wheel the way the Containerfile does and
runs ``systemd-analyze verify`` on the unit; building the image and running compose are not
checked here (no container engine in CI).
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest
import yaml

from tinymlaas import config

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, file: Path | None = None) -> config.Settings:
    for name in ("TINYMLAAS_CONFIG", "TINYMLAAS_HOME", "TINYMLAAS_DB", "TINYMLAAS_PROFILES"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        assert name.startswith("TINYMLAAS_"), name
        if name != "TINYMLAAS_CONFIG":
            monkeypatch.setenv(name, value)
    return config.load(file).settings


def test_the_example_config_file_validates() -> None:
    loaded = config.load(DEPLOY / "tinymlaas.toml", use_env=False)
    assert loaded.settings.data.home == Path("/var/lib/tinymlaas") and loaded.settings.metrics.enabled


def test_compose_runs_the_server_on_postgresql_with_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"db", "migrate", "server"}
    assert services["db"]["image"].startswith("docker.io/library/postgres:")
    assert services["migrate"]["command"] == ["db", "upgrade"] and services["server"]["command"] == ["serve"]
    assert services["server"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    build = services["migrate"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Containerfile"
    for name in ("migrate", "server"):
        env = {k: re.sub(r"\$\{[^}]+\}", "secret", v) for k, v in services[name]["environment"].items()}
        s = settings_from(env, monkeypatch)
        assert s.database.url == "postgresql+psycopg://tinymlaas:secret@db:5432/tinymlaas"
    published = {p.rsplit(":", 1)[-1] for p in services["server"]["ports"]}
    assert published == {f"{s.coap.port}/udp", f"{s.admin.port}/tcp"}
    assert set(compose["volumes"]) == {"db-data", "tinymlaas-data"}


def test_the_containerfile_sets_valid_settings_and_copies_what_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    text = (DEPLOY / "Containerfile").read_text()
    env_block = re.search(r"^ENV (.*?)(?=^\S)", text, re.S | re.M)
    assert env_block is not None
    env = dict(re.findall(r"(TINYMLAAS_\w+)=(\S+)", env_block.group(1)))
    assert env["TINYMLAAS_CONFIG"] == "/etc/tinymlaas/tinymlaas.toml"
    s = settings_from(env, monkeypatch, DEPLOY / "tinymlaas.toml")
    assert s.admin.host == "0.0.0.0"  # reachable through the container's port mapping
    assert sorted(re.findall(r"^EXPOSE (.*)$", text, re.M)[0].split()) == sorted(
        [f"{s.coap.port}/udp", f"{s.admin.port}/tcp"])
    copied = re.findall(r"^COPY (\S+) ", text, re.M)
    assert "deploy/tinymlaas.toml" in copied and (DEPLOY.parent / "deploy/tinymlaas.toml").is_file()
    assert re.search(r'^ENTRYPOINT \["tinymlaas"\]$', text, re.M) and re.search(r'^CMD \["serve"\]$', text, re.M)


def test_the_systemd_unit_starts_serve_with_the_config_file(monkeypatch: pytest.MonkeyPatch) -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "tinymlaas.service")
    service = unit["Service"]
    assert service["ExecStart"] == "/opt/tinymlaas/bin/tinymlaas serve"
    name, _, value = service["Environment"].partition("=")
    settings_from({name: value}, monkeypatch)  # a known variable
    assert (name, value) == ("TINYMLAAS_CONFIG", "/etc/tinymlaas/tinymlaas.toml")
    assert service["StateDirectory"] == "tinymlaas"  # /var/lib/tinymlaas, the example's data.home
    assert service["KillSignal"] == "SIGTERM"  # serve stops cleanly on it
