"""``tinymlaas``: serve, and operate a running server through its admin API.

Tables for people, ``--json`` for scripts; errors are one line on stderr and exit code 1.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime
from pathlib import Path as FsPath
from typing import Any, Callable, Optional, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from tinymlaas.cli import admin, campaigns, deploy, devices, fleet, models, ops, profiles, security
from tinymlaas.cli.ops import ConfigOpt, SetOpt
from tinymlaas.cli.client import CliError, api_path, call, stream
from compilers.errors import CompilerError
from lwm2m.errors import LwM2MError
from lwm2m.numbers import ContentFormat
from tinymlaas.cli.terminal import console

app = typer.Typer(help="TinyML-as-a-Service: an LwM2M server that compiles models for MCUs.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
devices_app = typer.Typer(help="Devices the server knows.", no_args_is_help=True)
objects_app = typer.Typer(help="LwM2M object models (DDF).", no_args_is_help=True)
app.add_typer(devices_app, name="devices")
app.add_typer(objects_app, name="objects")
out = console()
err = console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

FORMATS: dict[str, ContentFormat] = {
    "text": ContentFormat.TEXT, "opaque": ContentFormat.OPAQUE, "link": ContentFormat.LINK,
    "tlv": ContentFormat.TLV, "senml-json": ContentFormat.SENML_JSON, "senml-cbor": ContentFormat.SENML_CBOR,
    "lwm2m-json": ContentFormat.LWM2M_JSON, "lwm2m-cbor": ContentFormat.LWM2M_CBOR,
}
FormatOpt = typer.Option(None, "--format", "-f", help=f"content format: {', '.join(FORMATS)} or a number")
JsonOpt = typer.Option(False, "--json", help="print JSON for scripts")
TimeoutOpt = typer.Option(10.0, "--timeout", help="seconds to wait for the device")
HoldOpt = typer.Option(None, "--hold", min=0.001, help="seconds to hold the request for a sleeping queue-mode "
                                                      "device (default: the timeout)")
NoWaitOpt = typer.Option(False, "--no-wait", help="a sleeping device: leave the request held and return its id "
                                                   "(tinymlaas devices queue EP shows the outcome)")


def one_line_errors(fn: F) -> F:
    """Turn expected failures into ``error: ...`` on stderr and exit code 1."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (CliError, LwM2MError, CompilerError, ValueError, OSError) as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
    return wrapper  # type: ignore[return-value]


def fmt_number(name: str | None) -> int | None:
    if name is None:
        return None
    if name.isdigit():
        return int(name)
    if name not in FORMATS:
        raise CliError(f"unknown content format {name!r}: use one of {', '.join(FORMATS)} or a number")
    return int(FORMATS[name])


def when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def show_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def show_content(content: dict[str, Any], as_json: bool) -> None:
    if as_json:
        show_json(content)
        return
    table = Table("path", "value")
    for path, value in content.items():
        table.add_row(escape(path), escape(json.dumps(value) if isinstance(value, dict) else str(value)))
    out.print(table)


