"""The one configuration: precedence CLI > environment > file > defaults, unknown keys named,
``config show`` with sources and masked secrets, ``config check``, and a server started from it."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tinymlaas import config, runtime
from tinymlaas.cli.main import app

FILE = """
[coap]
host = "127.0.0.2"
port = 5701

[admin]
token = "file-token"

[database]
url = "postgresql+psycopg://tinymlaas:s3cret@db.example:5432/fleet"
pool_size = 12

[delivery]
deadline_s = 60
"""


@pytest.fixture
def toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("TINYMLAAS_CONFIG", "TINYMLAAS_HOME", "TINYMLAAS_DB", "TINYMLAAS_PROFILES"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "tinymlaas.toml"
    path.write_text(FILE)
    return path


def test_precedence_cli_over_env_over_file_over_defaults(toml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINYMLAAS_COAP__PORT", "5702")
    monkeypatch.setenv("TINYMLAAS_DELIVERY__DEADLINE_S", "90")
    loaded = config.load(toml, {"coap": {"port": 5703}})
    s = loaded.settings
    assert s.coap.port == 5703 and loaded.sources["coap.port"] == "cli"  # cli beats env and file
    assert s.delivery.deadline_s == 90 and loaded.sources["delivery.deadline_s"] == "env TINYMLAAS_DELIVERY__DEADLINE_S"
    assert s.coap.host == "127.0.0.2" and loaded.sources["coap.host"] == f"file {toml}"  # file beats default
    assert s.database.pool_size == 12
    assert s.admin.port == 8683 and "admin.port" not in loaded.sources  # default
    monkeypatch.delenv("TINYMLAAS_COAP__PORT")
    assert config.load(toml).settings.coap.port == 5701
    monkeypatch.setenv("TINYMLAAS_CONFIG", str(toml))  # the file by environment, too
    assert config.load().settings.coap.port == 5701


def test_short_environment_names_and_their_long_forms(toml: Path, monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    monkeypatch.setenv("TINYMLAAS_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("TINYMLAAS_PROFILES", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    loaded = config.load(toml)
    assert loaded.settings.data.home == tmp_path / "h" and loaded.sources["data.home"] == "env TINYMLAAS_HOME"
    assert loaded.settings.profiles.dirs == [tmp_path / "a", tmp_path / "b"]
    monkeypatch.setenv("TINYMLAAS_DB", "sqlite:///short.db")
    monkeypatch.setenv("TINYMLAAS_DATABASE__URL", "sqlite:///long.db")  # the long form wins
    assert config.load(toml).settings.database.url == "sqlite:///long.db"
    assert runtime.home() == tmp_path / "h"


@pytest.mark.parametrize("where", ["file", "env", "cli"])
def test_an_unknown_key_is_an_error_naming_it(toml: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    cli = {}
    if where == "file":
        toml.write_text(FILE + "\n[queue]\nawake_seconds = 5\n")
    elif where == "env":
        monkeypatch.setenv("TINYMLAAS_QUEUE__AWAKE_SECONDS", "5")
    else:
        cli = config.parse_assignments(["queue.awake_seconds=5"])
    with pytest.raises(config.ConfigError) as exc:
        config.load(toml, cli)
    msg = str(exc.value)
    assert msg.startswith("unknown key queue.awake_seconds") and "awake_s" in msg and "\n" not in msg
    assert {"file": f"file {toml}", "env": "env TINYMLAAS_QUEUE__AWAKE_SECONDS", "cli": "(cli)"}[where] in msg


def test_an_unknown_section_in_the_environment_is_named(toml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINYMLAAS_COAPP__PORT", "1")
    with pytest.raises(config.ConfigError, match=r"unknown key coapp.port \(env TINYMLAAS_COAPP__PORT\); sections"):
        config.load(toml)
    monkeypatch.delenv("TINYMLAAS_COAPP__PORT")
    monkeypatch.setenv("TINYMLAAS_API", "http://127.0.0.1:1")  # the CLI's own variables are no settings
    monkeypatch.setenv("TINYMLAAS_TOKEN", "x")
    assert config.load(toml).settings.admin.port == 8683


def test_unknown_section_bad_type_missing_file_and_bad_toml(toml: Path, tmp_path: Path) -> None:
    toml.write_text("[coaps]\nport = 1\n")
    with pytest.raises(config.ConfigError, match=r"unknown key coaps .*sections: coap, admin"):
        config.load(toml)
    toml.write_text("[coap]\nport = 'many'\n")
    with pytest.raises(config.ConfigError, match=r"coap.port \(file .*\): Input should be a valid integer"):
        config.load(toml)
    toml.write_text("[retry]\nfirst_s = 4\nlongest_s = 1\n")
    with pytest.raises(config.ConfigError, match="retry.longest_s"):
        config.load(toml)
    toml.write_text("[coap\n")
    with pytest.raises(config.ConfigError, match="invalid TOML"):
        config.load(toml)
    with pytest.raises(config.ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.toml")
    with pytest.raises(config.ConfigError, match="SECTION.KEY=VALUE"):
        config.parse_assignments(["port=1"])


def test_config_show_masks_secrets_and_names_sources(toml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINYMLAAS_LOGGING__FORMAT", "json")
    result = CliRunner().invoke(app, ["config", "show", "--config", str(toml), "--set", "coap.port=5710"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split()[1:] for line in result.output.splitlines() if not line.startswith("#")}
    assert lines["coap.port"] == ["5710", "cli"]
    assert lines["coap.host"] == ["127.0.0.2", "file", str(toml)]
    assert lines["logging.format"] == ["json", "env", "TINYMLAAS_LOGGING__FORMAT"]
    assert lines["admin.token"][0] == "********" and "file-token" not in result.output
    assert lines["database.url"][0] == "postgresql+psycopg://tinymlaas:***@db.example:5432/fleet"
    assert "s3cret" not in result.output
    assert lines["retry.first_s"] == ["0.5", "default"]
    assert set(lines) == {key for key, _, _ in config.rows(config.load(toml))}  # every setting is listed
    as_json = CliRunner().invoke(app, ["config", "show", "--config", str(toml), "--json"])
    assert {r["key"]: r["source"] for r in json.loads(as_json.output)}["database.pool_size"] == f"file {toml}"


def test_config_check(toml: Path) -> None:
    ok = CliRunner().invoke(app, ["config", "check", str(toml)])
    assert ok.exit_code == 0 and "ok (6 settings" in ok.output
    toml.write_text("[delivery]\ndeadline = 5\n")
    bad = CliRunner().invoke(app, ["config", "check", str(toml)])
    assert bad.exit_code == 1
    assert bad.output.strip().startswith("error: unknown key delivery.deadline") and len(bad.output.splitlines()) == 1


async def test_a_server_runs_from_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ports, token, data directory, key file and delivery policy come from the file."""
    for name in ("TINYMLAAS_CONFIG", "TINYMLAAS_HOME", "TINYMLAAS_DB"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "tinymlaas.toml"
    path.write_text(f"""
[coap]
port = 0
[admin]
port = 0
token = "operator-token"
[data]
home = "{tmp_path / 'home'}"
signing_key_file = "{tmp_path / 'keys' / 'fleet.pem'}"
[delivery]
deadline_s = 42
[retry]
first_s = 0.25
longest_s = 4
[metrics]
enabled = true
""")
    running = await runtime.launch(config.load(path).settings)
    try:
        assert running.deployer.policy.deadline_s == 42 and running.deployer.policy.backoff_s == (0.25, 4.0)
        assert (tmp_path / "keys" / "fleet.pem").exists() and (tmp_path / "home" / "api.json").exists()
        assert (tmp_path / "home" / "tinymlaas.db").exists()
        async with httpx.AsyncClient(base_url=running.api_url) as client:
            assert (await client.get("/devices", headers={"Authorization": "Bearer operator-token"})).status_code == 200
            assert (await client.get("/devices", headers={"Authorization": "Bearer other"})).status_code == 401
            metrics = await client.get("/metrics", headers={"Authorization": "Bearer operator-token"})
            assert metrics.status_code == 200
            assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
            assert "# TYPE tinymlaas_registrations gauge\ntinymlaas_registrations 0\n" in metrics.text
            assert "tinymlaas_compile_builds_total 0" in metrics.text
    finally:
        await running.stop()
