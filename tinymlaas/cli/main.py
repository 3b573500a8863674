"""``tinymlaas``: serve, and operate a running server through its admin API.

Tables for people, ``--json`` for scripts; errors are one line on stderr and exit code 1.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from datetime import datetime
from pathlib import Path as FsPath
from typing import Any, Callable, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tinymlaas.cli import campaigns, deploy, fleet, models, security
from tinymlaas.cli.client import CliError, call, stream
from compilers.errors import CompilerError
from lwm2m.errors import LwM2MError
from lwm2m.numbers import ContentFormat

app = typer.Typer(help="TinyML-as-a-Service: an LwM2M server that compiles models for MCUs.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
devices_app = typer.Typer(help="Devices the server knows.", no_args_is_help=True)
objects_app = typer.Typer(help="LwM2M object models (DDF).", no_args_is_help=True)
app.add_typer(devices_app, name="devices")
app.add_typer(objects_app, name="objects")
out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

FORMATS: dict[str, ContentFormat] = {
    "text": ContentFormat.TEXT, "opaque": ContentFormat.OPAQUE, "link": ContentFormat.LINK,
    "tlv": ContentFormat.TLV, "senml-json": ContentFormat.SENML_JSON, "senml-cbor": ContentFormat.SENML_CBOR,
    "lwm2m-json": ContentFormat.LWM2M_JSON, "lwm2m-cbor": ContentFormat.LWM2M_CBOR,
}
FormatOpt = typer.Option(None, "--format", "-f", help=f"content format: {', '.join(FORMATS)} or a number")
JsonOpt = typer.Option(False, "--json", help="print JSON for scripts")
TimeoutOpt = typer.Option(10.0, "--timeout", help="seconds to wait for the device")


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
    coap: str = typer.Option("127.0.0.1:5683", help="CoAP (LwM2M) HOST:PORT"),
    api: str = typer.Option("127.0.0.1:8683", help="admin API HOST:PORT (keep it on loopback)"),
    db: Optional[str] = typer.Option(None, envvar="TINYMLAAS_DB", help="SQLAlchemy URL; default SQLite in the data dir"),
    data_dir: Optional[FsPath] = typer.Option(None, envvar="TINYMLAAS_HOME", help="data directory"),
    no_capabilities: bool = typer.Option(False, help="do not read capabilities after registration"),
    coaps: Optional[str] = typer.Option(None, help="CoAP over DTLS (PSK) HOST[:PORT], port 5684 by default"),
    nosec: str = typer.Option("auto", help="NoSec registrations: auto (while no device has credentials), on, off"),
    nosec_other_address: str = typer.Option("refuse", help="NoSec Update/De-register from another address: refuse or allow"),
    bootstrap: Optional[str] = typer.Option(None, help="bootstrap server, NoSec, HOST[:PORT] (5783)"),
    bootstrap_coaps: Optional[str] = typer.Option(None, help="bootstrap server over DTLS HOST[:PORT] (5784)"),
    signing_overlap: str = typer.Option("7d", help="signing-key rotation: how long devices trust both keys"),
    verbose: bool = typer.Option(False, "-v", help="log at INFO"),
) -> None:
    """Run the LwM2M server and its admin API until interrupted."""
    from tinymlaas.cli.security import duration_s
    from tinymlaas.runtime import parse_hostport, serve_forever
    from tinymlaas.security.settings import SecuritySettings

    hp = [parse_hostport(v, port) if v else None for v, port in ((coaps, 5684), (bootstrap, 5783), (bootstrap_coaps, 5784))]
    bs_host = next((h[0] for h in hp[1:] if h), "127.0.0.1")
    settings = SecuritySettings(
        coaps_host=hp[0][0] if hp[0] else "127.0.0.1", coaps_port=hp[0][1] if hp[0] else None,
        nosec=nosec, nosec_other_address=nosec_other_address,  # type: ignore[arg-type]
        bootstrap_host=bs_host, bootstrap_port=hp[1][1] if hp[1] else None,
        bootstrap_coaps_port=hp[2][1] if hp[2] else None, signing_overlap_s=duration_s(signing_overlap))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve_forever(parse_hostport(coap, 5683), parse_hostport(api, 8683), db, data_dir,
                              read_capabilities=not no_capabilities, security=settings))


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
    d = call("GET", f"/devices/{endpoint}")
    if as_json:
        return show_json(d)
    reg = d["registration"]
    out.print(f"[bold]{endpoint}[/bold]  first seen {when(d['first_seen'])}, last seen {when(d['last_seen'])}")
    if reg:
        out.print(f"registered as rd/{reg['id']} from {reg['address']}, LwM2M {reg['lwm2m_version']}, "
                  f"binding {reg['binding']}{' (queue mode)' if reg['queue_mode'] else ''}, "
                  f"lifetime {reg['lifetime']} s, expires {when(reg['expires_at'])}")
        out.print(f"objects: {', '.join(sorted(reg['objects'], key=int))}")
    else:
        out.print("not registered")
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
                remove: Optional[list[str]] = typer.Option(None, "--remove", help="a tag to remove (repeatable)")) -> None:
    """Add or remove a device's tags (groups select by tag: tinymlaas groups add NAME --tag TAG)."""
    if not tags and not remove:
        raise CliError("give tags to add and/or --remove TAG")
    body = {"add": tags or [], "remove": remove or []}
    r = call("POST", f"/devices/{endpoint}/tags", json_body=body)
    out.print(f"{endpoint}: tags {', '.join(r['tags']) or '(none)'}")


def _target(path: str, fmt: str | None, timeout: float) -> dict[str, Any]:
    return {"path": path, "format": fmt_number(fmt), "timeout": timeout}