@app.command()
@one_line_errors
def serve(
    coap: Optional[str] = typer.Option(None, help="CoAP (LwM2M) HOST:PORT "
                                       "(coap.host, coap.port; default 127.0.0.1:5683)"),
    api: Optional[str] = typer.Option(None, help="admin API HOST:PORT "
                                      "(admin.host, admin.port; default 127.0.0.1:8683)"),
    db: Optional[str] = typer.Option(None, help="SQLAlchemy URL (database.url; default SQLite in the data dir)"),
    data_dir: Optional[FsPath] = typer.Option(None, help="data directory (data.home)"),
    no_capabilities: bool = typer.Option(False, help="do not read capabilities after registration "
                                                     "(coap.read_capabilities)"),
    profiles_dir: Optional[list[FsPath]] = typer.Option(None, "--profiles-dir", help="a directory of device "
                                                        "profile files (*.toml) beside the shipped ones (repeatable; "
                                                        "profiles.dirs)"),
    awake: Optional[float] = typer.Option(None, "--awake", min=0.001, help="queue mode: seconds a device listens "
                                          "after it spoke (queue.awake_s; default 93, CoAP MAX_TRANSMIT_WAIT); "
                                          "per device: tinymlaas devices set-queue"),
    lifetime_min: Optional[int] = typer.Option(None, "--lifetime-min", min=1,
                                               help="shortest registration lifetime accepted, s (coap.lifetime_min_s)"),
    lifetime_max: Optional[int] = typer.Option(None, "--lifetime-max", min=1, help="longest registration lifetime "
                                               "accepted, s (coap.lifetime_max_s; others: 4.00)"),
    api_cert: Optional[FsPath] = typer.Option(None, help="PEM certificate: serve the admin API over HTTPS, with "
                                              "--api-key (admin.cert_file)"),
    api_key: Optional[FsPath] = typer.Option(None, help="PEM private key of --api-cert (admin.key_file)"),
    coaps: Optional[str] = typer.Option(None, help="CoAP over DTLS (PSK) HOST[:PORT], 5684 by default "
                                        "(security.coaps_host, security.coaps_port)"),
    nosec: Optional[str] = typer.Option(None, help="NoSec registrations: auto (while no device has credentials), "
                                        "on, off (security.nosec; default auto)"),
    nosec_other_address: Optional[str] = typer.Option(None, help="NoSec Update/De-register from another address: "
                                                      "refuse or allow (security.nosec_other_address; default refuse)"),
    bootstrap: Optional[str] = typer.Option(None, help="bootstrap server, NoSec, HOST[:PORT] (5783; "
                                            "security.bootstrap_host, security.bootstrap_port)"),
    bootstrap_coaps: Optional[str] = typer.Option(None, help="bootstrap server over DTLS HOST[:PORT] (5784; "
                                                  "security.bootstrap_coaps_port)"),
    signing_overlap: Optional[str] = typer.Option(None, help="signing-key rotation: how long devices trust both "
                                                  "keys, e.g. 7d (security.signing_overlap_s)"),
    verbose: bool = typer.Option(False, "-v", help="log at INFO (logging.level)"),
    config_file: Optional[FsPath] = ConfigOpt,
    assignments: Optional[list[str]] = SetOpt,
) -> None:
    """Run the LwM2M server and its admin API until interrupted (settings: tinymlaas config show).

    Device profiles (the boards a device is judged as) come from these sources, a later one
    replacing an earlier one of the same name:

    1. the profiles shipped with tinymlaas (device_profiles/profiles);

    2. each --profiles-dir DIR (profiles.dirs in the configuration);

    3. the directories in $TINYMLAAS_PROFILES (separated by ':');

    4. profiles added while the server runs and stored in its database: 'tinymlaas profiles add FILE' (POST /profiles).

    A device gets one through its ML Capability object (33100, resource 13), the profile an operator
    assigned to it ('tinymlaas devices set-profile EP BOARD'), or its Device object's manufacturer and
    model. Without one, give its figures: 'tinymlaas devices set-figures EP --sram-free B --flash-free B
    --runtime NAME', or the same options on 'tinymlaas deploy'.
    """
    from tinymlaas.runtime import configure_logging, serve_forever

    flags = serve_flags(coap, api, db, data_dir, no_capabilities, verbose)
    if profiles_dir:
        flags["profiles"] = {"dirs": list(profiles_dir)}
    if awake is not None:
        flags["queue"] = {"awake_s": awake}
    for key, value in (("lifetime_min_s", lifetime_min), ("lifetime_max_s", lifetime_max)):
        if value is not None:
            flags.setdefault("coap", {})[key] = value
    for key, path in (("cert_file", api_cert), ("key_file", api_key)):
        if path is not None:
            flags.setdefault("admin", {})[key] = path
    flags.update(security_flags(coaps, nosec, nosec_other_address, bootstrap, bootstrap_coaps, signing_overlap))
    loaded = ops.load_for_cli(config_file, assignments, flags)
    if (loaded.settings.admin.cert_file is None) != (loaded.settings.admin.key_file is None):
        raise CliError("give both admin.cert_file and admin.key_file (--api-cert and --api-key), or neither")
    if loaded.settings.coap.lifetime_min_s > loaded.settings.coap.lifetime_max_s:
        raise CliError(f"coap.lifetime_min_s {loaded.settings.coap.lifetime_min_s} is above "
                       f"coap.lifetime_max_s {loaded.settings.coap.lifetime_max_s}")
    configure_logging(loaded.settings)
    asyncio.run(serve_forever(loaded.settings))


