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
from typing import Any, Optional

import typer

from tinymlaas import config
from tinymlaas.cli.client import OneLineErrors



def say(line: str) -> None:
    """One line on stdout as it is (no wrapping: scripts and logs read it)."""
    sys.stdout.write(line + "\n")


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


def database_url(settings: config.Settings) -> str:
    from tinymlaas.store.store import default_url

    return settings.database.url or default_url(settings.data.home)


def show_text(loaded: config.Loaded) -> str:
    rows = config.rows(loaded)
    width = max(len(k) for k, _, _ in rows)
    vwidth = min(max(len(v) for _, v, _ in rows), 48)
    head = f"# file: {loaded.file if loaded.file is not None else 'none (--config FILE or $TINYMLAAS_CONFIG)'}"
    return "\n".join([head] + [f"{k:<{width}}  {v:<{vwidth}}  {src}" for k, v, src in rows]) + "\n"


def register(app: typer.Typer, one_line_errors: OneLineErrors) -> None:
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
        say(f"{file}: ok ({len(given)} settings: {', '.join(given) or 'none'})")

    db_app = typer.Typer(help="The database schema: where it is, and upgrading it.", no_args_is_help=True)
    app.add_typer(db_app, name="db")
    DbOpt = typer.Option(None, "--db", help="SQLAlchemy URL (database.url; default: SQLite in the data dir)")

    def db_engine(file: Path | None, db: str | None) -> Any:
        from tinymlaas.store.store import make_engine

        settings = load_for_cli(file, None, {"database": {"url": db}} if db else None).settings
        settings.data.home.mkdir(parents=True, exist_ok=True)
        return make_engine(database_url(settings))

    @db_app.command("upgrade")
    @one_line_errors
    def db_upgrade(db: Optional[str] = DbOpt, config_file: Optional[Path] = ConfigOpt) -> None:
        """Bring the database to this release's schema (back it up first; there is no downgrade)."""
        from tinymlaas.store import schema

        engine = db_engine(config_file, db)
        try:
            done = schema.upgrade(engine)
        finally:
            engine.dispose()
        name = engine.url.render_as_string(hide_password=True)
        if done.before == done.after:
            say(f"{name}: at revision {done.after} already")
        else:
            say(f"{name}: upgraded from {done.before or 'empty'} to revision {done.after}")

    @db_app.command("current")
    @one_line_errors
    def db_current(db: Optional[str] = DbOpt, config_file: Optional[Path] = ConfigOpt) -> None:
        """The database's schema revision and this release's."""
        from tinymlaas.store import schema

        engine = db_engine(config_file, db)
        try:
            with engine.connect() as conn:
                rev = schema.current(conn)
        finally:
            engine.dispose()
        state = ("up to date" if rev == schema.head() else "empty" if rev is None
                 else "run 'tinymlaas db upgrade'" if schema.known(rev) else "newer than this release")
        say(f"{engine.url.render_as_string(hide_password=True)}: revision {rev or '-'}, this release "
            f"{schema.head()} ({state})")

    @db_app.command("revision", hidden=True)
    @one_line_errors
    def db_revision(message: str = typer.Option(..., "-m", help="what the revision changes")) -> None:
        """(Developers) write the next migration from the difference between tables.py and the newest one."""
        from tinymlaas.store import schema

        say(f"wrote {schema.autogenerate(message)}")

    cache_app = typer.Typer(help="The compile cache (compiled artifacts in the data dir).", no_args_is_help=True)
    app.add_typer(cache_app, name="cache")

    @cache_app.command("prune")
    @one_line_errors
    def cache_prune(dry_run: bool = typer.Option(False, "--dry-run", help="only count what would go"),
                    db: Optional[str] = DbOpt, config_file: Optional[Path] = ConfigOpt) -> None:
        """Remove compiled artifacts no build can reach: another compiler's, a removed model's, orphans."""
        from tinymlaas.deploy.cache import prune
        from tinymlaas.store import Store

        settings = load_for_cli(config_file, None, {"database": {"url": db}} if db else None).settings
        store = Store(database_url(settings))
        try:
            done = prune(store, settings.data.home / "artifacts", dry_run=dry_run)
        finally:
            store.close()
        verb = "would remove" if dry_run else "removed"
        say(f"{verb} {done.rows} artifact rows and {done.files} files ({done.bytes_freed:,} bytes)")