@app.command()
@one_line_errors
def read(endpoint: str, path: str, fmt: Optional[str] = FormatOpt, timeout: float = TimeoutOpt,
         as_json: bool = JsonOpt) -> None:
    """Read PATH on a device."""
    show_content(call("POST", f"/devices/{endpoint}/read", json_body=_target(path, fmt, timeout),
                      timeout=timeout + 5)["content"], as_json)


@app.command()
@one_line_errors
def write(endpoint: str, path: str, value: Optional[str] = typer.Argument(None, help="the value, typed by the resource"),
          values: Optional[str] = typer.Option(None, help='JSON object of path -> value, e.g. \'{"/1/0/1": 300}\''),
          update: bool = typer.Option(False, "--update", help="partial update (POST) instead of replace (PUT)"),
          fmt: Optional[str] = FormatOpt, timeout: float = TimeoutOpt) -> None:
    """Write a value (or several with --values) to PATH on a device."""
    body = _target(path, fmt, timeout) | {"replace": not update}
    if (value is None) == (values is None):
        raise CliError("give either a VALUE or --values JSON")
    if values is not None:
        body["values"] = json.loads(values)
    else:
        body["text"] = value
    call("POST", f"/devices/{endpoint}/write", json_body=body, timeout=timeout + 5)
    out.print("changed")


@app.command("exec")
@one_line_errors
def execute(endpoint: str, path: str, arguments: str = typer.Argument("", help="e.g. 0='abc',1"),
            timeout: float = TimeoutOpt) -> None:
    """Execute the resource at PATH."""
    call("POST", f"/devices/{endpoint}/execute", json_body=_target(path, None, timeout) | {"arguments": arguments},
         timeout=timeout + 5)
    out.print("executed")


@app.command()
@one_line_errors
def discover(endpoint: str, path: str, timeout: float = TimeoutOpt, as_json: bool = JsonOpt) -> None:
    """Discover the resources and attributes under PATH."""
    links = call("POST", f"/devices/{endpoint}/discover", json_body=_target(path, None, timeout),
                 timeout=timeout + 5)["links"]
    if as_json:
        return show_json(links)
    for link in links.split(","):
        out.print(link, highlight=False, markup=False)


@app.command()
@one_line_errors
def attributes(endpoint: str, path: str, attrs: list[str] = typer.Argument(..., help="pmin=10 pmax=60 gt=20 (or 'pmin' to unset)"),
               timeout: float = TimeoutOpt) -> None:
    """Write-Attributes on PATH."""
    parsed: dict[str, float | None] = {}
    for a in attrs:
        k, sep, v = a.partition("=")
        parsed[k] = float(v) if sep else None
    call("POST", f"/devices/{endpoint}/write-attributes",
         json_body=_target(path, None, timeout) | {"attributes": parsed}, timeout=timeout + 5)
    out.print("changed")


@app.command()
@one_line_errors
def create(endpoint: str, path: str, values: str = typer.Option(..., help='JSON object path -> value, e.g. \'{"/1/2/0": 2}\''),
           fmt: Optional[str] = FormatOpt, timeout: float = TimeoutOpt) -> None:
    """Create an object instance under the object PATH."""
    r = call("POST", f"/devices/{endpoint}/create", json_body=_target(path, fmt, timeout) | {"values": json.loads(values)},
             timeout=timeout + 5)
    out.print(f"created {r['location'] or ''}")


@app.command()
@one_line_errors
def delete(endpoint: str, path: str, timeout: float = TimeoutOpt) -> None:
    """Delete the object instance PATH."""
    call("POST", f"/devices/{endpoint}/delete", json_body=_target(path, None, timeout), timeout=timeout + 5)
    out.print("deleted")


@app.command()
@one_line_errors
def observe(endpoint: str, path: str, count: Optional[int] = typer.Option(None, help="stop after N notifications"),
            duration: Optional[float] = typer.Option(None, help="stop after S seconds"),
            cancel: bool = typer.Option(False, "--cancel", help="cancel the observation instead"),
            fmt: Optional[str] = FormatOpt, timeout: float = TimeoutOpt, as_json: bool = JsonOpt) -> None:
    """Observe PATH and print each notification (or --cancel it)."""
    if cancel:
        call("DELETE", f"/devices/{endpoint}/observations", params={"path": path})
        out.print("cancelled")
        return
    body = _target(path, fmt, timeout) | {"count": count, "duration": duration}
    for note in stream(f"/devices/{endpoint}/observe", body):
        if as_json:
            sys.stdout.write(json.dumps(note) + "\n")
            sys.stdout.flush()
        elif note.get("ended"):
            out.print("observation ended by the device")
        else:
            out.print(f"{datetime.now():%H:%M:%S} " + ", ".join(f"{p}={json.dumps(v)}" for p, v in note["content"].items()),
                      highlight=False)


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
        table.add_row(str(o["id"]), o["name"], o["version"], "multiple" if o["multiple"] else "single", str(o["resources"]))
    out.print(table)


@objects_app.command("import")
@one_line_errors
def objects_import(file: FsPath = typer.Argument(..., help="an OMA DDF XML file")) -> None:
    """Import a vendor object model (DDF XML) into the running server."""
    r = call("POST", "/objects", content=file.read_text(encoding="utf-8"))
    for o in r["imported"]:
        out.print(f"imported object {o['id']} {o['name']} ({o['resources']} resources)")


fleet.register(app, one_line_errors)
models.register(app, one_line_errors)
deploy.register(app, one_line_errors)
campaigns.register(app, one_line_errors)
security.register(app, one_line_errors)

if __name__ == "__main__":
    app()