def security_flags(coaps: str | None, nosec: str | None, other: str | None, bootstrap: str | None,
                   bootstrap_coaps: str | None, overlap: str | None) -> dict[str, dict[str, Any]]:
    """``serve``'s security flags as ``security.*`` configuration keys (only those given)."""
    from tinymlaas.cli.security import duration_s
    from tinymlaas.runtime import parse_hostport

    sec: dict[str, Any] = {}
    if coaps:
        sec["coaps_host"], sec["coaps_port"] = parse_hostport(coaps, 5684)
    for text, port, key in ((bootstrap, 5783, "bootstrap_port"), (bootstrap_coaps, 5784, "bootstrap_coaps_port")):
        if text:
            sec["bootstrap_host"], sec[key] = parse_hostport(text, port)
    for key, value in (("nosec", nosec), ("nosec_other_address", other)):
        if value is not None:
            sec[key] = value
    if overlap is not None:
        sec["signing_overlap_s"] = duration_s(overlap)
    return {"security": sec} if sec else {}


def serve_flags(coap: str | None, api: str | None, db: str | None, data_dir: FsPath | None,
                no_capabilities: bool, verbose: bool) -> dict[str, dict[str, Any]]:
    """``serve``'s own flags as configuration keys (only those given: the rest comes from below)."""
    from tinymlaas.runtime import parse_hostport

    flags: dict[str, dict[str, Any]] = {}
    for section, text, port in (("coap", coap, 5683), ("admin", api, 8683)):
        if text is not None:
            host, p = parse_hostport(text, port)
            flags[section] = {"host": host, "port": p}
    if db is not None:
        flags["database"] = {"url": db}
    if data_dir is not None:
        flags["data"] = {"home": data_dir}
    if no_capabilities:
        flags.setdefault("coap", {})["read_capabilities"] = False
    if verbose:
        flags["logging"] = {"level": "info"}
    return flags


@app.command()
@one_line_errors
def demo() -> None:
    """Start a server and a small simulated fleet on loopback, manage it, print what happened."""
    from tinymlaas.demo import run_demo

    raise typer.Exit(asyncio.run(run_demo(out)))


@devices_app.command("list")
@one_line_errors
def devices_list(as_json: bool = JsonOpt) -> None:
    """Every device seen, registered or not."""
    rows = call("GET", "/devices")
    if as_json:
        return show_json(rows)
    table = Table("endpoint", "registered", "lwm2m", "binding", "lifetime", "address", "last seen", "profile")
    for r in rows:
        table.add_row(r["endpoint"], "yes" if r["registered"] else "no", r["lwm2m_version"], r["binding"] or "-",
                      str(r["lifetime"] or "-"), r["address"] or "-", when(r["last_seen"]), r["profile"] or "-")
    out.print(table)


@devices_app.command("show")
@one_line_errors
def devices_show(endpoint: str, as_json: bool = JsonOpt) -> None:
    """One device: registration, capabilities, observed values, recent events."""
    d = call("GET", api_path("devices", endpoint))
    if as_json:
        return show_json(d)
    reg = d["registration"]
    out.print(f"[bold]{escape(endpoint)}[/bold]  first seen {when(d['first_seen'])}, last seen {when(d['last_seen'])}")
    if reg:
        out.print(f"registered as rd/{reg['id']} from {reg['address']}, LwM2M {reg['lwm2m_version']}, "
                  f"binding {reg['binding']}{' (queue mode)' if reg['queue_mode'] else ''}, "
                  f"lifetime {reg['lifetime']} s, expires {when(reg['expires_at'])}")
        out.print(f"objects: {', '.join(sorted(reg['objects'], key=int))}")
    else:
        out.print("not registered")
    st = d.get("settings") or {}
    set_ = {k: v for k, v in st.items() if k != "endpoint" and v not in (None, [])}
    if set_ or d.get("queued_requests"):
        out.print(f"operator settings: {json.dumps(set_) if set_ else 'none'}; "
                  f"{d.get('queued_requests', 0)} request(s) held", highlight=False)
    if d["capabilities"]:
        c = d["capabilities"]
        out.print(f"capabilities (from {c['source']}, {when(c['taken_at'])}):")
        show_content(c["data"], False)
    if d["observed"]:
        out.print("observed values:")
        show_content({p: v["values"] for p, v in d["observed"].items()}, False)
    table = Table("time", "event", "detail")
    for e in d["events"]:
        table.add_row(when(e["ts"]), e["kind"], json.dumps(e["detail"]))
    out.print(table)


