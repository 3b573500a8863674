"""Alembic migrations of the store's schema: ``env.py`` and one file per revision in ``versions/``.

Run through ``tinymlaas.store.schema`` (``tinymlaas db upgrade``), not the ``alembic`` command:
the script location is this package, the connection the store's. Adding a table or column:
change ``tinymlaas/store/tables.py``, then add ``versions/NNNN_what.py`` with ``revision =
"NNNN"`` and ``down_revision`` the previous head (``tinymlaas db revision -m WHAT`` writes one
from the difference between the tables and the newest revision), and add rows of the new
table to the upgrade test's checks. Each revision's ``upgrade`` must work on SQLite and
PostgreSQL (use ``op.batch_alter_table`` for changes SQLite cannot ALTER).
"""
