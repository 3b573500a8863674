"""The store: one writer thread that commits batches, so the event loop never waits on disk.

Two kinds of write, both acknowledged only after the batch that holds them committed:

- ``await store.put(Row(stmt, params), ...)``: rows for prepared ``Statement``s (the hot path:
  registrations, updates, events). The writer groups the rows of a batch by statement and
  runs each statement once with ``executemany``; rows that touch the same key (endpoint)
  twice in one batch start a new group, so their order is kept.
- ``await store.write(fn)``: any ``fn(connection)`` (rare writes: imports, snapshots).

A batch is everything queued while the previous commit ran. If its transaction fails, each
job is retried alone, so one bad write fails by itself and the others land. For SQLite the
database runs in WAL mode with ``synchronous=NORMAL``: a commit is in the WAL file (which
survives a kill -9 of this process) without an fsync per commit; only an OS crash or power
loss can lose the last batches. ``await store.read(fn)`` runs a query on a worker thread.

Any SQLAlchemy URL works (PostgreSQL by URL, with a connection pool). Opening a store checks the
schema version (``schema.prepare``: an empty database is created, an older or newer one is
refused with what to do); which rows to write is the callers' business.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from sqlalchemy import Connection, TextClause, create_engine, event
from sqlalchemy.engine import Engine
from tinymlaas.store import schema

T = TypeVar("T")
log = logging.getLogger(__name__)

MAX_BATCH = 4000


def default_url(home: Path) -> str:
    return f"sqlite:///{home / 'tinymlaas.db'}"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def make_engine(url: str, pool_size: int = 5, max_overflow: int = 10) -> Engine:
    """SQLite with the pragmas above; any other URL with a connection pool of ``pool_size``
    connections (plus ``max_overflow`` under load), checked before use."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=pool_size, max_overflow=max_overflow)
    return engine


@dataclass(frozen=True, eq=False)
class Statement:
    """A prepared statement for ``put``.

    ``key`` names the parameter that identifies the row (rows with the same key in one batch
    keep their order); ``json`` names parameters bound to JSON columns (declare them with
    ``bindparam(name, type_=JSON)`` in ``sql`` as well, for the general path).
    """

    name: str
    sql: TextClause
    key: str = "endpoint"
    json: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Row:
    stmt: Statement
    params: dict[str, Any]


class _Job:
    """One ``put`` or ``write`` waiting for the next batch (plain slots: one per registration)."""

    __slots__ = ("loop", "future", "rows", "fn", "ok", "result", "keys")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: "asyncio.Future[Any]", rows: Sequence[Row] = (),
                 fn: Callable[[Connection], Any] | None = None, keys: frozenset[Any] = frozenset()) -> None:
        self.loop, self.future, self.rows, self.fn, self.keys = loop, future, rows, fn, keys
        self.ok: bool = True
        self.result: Any = None

    def run(self, conn: Connection) -> None:
        if self.fn is not None:
            self.result = self.fn(conn)
        else:
            for row in self.rows:
                execute_many(conn, row.stmt, [row.params])


