"""Schema migrations (alembic): a database of the release before migrations - loaded from the SQL
dump that release wrote (``fixtures/schema_0001.sql``, made by ``fixtures/make_schema_0001_dump.py``
with that release's code) - is refused until ``tinymlaas db upgrade``, then every row is there and
the server reads it; a database newer than this release is refused in one line; running every
revision from empty gives exactly the tables of ``tinymlaas.store.tables``."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, select, text
from sqlmodel import SQLModel
from typer.testing import CliRunner

from tests.fixtures.make_schema_0001_dump import ROWS
from tinymlaas.cli.main import app
from tinymlaas.registry import ModelRegistry
from tinymlaas.server.server import LwM2MServer
from tinymlaas.store import Store, schema

DUMP = Path(__file__).with_name("fixtures") / "schema_0001.sql"


def release_0001(path: Path) -> str:
    with sqlite3.connect(path) as raw:
        raw.executescript(DUMP.read_text())
    return f"sqlite:///{path}"


def comparable(value: object) -> object:
    return bool(value) if isinstance(value, bool) else value


async def test_the_previous_release_database_upgrades_and_keeps_every_row(tmp_path: Path) -> None:
    url = release_0001(tmp_path / "fleet.db")
    with pytest.raises(schema.SchemaTooOld, match=r"revision 0001, this tinymlaas needs \d{4}: back it up, "
                                                  r"then run 'tinymlaas db upgrade'"):
        Store(url)
    runner = CliRunner()
    assert "revision 0001" in runner.invoke(app, ["db", "current", "--db", url]).output
    result = runner.invoke(app, ["db", "upgrade", "--db", url])
    assert result.exit_code == 0 and f"upgraded from 0001 to revision {schema.head()}" in result.output
    assert "already" in runner.invoke(app, ["db", "upgrade", "--db", url]).output  # idempotent
    store = Store(url)
    try:
        for table, rows in ROWS.items():
            t = SQLModel.metadata.tables[table]
            got = store.read_sync(lambda c, t=t: [dict(r._mapping) for r in c.execute(select(t))])
            assert len(got) == len(rows), table
            for want in rows:  # every row, every value it had
                assert any(all(comparable(g.get(k)) == comparable(v) for k, v in want.items()) for g in got), \
                    (table, want)
        assert store.read_sync(lambda c: c.execute(text("SELECT compiler FROM artifacts")).scalar_one()) == ""
        models = ModelRegistry(tmp_path, store).list("kws")
        assert [(m.version, m.format) for m in models] == [("1", "onnx"), ("2", "tflite")]
    finally:
        store.close()
    server = LwM2MServer(url, read_capabilities=False)  # the server loads what the old release stored
    await server.start("127.0.0.1", 0)
    try:
        assert server.registrations.by_endpoint["node-1"].id == "a1b2c3d4"
        assert server.objects.get(42000).name == "Vendor Thing"  # the imported DDF, parsed again
    finally:
        await server.stop()


def test_a_newer_database_is_refused_in_one_line(tmp_path: Path) -> None:
    db = tmp_path / "future.db"
    Store(f"sqlite:///{db}").close()
    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE alembic_version SET version_num = '9999'")
    proc = subprocess.run([sys.executable, "-m", "tinymlaas", "serve", "--coap", "127.0.0.1:0", "--api", "127.0.0.1:0",
                           "--db", f"sqlite:///{db}", "--data-dir", str(tmp_path / "home")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"error: database sqlite:///{db} has schema revision 9999, newer than this "
                                  f"tinymlaas (it knows up to {schema.head()})")
    refused = CliRunner().invoke(app, ["db", "upgrade", "--db", f"sqlite:///{db}"])
    assert refused.exit_code == 1 and "cannot upgrade it" in refused.output
    assert "newer than this release" in CliRunner().invoke(app, ["db", "current", "--db", f"sqlite:///{db}"]).output


def test_every_revision_from_empty_gives_the_tables(tmp_path: Path) -> None:
    """The migrations and ``tables.py`` describe one schema (a new database is made with create_all)."""
    engine = create_engine(f"sqlite:///{tmp_path / 'migrated.db'}")
    try:
        assert schema.upgrade(engine).before is None
        with engine.connect() as conn:
            assert schema.current(conn) == schema.head()
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                    SQLModel.metadata)
        assert diff == []
    finally:
        engine.dispose()
    Store(f"sqlite:///{tmp_path / 'migrated.db'}").close()  # accepted as current
