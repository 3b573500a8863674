"""``tinymlaas config``, ``tinymlaas db`` and ``tinymlaas cache``: operating a server's installation.

``config show`` prints the effective configuration (``tinymlaas.config``) with the source of every
value and secrets masked; ``config check FILE`` validates one file on its own. ``db upgrade``
brings a database to this release's schema (``tinymlaas.store.migrations``), ``db current``
tells where it is. ``cache prune`` removes compiled artifacts nothing can reach any more
(``tinymlaas.deploy.cache.prune``). None of them needs a running server.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from tinymlaas import config

out = Console()
ConfigOpt = typer.Option(None, "--config", envvar=config.CONFIG_ENV,
                         help="tinymlaas.toml to read (also $TINYMLAAS_CONFIG)")
SetOpt = typer.Option(None, "--set", help="SECTION.KEY=VALUE for any setting (repeatable; see tinymlaas config show)")


def load_for_cli(file: Path | None, assignments: list[str] | None,
                 flags: dict[str, dict[str, Any]] | None = None) -> config.Loaded:
    """The settings with ``--set`` assignments and a command's own flags on top (flags win)."""
    cli = config.parse_assignments(assignments or [])
    for section, values in (flags or {}).items():
        cli.setdefault(section, {}).update(values)
    return config.load(file, cli)


def show_text(loaded: config.Loaded) -> str:
    rows = config.rows(loaded)
    width = max(len(k) for k, _, _ in rows)
    vwidth = min(max(len(v) for _, v, _ in rows), 48)
    head = f"# file: {loaded.file if loaded.file is not None else 'none (--config FILE or $TINYMLAAS_CONFIG)'}"
    return "\n".join([head] + [f"{k:<{width}}  {v:<{vwidth}}  {src}" for k, v, src in rows]) + "\n"


def register(app: typer.Typer, one_line_errors: Any) -> None:
    config_app = typer.Typer(help="The server's configuration: file, environment, flags.", no_args_is_help=True)
    app.add_typer(config_app, name="config")

    @config_app.command("show")
    @one_line_errors
    def show(config_file: Path | None = ConfigOpt, assignments: list[str] | None = SetOpt,
             as_json: bool = typer.Option(False, "--json", help="print JSON for scripts")) -> None:
        """The effective configuration: every setting, its value (secrets masked) and where it came from."""
        loaded = load_for_cli(config_file, assignments)
        if as_json:
            data = [{"key": k, "value": v, "source": s} for k, v, s in config.rows(loaded)]
            sys.stdout.write(json.dumps(data, indent=2) + "\n")
            return
        sys.stdout.write(show_text(loaded))

    @config_app.command("check")
    @one_line_errors
    def check(file: Path = typer.Argument(..., help="a tinymlaas.toml")) -> None:
        """Validate one configuration file on its own (environment and flags left out)."""
        loaded = config.load(file, use_env=False)
        given = sorted(k for k, s in loaded.sources.items() if s.startswith("file "))
        out.print(f"{file}: ok ({len(given)} settings: {', '.join(given) or 'none'})", highlight=False)