@devices_app.command("tag")
@one_line_errors
def devices_tag(endpoint: str, tags: Optional[list[str]] = typer.Argument(None, help="tags to add"),
                remove: Optional[list[str]] = typer.Option(None, "--remove",
                                                           help="a tag to remove (repeatable)")) -> None:
    """Add or remove a device's tags (groups select by tag: tinymlaas groups add NAME --tag TAG)."""
    if not tags and not remove:
        raise CliError("give tags to add and/or --remove TAG")
    body = {"add": tags or [], "remove": remove or []}
    r = call("POST", api_path("devices", endpoint, "tags"), json_body=body)
    out.print(f"{endpoint}: tags {', '.join(r['tags']) or '(none)'}")


def _target(path: str, fmt: str | None, timeout: float, hold: float | None = None,
            no_wait: bool = False) -> dict[str, Any]:
    return {"path": path, "format": fmt_number(fmt), "timeout": timeout, "hold": hold, "wait": not no_wait}


def _held(r: dict[str, Any], endpoint: str) -> bool:
    if r.get("status") == "held":
        out.print(f"held as request {r['id']} until {endpoint} wakes up (tinymlaas devices queue {endpoint})")
        return True
    return False


@app.command()
@one_line_errors
def read(endpoint: str, path: str, fmt: Optional[str] = FormatOpt, timeout: float = TimeoutOpt,
         hold: Optional[float] = HoldOpt, no_wait: bool = NoWaitOpt, as_json: bool = JsonOpt) -> None:
    """Read PATH on a device."""
    r = call("POST", api_path("devices", endpoint, "read"), json_body=_target(path, fmt, timeout, hold, no_wait),
             timeout=max(timeout, hold or 0) + 5)
    if not _held(r, endpoint):
        show_content(r["content"], as_json)


@app.command()
@one_line_errors
def write(endpoint: str, path: str,
          value: Optional[str] = typer.Argument(None, help="the value, typed by the resource"),
          values: Optional[str] = typer.Option(None, help='JSON object of path -> value, e.g. \'{"/1/0/1": 300}\''),
          update: bool = typer.Option(False, "--update", help="partial update (POST) instead of replace (PUT)"),
          fmt: Optional[str] = FormatOpt, timeout: float = TimeoutOpt, hold: Optional[float] = HoldOpt,
          no_wait: bool = NoWaitOpt) -> None:
    """Write a value (or several with --values) to PATH on a device."""
    body = _target(path, fmt, timeout, hold, no_wait) | {"replace": not update}
    if (value is None) == (values is None):
        raise CliError("give either a VALUE or --values JSON")
    if values is not None:
        body["values"] = json.loads(values)
    else:
        body["text"] = value
    answer = call("POST", api_path("devices", endpoint, "write"), json_body=body, timeout=max(timeout, hold or 0) + 5)
    if not _held(answer, endpoint):
        out.print("changed")


@app.command("exec")
@one_line_errors
def execute(endpoint: str, path: str, arguments: str = typer.Argument("", help="e.g. 0='abc',1"),
            timeout: float = TimeoutOpt, hold: Optional[float] = HoldOpt, no_wait: bool = NoWaitOpt) -> None:
    """Execute the resource at PATH."""
    r = call("POST", api_path("devices", endpoint, "execute"),
             json_body=_target(path, None, timeout, hold, no_wait) | {"arguments": arguments},
             timeout=max(timeout, hold or 0) + 5)
    if not _held(r, endpoint):
        out.print("executed")


@app.command()
@one_line_errors
def discover(endpoint: str, path: str, timeout: float = TimeoutOpt, as_json: bool = JsonOpt) -> None:
    """Discover the resources and attributes under PATH."""
    links = call("POST", api_path("devices", endpoint, "discover"), json_body=_target(path, None, timeout),
                 timeout=timeout + 5)["links"]
    if as_json:
        return show_json(links)
    for link in links.split(","):
        out.print(link, highlight=False, markup=False)


@app.command()
@one_line_errors
def attributes(endpoint: str, path: str,
               attrs: list[str] = typer.Argument(..., help="pmin=10 pmax=60 gt=20 (or 'pmin' to unset)"),
               timeout: float = TimeoutOpt) -> None:
    """Write-Attributes on PATH."""
    parsed: dict[str, float | None] = {}
    for a in attrs:
        k, sep, v = a.partition("=")
        parsed[k] = float(v) if sep else None
    call("POST", api_path("devices", endpoint, "write-attributes"),
         json_body=_target(path, None, timeout) | {"attributes": parsed}, timeout=timeout + 5)
    out.print("changed")


