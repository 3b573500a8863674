"""CLI: ``tinymlaas profiles list|show|add|rm`` — the device profiles (real boards).

While a server runs (``api.json`` in the data directory names one that answers) these ask it:
what it knows is what its deployment decisions use, profiles added at run time included, and
``add``/``rm`` change it at once. With no server running they work on the profile files and the
profiles stored in the database that server uses (``--db`` / ``$TINYMLAAS_DB`` / its
``api.json`` / the default), so the next ``serve`` has them. ``--profiles-dir`` also reads a
directory of files locally (a server's own directories are given to ``serve``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from rich.markup import escape
from rich.table import Table

from tinymlaas.cli.client import CliError, OneLineErrors, api_path, call, local_db, running
from tinymlaas.cli.terminal import console

profiles_app = typer.Typer(help="Device profiles: real MCUs and what they leave free for ML.", no_args_is_help=True)
out = console()
DirsOpt = typer.Option(None, "--profiles-dir", help="also read this directory of profile files, locally (repeatable)")
DbOpt = typer.Option(None, "--db", envvar="TINYMLAAS_DB", help="with no server running: its database URL")


def kib(n: int) -> str:
    return f"{n / 1024:,.0f} KiB" if n < 64 * 1024 * 1024 else f"{n / 2**20:,.0f} MiB"


def _book(dirs: Optional[list[str]], db: str | None) -> Any:
    from tinymlaas.server.profiles import ProfileBook
    from tinymlaas.store import Store

    store = Store(local_db(db))
    book = ProfileBook(store, dirs or ())
    for problem in book.load(store.read_sync(ProfileBook.sql_load)):
        console(stderr=True).print(f"[yellow]warning:[/] stored profile left out: {escape(problem)}", highlight=False)
    return book


def rows(dirs: Optional[list[str]], db: str | None) -> list[dict[str, Any]]:
    """Every profile, from the running server (unless --profiles-dir) or locally."""
    if not dirs and running():
        return call("GET", "/profiles")  # type: ignore[no-any-return]
    from tinymlaas.server.profiles import profile_row

    book = _book(dirs, db)
    return [profile_row(p, book.origin(p)) for p in sorted(book.all().values(), key=lambda p: p.name)]


def register(app: typer.Typer, one_line_errors: OneLineErrors) -> None:
    @profiles_app.command("list")
    @one_line_errors
    def list_(dirs: Optional[list[str]] = DirsOpt, db: Optional[str] = DbOpt,
              as_json: bool = typer.Option(False, "--json")) -> None:
        """Every known profile with its SRAM and flash, total and free for ML, and where it comes from."""
        found = rows(dirs, db)
        if as_json:
            sys.stdout.write(json.dumps(found, indent=2) + "\n")
            return
        table = Table("name", "core", "MHz", "SRAM total/free", "flash total/free", "runtimes", "origin")
        for p in found:
            table.add_row(p["name"], p["core"], str(p["clock_mhz"]), f"{kib(p['sram_total'])} / {kib(p['sram_free'])}",
                          f"{kib(p['flash_total'])} / {kib(p['flash_free'])}", ", ".join(p["runtimes"]), p["origin"])
        out.print(table)

    @profiles_app.command("show")
    @one_line_errors
    def show(name: str, dirs: Optional[list[str]] = DirsOpt, db: Optional[str] = DbOpt,
             as_json: bool = typer.Option(False, "--json")) -> None:
        """One profile in full, with its datasheet references."""
        found = {p["name"]: p for p in rows(dirs, db)}
        if name not in found:
            raise CliError(f"unknown device profile {name!r}; known profiles: {', '.join(sorted(found))}")
        row = found[name]
        if as_json:
            sys.stdout.write(json.dumps(row, indent=2) + "\n")
            return
        table = Table("field", "value", title=escape(row["title"]))
        for key, value in row.items():
            table.add_row(key, escape(json.dumps(value) if isinstance(value, (dict, list)) else str(value)))
        out.print(table)

    @profiles_app.command("add")
    @one_line_errors
    def add(file: Path = typer.Argument(..., help="a profile file (TOML, as device_profiles/profiles/*.toml)"),
            db: Optional[str] = DbOpt) -> None:
        """Add (or replace) a profile: validated, then stored in the server's database."""
        text = file.read_text(encoding="utf-8")
        if running():
            p = call("POST", "/profiles", content=text, content_type="application/toml")
            where = "the running server"
        else:
            from tinymlaas.server.profiles import profile_row

            added = _book(None, db).add_sync(text)  # a refused profile: BadRequest naming the key, one line
            p, where = profile_row(added, "database"), "the database (no server running)"
        out.print(f"added profile {p['name']} ({escape(p['title'])}) to {where}", highlight=False)

    @profiles_app.command("rm")
    @one_line_errors
    def rm(name: str, db: Optional[str] = DbOpt) -> None:
        """Remove a profile that was added (shipped ones and profile directories stay)."""
        if running():
            call("DELETE", api_path("profiles", name))
        else:
            _book(None, db).remove_sync(name)
        out.print(f"removed profile {name}")

    app.add_typer(profiles_app, name="profiles")
