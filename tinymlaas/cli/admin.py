"""``tinymlaas tokens`` and ``tinymlaas audit``: admin-API tokens with scopes, and the audit trail.

Both go through the running server's API (they need a token with the ``admin`` scope, such as
the server's own in ``api.json``). ``tokens create`` prints the new token once; the server
keeps only its hash. Registered on the main app by ``tinymlaas.cli.main``.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from tinymlaas.cli.client import OneLineErrors, api_path, call
from tinymlaas.cli.terminal import console

tokens_app = typer.Typer(help="Admin-API tokens and their scopes (read, operate, deploy, admin).", no_args_is_help=True)
out = console()
JsonOpt = typer.Option(False, "--json", help="print JSON for scripts")


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def register(app: typer.Typer, one_line_errors: OneLineErrors) -> None:
    @tokens_app.command("create")
    @one_line_errors
    def create(name: str = typer.Argument(..., help="who or what will use it"),
               scope: list[str] = typer.Option(..., "--scope", "-s",
                                               help="read, operate, deploy or admin (repeatable)"),
               as_json: bool = JsonOpt) -> None:
        """Make a token with these scopes; it is printed once, here."""
        r = call("POST", "/tokens", json_body={"name": name, "scopes": scope})
        if as_json:
            sys.stdout.write(json.dumps(r) + "\n")
            return
        out.print(f"token {r['id']} {escape(r['name'])} ({', '.join(r['scopes'])}):", highlight=False)
        out.print(r["token"], highlight=False, markup=False)
        console(stderr=True).print("keep it now: the server stores only its hash", highlight=False)

    @tokens_app.command("list")
    @one_line_errors
    def list_(as_json: bool = JsonOpt) -> None:
        """Every token (never their text), revoked ones marked."""
        rows = call("GET", "/tokens")
        if as_json:
            sys.stdout.write(json.dumps(rows) + "\n")
            return
        table = Table("id", "name", "scopes", "created", "revoked")
        for r in rows:
            table.add_row(str(r["id"]), escape(r["name"]), ", ".join(r["scopes"]), _when(r["created_at"]),
                          _when(r["revoked_at"]))
        out.print(table)

    @tokens_app.command("revoke")
    @one_line_errors
    def revoke(token_id: int = typer.Argument(..., min=1, help="the token's id (tokens list)")) -> None:
        """Revoke a token: from now on it is refused."""
        r = call("DELETE", api_path("tokens", token_id))
        out.print(f"revoked token {r['id']} {escape(r['name'])}", highlight=False)

    app.add_typer(tokens_app, name="tokens")

    @app.command("audit")
    @one_line_errors
    def audit(limit: int = typer.Option(50, min=1, max=10000), token: Optional[int] = typer.Option(
                  None, min=1, help="only this token's calls"), as_json: bool = JsonOpt) -> None:
        """The audit trail of state-changing API calls, newest first."""
        rows = call("GET", "/audit", params={"limit": limit, **({"token": token} if token else {})})
        if as_json:
            sys.stdout.write(json.dumps(rows) + "\n")
            return
        table = Table("time", "token", "call", "status", "result")
        for r in rows:
            who = f"{r['token_id']} {r['token_name']}" if r["token_id"] is not None else "(none)"
            table.add_row(_when(r["ts"]), escape(who), escape(f"{r['method']} {r['path']}"), str(r["status"]),
                          escape(r["result"]))
        out.print(table)