@app.command()
@one_line_errors
def create(endpoint: str, path: str,
           values: str = typer.Option(..., help='JSON object path -> value, e.g. \'{"/1/2/0": 2}\''),
           fmt: Optional[str] = FormatOpt, timeout: float = TimeoutOpt) -> None:
    """Create an object instance under the object PATH."""
    r = call("POST", api_path("devices", endpoint, "create"),
             json_body=_target(path, fmt, timeout) | {"values": json.loads(values)}, timeout=timeout + 5)
    out.print(f"created {r['location'] or ''}")


@app.command()
@one_line_errors
def delete(endpoint: str, path: str, timeout: float = TimeoutOpt) -> None:
    """Delete the object instance PATH."""
    call("POST", api_path("devices", endpoint, "delete"), json_body=_target(path, None, timeout), timeout=timeout + 5)
    out.print("deleted")


@app.command()
@one_line_errors
def observe(endpoint: str, path: str, count: Optional[int] = typer.Option(None, help="stop after N notifications"),
            duration: Optional[float] = typer.Option(None, help="stop after S seconds"),
            cancel: bool = typer.Option(False, "--cancel", help="cancel the observation instead"),
            fmt: Optional[str] = FormatOpt, timeout: float = TimeoutOpt, as_json: bool = JsonOpt) -> None:
    """Observe PATH and print each notification (or --cancel it)."""
    if cancel:
        call("DELETE", api_path("devices", endpoint, "observations"), params={"path": path})
        out.print("cancelled")
        return
    body = _target(path, fmt, timeout) | {"count": count, "duration": duration}
    for note in stream(api_path("devices", endpoint, "observe"), body):
        if as_json:
            sys.stdout.write(json.dumps(note) + "\n")
            sys.stdout.flush()
        elif note.get("ended"):
            out.print("observation ended by the device")
        elif note.get("cancelled"):
            out.print("observation cancelled on the device")
        else:
            values = ", ".join(f"{p}={json.dumps(v)}" for p, v in note["content"].items())
            out.print(f"{datetime.now():%H:%M:%S} " + values, highlight=False)


@app.command()
@one_line_errors
def events(endpoint: Optional[str] = typer.Option(None, help="only this device"), limit: int = 50,
           as_json: bool = JsonOpt) -> None:
    """The event log, newest first."""
    rows = call("GET", "/events", params={"endpoint": endpoint, "limit": limit} if endpoint else {"limit": limit})
    if as_json:
        return show_json(rows)
    table = Table("time", "endpoint", "event", "detail")
    for e in rows:
        table.add_row(when(e["ts"]), e["endpoint"], e["kind"], json.dumps(e["detail"]))
    out.print(table)


@objects_app.command("list")
@one_line_errors
def objects_list(as_json: bool = JsonOpt) -> None:
    """Object models the server knows."""
    rows = call("GET", "/objects")
    if as_json:
        return show_json(rows)
    table = Table("id", "name", "version", "instances", "resources")
    for o in rows:
        table.add_row(str(o["id"]), o["name"], o["version"], "multiple" if o["multiple"] else "single",
                      str(o["resources"]))
    out.print(table)


@objects_app.command("import")
@one_line_errors
def objects_import(file: FsPath = typer.Argument(..., help="an OMA DDF XML file"),
                   force: bool = typer.Option(False, "--force",
                                              help="replace built-in objects (OMA 0-7, 9; 33100, 33101)")) -> None:
    """Import a vendor object model (DDF XML) into the running server."""
    r = call("POST", "/objects", content=file.read_text(encoding="utf-8"), params={"force": "true"} if force else None)
    for o in r["imported"]:
        out.print(f"imported object {o['id']} {o['name']} ({o['resources']} resources)")


devices.register(devices_app, one_line_errors)
fleet.register(app, one_line_errors)
profiles.register(app, one_line_errors)
models.register(app, one_line_errors)
deploy.register(app, one_line_errors)
campaigns.register(app, one_line_errors)
ops.register(app, one_line_errors)
admin.register(app, one_line_errors)
security.register(app, one_line_errors)

if __name__ == "__main__":
    app()
