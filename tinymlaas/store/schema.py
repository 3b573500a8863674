"""The store's schema version: alembic revisions (``tinymlaas/store/migrations``), checked at every
open and upgraded only on request (``tinymlaas db upgrade``).

``prepare(engine)`` runs when a ``Store`` opens its database:

- an empty database gets the tables of ``tinymlaas.store.tables`` and is stamped with the newest
  revision (the same schema as running every revision from the first: a test compares them);
- a database at the newest revision is used as it is;
- an older one (a known revision, or the tables of the release before migrations, which is
  revision 0001 without the ``alembic_version`` table) is refused with ``SchemaTooOld``, which
  says to run ``tinymlaas db upgrade``: nothing is altered behind the operator's back;
- a newer one (a revision this release does not know) is refused with ``SchemaTooNew``.

Both errors are one line naming the database (password masked) and both revisions.
``upgrade(engine)`` applies the missing revisions in one transaction per revision;
``autogenerate`` writes the next revision file from the difference between the tables and the
newest revision (for developers, in a source checkout).

What it does not do: downgrade (restore the backup taken before upgrading instead) or migrate
data between databases.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, create_engine, inspect
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from tinymlaas.store import tables  # noqa: F401  (registers the tables on SQLModel.metadata)

MIGRATIONS = Path(__file__).with_name("migrations")
BASELINE = "0001"  # the schema of the release before migrations (tables, no alembic_version)


class SchemaError(ValueError):
    """A database whose schema this release cannot use as it is; the message says what to do."""


class SchemaTooOld(SchemaError):
    pass


class SchemaTooNew(SchemaError):
    pass


@dataclass(frozen=True)
class Upgraded:
    before: str | None  # revision before (None: empty database)
    after: str


def _config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


@functools.lru_cache(maxsize=1)
def scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head() -> str:
    rev = scripts().get_current_head()
    assert rev is not None, "no migration revisions shipped"
    return rev


def _name(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def current(connection: Connection) -> str | None:
    """The database's revision; ``BASELINE`` for the pre-migration tables; None when empty."""
    rev = MigrationContext.configure(connection).get_current_revision()
    if rev is None and inspect(connection).has_table("devices"):
        return BASELINE
    return rev


def known(rev: str) -> bool:
    try:
        return scripts().get_revision(rev) is not None
    except CommandError:
        return False


def prepare(engine: Engine) -> None:
    """Create an empty database, accept one at head, refuse anything else (see the module doc)."""
    with engine.begin() as conn:
        rev = current(conn)
        if rev is None:
            SQLModel.metadata.create_all(conn)
            MigrationContext.configure(conn).stamp(scripts(), "head")
            return
    if rev == head():
        return
    if not known(rev):
        raise SchemaTooNew(f"database {_name(engine)} has schema revision {rev}, newer than this tinymlaas "
                           f"(it knows up to {head()}): run the release that wrote it")
    raise SchemaTooOld(f"database {_name(engine)} has schema revision {rev}, this tinymlaas needs {head()}: "
                       "back it up, then run 'tinymlaas db upgrade'")


def upgrade(engine: Engine) -> Upgraded:
    """Apply every missing revision (an empty database gets all of them)."""
    with engine.begin() as conn:
        before = current(conn)
        if before is not None and not known(before):
            raise SchemaTooNew(f"database {_name(engine)} has schema revision {before}, newer than this "
                               f"tinymlaas (it knows up to {head()}): cannot upgrade it")
        if before == BASELINE and MigrationContext.configure(conn).get_current_revision() is None:
            MigrationContext.configure(conn).stamp(scripts(), BASELINE)  # the pre-migration release
        command.upgrade(_config(conn), "head")
    return Upgraded(before, head())


def autogenerate(message: str) -> Path:
    """Write the next revision from the difference between the tables and the newest revision."""
    number = f"{int(head()) + 1:04d}"
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{tmp}/head.db")
        try:
            with engine.begin() as conn:
                command.upgrade(_config(conn), "head")
                script = command.revision(_config(conn), message, autogenerate=True, rev_id=number)
        finally:
            engine.dispose()
    scripts.cache_clear()
    assert script is not None and not isinstance(script, list)
    return Path(script.path)
