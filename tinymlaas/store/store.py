"""The store: one writer thread that commits batches, so the event loop never waits on disk.

``await store.write(fn)`` queues ``fn(connection)``; the writer thread takes everything queued
while its previous commit ran, runs each function in its own SAVEPOINT (one failing write
does not undo the others) and commits the batch once. The coroutine resumes only after that
commit: an acknowledged registration is in the database (for SQLite: in the WAL file, which
survives a kill -9 of this process; ``synchronous=NORMAL`` skips the fsync per commit, so
only an OS crash or power loss can lose the last batches). ``await store.read(fn)`` runs a
query on a worker thread.

Any SQLAlchemy URL works (PostgreSQL by URL); SQLite gets WAL mode. This module knows the
tables only to create them; what to write is the callers' business.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from pathlib import Path
from typing import Any, Callable, TypeVar

from sqlalchemy import Connection, create_engine, event
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from tinymlaas.store import tables  # noqa: F401  (registers the tables on SQLModel.metadata)

T = TypeVar("T")
log = logging.getLogger(__name__)

MAX_BATCH = 2000


def default_url(home: Path) -> str:
    return f"sqlite:///{home / 'tinymlaas.db'}"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    return engine


_Job = tuple[Callable[[Connection], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


class Store:
    """The database behind one server. ``start()`` before use, ``close()`` at the end."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        SQLModel.metadata.create_all(self.engine)
        self._jobs: "queue.SimpleQueue[_Job | None]" = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.writes = 0

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

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in the next batch; return its result once the batch is committed."""
        if self._thread is None:
            raise RuntimeError("store is not started")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, loop, fut))
        return await fut

    async def read(self, fn: Callable[[Connection], T]) -> T:
        return await asyncio.to_thread(self.read_sync, fn)

    def read_sync(self, fn: Callable[[Connection], T]) -> T:
        with self.engine.connect() as conn:
            return fn(conn)

    def write_sync(self, fn: Callable[[Connection], T]) -> T:
        """For start-up and tools, before the event loop runs: one function, one commit."""
        with self.engine.begin() as conn:
            return fn(conn)

    # -- the writer thread --------------------------------------------------------------

    def _writer(self) -> None:
        stop = False
        while not stop:
            first = self._jobs.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                batch.append(job)
            self._commit(batch)

    def _commit(self, batch: list[_Job]) -> None:
        results: list[tuple[bool, Any]] = []
        try:
            with self.engine.begin() as conn:
                for fn, _loop, _fut in batch:
                    try:
                        with conn.begin_nested():
                            results.append((True, fn(conn)))
                    except Exception as exc:  # one bad write fails alone
                        results.append((False, exc))
        except Exception as exc:  # the commit itself failed: nothing of the batch landed
            log.exception("store commit failed")
            results = [(False, exc)] * len(batch)
        self.batches += 1
        self.writes += len(batch)
        for (_fn, loop, fut), (ok, value) in zip(batch, results):
            loop.call_soon_threadsafe(_settle, fut, ok, value)


def _settle(fut: "asyncio.Future[Any]", ok: bool, value: Any) -> None:
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)
