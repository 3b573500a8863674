"""CLI: ``tinymlaas credentials``, ``tinymlaas bootstrap``, ``tinymlaas signing-keys``.

Through the running server's admin API. Keys are read from a file or stdin (``--key-file -``),
never from the command line (where ``ps`` and shell history would keep them), and never
printed: ``credentials list`` shows identities and states only. ``credentials import`` sends a
production batch's CSV (``endpoint,identity,key[,purpose]``, keys in hex) in one request: all
rows or none.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path as FsPath
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from tinymlaas.cli.client import CliError, OneLineErrors, api_path, call
from tinymlaas.cli.terminal import console

out = console()
credentials_app = typer.Typer(help="Device credentials (DTLS-PSK): add, rotate, revoke, import a batch.",
                              no_args_is_help=True)
bootstrap_app = typer.Typer(help="What the bootstrap server gives devices, per endpoint, group or default.",
                            no_args_is_help=True)
keys_app = typer.Typer(help="The package-signing keys devices trust.", no_args_is_help=True)
PurposeOpt = typer.Option("dm", help="dm (the LwM2M server) or bootstrap (the bootstrap server)")
JsonOpt = typer.Option(False, "--json", help="print JSON for scripts")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def read_key(path: str) -> str:
    """A PSK in hex from a file or ``-`` (stdin); the text is not echoed or checked here."""
    try:
        text = sys.stdin.read() if path == "-" else FsPath(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read the key file: {exc.strerror}") from None
    return text.strip()


def duration_s(text: str) -> float:
    """``3600``, ``90m``, ``12h``, ``7d``."""
    unit = text[-1:] if text[-1:] in UNITS else "s"
    number = text[:-1] if text[-1:] in UNITS else text
    try:
        value = float(number) * UNITS[unit]
    except ValueError:
        raise CliError(f"duration {text!r}: expected seconds or a number with s, m, h or d") from None
    if value < 0:
        raise CliError(f"duration {text!r}: must not be negative")
    return value


def when(ts: Any) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def show(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("endpoint", "purpose", "identity", "state", "created", "rotated", "revoked")
    for r in rows:
        table.add_row(escape(r["endpoint"]), r["purpose"], escape(r["identity"]), r["state"], when(r["created_at"]),
                      when(r["rotated_at"]), when(r["revoked_at"]))
    out.print(table)


def register(app: typer.Typer, one_line_errors: OneLineErrors) -> None:
    @credentials_app.command("list")
    @one_line_errors
    def _list(purpose: Optional[str] = typer.Option(None, help="dm or bootstrap"), as_json: bool = JsonOpt) -> None:
        """Every credential: endpoint, identity, state (never a key)."""
        show(call("GET", "/credentials", params={"purpose": purpose} if purpose else None), as_json)

    @credentials_app.command("add")
    @one_line_errors
    def _add(endpoint: str, key_file: str = typer.Option(..., help="file holding the PSK in hex, or - for stdin"),
             identity: Optional[str] = typer.Option(None, help="PSK identity (default: the endpoint name)"),
             purpose: str = PurposeOpt,
             replace: bool = typer.Option(False, help="replace an existing credential")) -> None:
        """Give ENDPOINT a PSK: from then on it registers over DTLS only."""
        r = call("POST", "/credentials", json_body={"endpoint": endpoint, "identity": identity or endpoint,
                                                    "key": read_key(key_file), "purpose": purpose, "replace": replace})
        out.print(f"{escape(r['endpoint'])}: {r['purpose']} credential {escape(r['identity'])!r} added")

    @credentials_app.command("import")
    @one_line_errors
    def _import(file: FsPath = typer.Argument(..., help="CSV with endpoint,identity,key[,purpose]"),
                replace: bool = typer.Option(False, help="replace existing credentials")) -> None:
        """Import a production batch (all rows or none)."""
        r = call("POST", "/credentials/import", json_body={"csv": file.read_text(encoding="utf-8"), "replace": replace})
        out.print(f"imported {r['imported']} credentials")

    @credentials_app.command("rotate")
    @one_line_errors
    def _rotate(endpoint: str, purpose: str = PurposeOpt,
                key_file: Optional[str] = typer.Option(None, help="the new PSK in hex (default: a random one)"),
                now: bool = typer.Option(False, help="replace the key at once "
                                         "(the device is re-provisioned out of band)"),
                trigger: bool = typer.Option(False, help="make the device bootstrap now (/1/0/9) "
                                             "to fetch the new key")) -> None:
        """A new key for ENDPOINT: it gets it at its next bootstrap (the old key works until then)."""
        body: dict[str, Any] = {"purpose": purpose, "now": now, "trigger": trigger}
        if key_file:
            body["key"] = read_key(key_file)
        r = call("POST", api_path("credentials", endpoint, "rotate"), json_body=body)
        note = {"rotating": "pending until the device's next Bootstrap-Finish", "active": "in use now"}[r["state"]]
        out.print(f"{escape(endpoint)}: new {purpose} key {note}"
                  + ("; Bootstrap-Request Trigger sent" if r.get("triggered") else "")
                  + (f"; trigger failed: {escape(r['trigger_error'])}" if r.get("trigger_error") else ""))

    @credentials_app.command("revoke")
    @one_line_errors
    def _revoke(endpoint: str, purpose: str = PurposeOpt) -> None:
        """Revoke ENDPOINT's credential: its sessions end and its next handshake fails."""
        call("POST", api_path("credentials", endpoint, "revoke"), params={"purpose": purpose})
        out.print(f"{escape(endpoint)}: {purpose} credential revoked")

    @credentials_app.command("remove")
    @one_line_errors
    def _remove(endpoint: str, purpose: str = PurposeOpt) -> None:
        """Forget ENDPOINT's credential (it may use NoSec again where NoSec is accepted)."""
        call("DELETE", api_path("credentials", endpoint), params={"purpose": purpose})
        out.print(f"{escape(endpoint)}: {purpose} credential removed")

    @bootstrap_app.command("set")
    @one_line_errors
    def _set(server_uri: str = typer.Argument(..., help="coaps://HOST:5684 (PSK) or coap://HOST:5683 (NoSec)"),
             endpoint: Optional[str] = typer.Option(None, help="for this endpoint"),
             group: Optional[str] = typer.Option(None, help="for the members of this group"),
             security: str = typer.Option("psk", help="psk or nosec"), lifetime: int = typer.Option(86400, min=1),
             binding: str = "U", short_server_id: int = 1,
             trust_anchor: bool = typer.Option(True, help="write the package-signing key(s) to /33100/0/12")) -> None:
        """Set what the bootstrap server writes (default: for every device)."""
        if endpoint and group:
            raise CliError("give --endpoint or --group, not both")
        scope, target = ("endpoint", endpoint) if endpoint else ("group", group) if group else ("default", "")
        call("PUT", "/bootstrap/configs", json_body={
            "scope": scope, "target": target, "server_uri": server_uri, "security_mode": security,
            "lifetime": lifetime, "binding": binding, "short_server_id": short_server_id, "trust_anchor": trust_anchor})
        out.print(f"bootstrap {scope}{' ' + escape(target) if target else ''}: {escape(server_uri)} ({security})")

    @bootstrap_app.command("list")
    @one_line_errors
    def _configs(as_json: bool = JsonOpt) -> None:
        rows = call("GET", "/bootstrap/configs")
        if as_json:
            print(json.dumps(rows, indent=2))
            return
        table = Table("scope", "target", "server", "security", "lifetime", "trust anchor")
        for r in rows:
            table.add_row(r["scope"], escape(r["target"]), escape(r["server_uri"]), r["security_mode"],
                          str(r["lifetime"]), "yes" if r["trust_anchor"] else "no")
        out.print(table)

    @bootstrap_app.command("rm")
    @one_line_errors
    def _rm(endpoint: Optional[str] = typer.Option(None), group: Optional[str] = typer.Option(None)) -> None:
        scope, target = ("endpoint", endpoint) if endpoint else ("group", group) if group else ("default", "")
        call("DELETE", "/bootstrap/configs", params={"scope": scope, "target": target})
        out.print(f"bootstrap {scope}{' ' + escape(target) if target else ''} removed")

    @bootstrap_app.command("show")
    @one_line_errors
    def _show(endpoint: str, as_json: bool = JsonOpt) -> None:
        """ENDPOINT's last bootstrap sessions: steps and outcome."""
        rows = call("GET", api_path("bootstrap", endpoint))
        if as_json:
            print(json.dumps(rows, indent=2))
            return
        if not rows:
            raise CliError(f"{endpoint} has not bootstrapped")
        for r in rows:
            route = f"{escape(str(r.get('config')))} -> {escape(str(r.get('server_uri')))}"
            out.print(f"{when(r['ts'])} {r['state']} ({route})" + (f": {escape(r['error'])}" if r.get("error") else ""))
            for step in r.get("steps", []):
                out.print(f"  {escape(step)}")

    @keys_app.command("show")
    @one_line_errors
    def _keys(as_json: bool = JsonOpt) -> None:
        r = call("GET", "/signing-keys")
        if as_json:
            print(json.dumps(r, indent=2))
            return
        out.print(f"signing key {r['current']} (public {r['public_key']})")
        if r["previous"]:
            out.print(f"previous key {r['previous']} trusted until {when(r['previous_until'])}")

    @keys_app.command("rotate")
    @one_line_errors
    def _rotate_keys(overlap: Optional[str] = typer.Option(None,
                                                           help="how long devices trust both keys: 3600, 12h, 7d"),
                     push: bool = typer.Option(True,
                                               help="write the new trust anchor to every registered device")) -> None:
        """Sign with a new key; devices are given both keys for the overlap period."""
        r = call("POST", "/signing-keys/rotate", json_body={"overlap_s": duration_s(overlap) if overlap else None,
                                                            "push": push}, timeout=600)
        out.print(f"signing key {r['current']}; previous {r['previous']} trusted until {when(r['previous_until'])}")
        pushed = r.get("pushed")
        if pushed:
            out.print(f"trust anchor written to {pushed['written']} of {pushed['devices']} devices"
                      + (f"; failed: {', '.join(sorted(pushed['failed']))}" if pushed["failed"] else ""))

    app.add_typer(credentials_app, name="credentials")
    app.add_typer(bootstrap_app, name="bootstrap")
    app.add_typer(keys_app, name="signing-keys")