class Store:
    """The database behind one server. ``start()`` before use, ``close()`` at the end."""

    def __init__(self, url: str, *, pool_size: int = 5, max_overflow: int = 10) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size, max_overflow)
        try:
            schema.prepare(self.engine)  # creates an empty database; refuses an older or newer schema
        except BaseException:
            self.engine.dispose()
            raise
        self._jobs: "queue.SimpleQueue[_Job | None]" = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.jobs = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._writer, name="tinymlaas-store", daemon=True)
            self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(timeout=30)
            self._thread = None
        self.engine.dispose()

    def _submit(self, job: _Job) -> "asyncio.Future[Any]":
        if self._thread is None:
            raise RuntimeError("store is not started")
        self._jobs.put(job)
        return job.future

    async def put(self, *rows: Row) -> None:
        """Write these rows in the next batch, in one transaction with it."""
        loop = asyncio.get_running_loop()
        keys = frozenset(r.params[r.stmt.key] for r in rows)
        await self._submit(_Job(loop, loop.create_future(), rows=rows, keys=keys))

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in the next batch; return its result once the batch is committed."""
        loop = asyncio.get_running_loop()
        return await self._submit(_Job(loop, loop.create_future(), fn=fn))  # type: ignore[no-any-return]

    async def read(self, fn: Callable[[Connection], T]) -> T:
        return await asyncio.to_thread(self.read_sync, fn)

    def read_sync(self, fn: Callable[[Connection], T]) -> T:
        with self.engine.connect() as conn:
            return fn(conn)

    def write_sync(self, fn: Callable[[Connection], T]) -> T:
        """For tools and tests outside the event loop: one function, one commit."""
        with self.engine.begin() as conn:
            return fn(conn)

    # -- the writer thread --------------------------------------------------------------

    def _writer(self) -> None:
        with self.engine.connect() as conn:  # one connection for the thread's life: no pool round trips
            self._write_batches(conn)

    def _write_batches(self, conn: Connection) -> None:
        while True:
            first = self._jobs.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                batch.append(job)
            self._commit(conn, batch)
            if stop:
                return

    def _commit(self, conn: Connection, batch: list[_Job]) -> None:
        try:
            with conn.begin():
                _run_grouped(conn, batch)
        except Exception:
            log.warning("batch of %d writes failed; retrying them one by one", len(batch), exc_info=True)
            for job in batch:
                try:
                    if conn.invalidated:
                        conn.rollback()  # a lost database connection reconnects on next use
                    with conn.begin():
                        job.run(conn)
                    job.ok = True
                except Exception as exc:
                    job.ok, job.result = False, exc
        self.batches += 1
        self.jobs += len(batch)
        by_loop: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
        for job in batch:
            by_loop.setdefault(job.loop, []).append(job)
        for loop, jobs in by_loop.items():  # one wake-up per loop and batch
            try:
                loop.call_soon_threadsafe(_settle, jobs)
            except RuntimeError:  # that loop is closed: nobody is waiting any more
                pass


_compiled: dict[tuple[Statement, str], tuple[str, tuple[str, ...]]] = {}


def execute_many(conn: Connection, stmt: Statement, params: list[dict[str, Any]]) -> None:
    """One executemany. On SQLite the statement is compiled once and its rows go to the driver
    as tuples (SQLAlchemy's per-row processing is a third of the cost of a registration's
    writes); elsewhere SQLAlchemy binds them, JSON columns included."""
    dialect = conn.dialect
    if dialect.name != "sqlite":
        conn.execute(stmt.sql, params)
        return
    key = (stmt, dialect.name)
    if key not in _compiled:
        compiled = stmt.sql.compile(dialect=dialect)
        _compiled[key] = (str(compiled), tuple(compiled.positiontup or ()))
    sql, order = _compiled[key]
    if stmt.json:
        params = [{**p, **{k: json.dumps(p[k]) for k in stmt.json}} for p in params]
    conn.exec_driver_sql(sql, [tuple(p[k] for k in order) for p in params])


def _run_grouped(conn: Connection, batch: list[_Job]) -> None:
    """Run the batch in order; consecutive row jobs on distinct keys share one executemany."""
    group: dict[Statement, list[dict[str, Any]]] = {}
    keys: set[Any] = set()

    def flush() -> None:
        for stmt, params in group.items():
            execute_many(conn, stmt, params)
        group.clear()
        keys.clear()

    for job in batch:
        if job.fn is not None:
            flush()
            job.result = job.fn(conn)
            continue
        if keys & job.keys:
            flush()
        keys.update(job.keys)
        for row in job.rows:
            group.setdefault(row.stmt, []).append(row.params)
    flush()


def _settle(jobs: list[_Job]) -> None:
    for job in jobs:
        if job.future.done():
            continue
        if job.ok:
            job.future.set_result(job.result)
        else:
            job.future.set_exception(job.result)
