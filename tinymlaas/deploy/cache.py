"""The compile cache: one build per (model, backend, precision, target features), shared by every
device.

``key`` is the sha256 of everything that determines the artifact's bytes: the model's and
its calibration set's sha256, the version's import options and side files
(``ModelEntry.identity``: input shapes, input layout, the sha256 of each external-data file),
backend, precision, the target features the build depends on and the fingerprint of the
compiler that builds it (``compiler_fingerprint``: the tinymlaas package version, a sha256 of
the source files of the backend's package and of the compiler core - ``compilers/`` outside
the backend sub-packages, ``tinymlaas/builds.py`` and ``tinymlaas/model_import.py`` - and the
versions of the tool distributions in ``TOOLCHAIN``), so any change to the compiler code is a
cache miss. The fingerprint is computed once per process (a changed compiler runs in a new one)
and kept in the row's ``compiler`` column. A fleet of 1,000 identical boards therefore compiles
once; so do
1,000 different boards when the artifact does not depend on them (a TFLM flatbuffer is the
same for every board: each board's operator list is checked at decision time, not baked in).

``get`` returns a ``Built`` (the backend's ``Artifact``: bytes, measured needs, tensors, MACs)
from memory, else from disk (``<dir>/<key>.bin`` plus its ``artifacts`` row, whose ``figures``
hold ``Artifact.describe()``), else compiles with the installed backend
(``tinymlaas.builds``). Only backends whose artifacts a device runs are cached. ``workers=0``
compiles in this process, one build at a time, on a worker thread (the CLI's ``models inspect``
without a server: no process start-up; its builds land in the same cache the server reads).
Concurrent requests for the same key share one future, so one compilation serves them all; a
failed build is remembered (in memory, for this process) so a fleet does not retry it per device.
Compilation runs in a spawned worker process (``ProcessPoolExecutor``): it is CPU-bound Python
and would otherwise hold the GIL and stall the CoAP event loop; artifact files are read and
written on a worker thread too. The artifact file is written atomically before its row is
committed, so a crash never leaves a row without its bytes.

``prune`` (``tinymlaas cache prune``) removes what no build can reach any more: rows written by
another compiler fingerprint (or before fingerprints were recorded) or for a model the registry
no longer has, rows whose file is gone, and files without a row (``.part`` leftovers included).

What it does not do: decide (``choice``), sign (``signing``) or evict by age or size (artifacts
are small and content-addressed).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import importlib.util
import json
import multiprocessing
import re
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, select

import compilers
from compilers.backends import registry
from compilers.backends.base import Artifact
from tinymlaas import __version__
from tinymlaas.registry import ModelEntry
from tinymlaas.store import Store
from tinymlaas.store.tables import ARTIFACTS, MODELS

# Distributions whose version changes what a build produces or measures (the Wasm compiler,
# the TFLM interpreter that measures arenas, the flatbuffer writer, the model reader).
TOOLCHAIN = ("ziglang", "tflite-micro", "flatbuffers", "onnx")


class CompileFailed(ValueError):
    """The model does not build for this backend and precision (message from the compiler)."""


@dataclass(frozen=True)
class Built:
    key: str
    features: tuple[str, ...]
    artifact: Artifact = field(repr=False)
    sha256: str  # of ``artifact.data``

    @property
    def backend(self) -> str:
        return self.artifact.backend

    @property
    def precision(self) -> str:
        return self.artifact.precision

    @property
    def data(self) -> bytes:
        return self.artifact.data


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "-"


_BACKEND_IMPORT = re.compile(rb"compilers\.backends\.(\w+)|from \.\.(\w+)")


def _sources(backend_module: str) -> list[Path]:
    """The files of the backend's package (or lone module), of the in-tree backend packages it
    imports (the Wasm backend compiles the C backend's code), of the compiler core
    (``compilers/`` outside the backend sub-packages), ``tinymlaas/builds.py`` and
    ``tinymlaas/model_import.py`` (how a model version is imported)."""
    package = backend_module.rpartition(".")[0] or backend_module
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise LookupError(f"cannot find the source of backend module {backend_module}")
    if spec.submodule_search_locations:
        own = sorted(p for d in spec.submodule_search_locations for p in Path(d).rglob("*.py"))
    else:
        own = [Path(str(spec.origin))]
    root = Path(compilers.__file__).parent
    in_tree = {p.parent.name: p.parent for p in (root / "backends").glob("*/__init__.py")}
    used: list[Path] = []
    todo, seen = list(own), {p.parent.name for p in own if p.parent.parent == root / "backends"}
    while todo:
        for match in _BACKEND_IMPORT.finditer(todo.pop().read_bytes()):
            name = (match.group(1) or match.group(2)).decode()
            if name in in_tree and name not in seen:
                seen.add(name)
                files = sorted(in_tree[name].rglob("*.py"))
                used += files
                todo += files
    core = sorted(p for p in root.rglob("*.py") if not any(d in p.parents for d in in_tree.values()))
    here = []
    for module in ("tinymlaas.builds", "tinymlaas.model_import"):
        spec_of = importlib.util.find_spec(module)
        assert spec_of is not None and spec_of.origin is not None
        here.append(Path(spec_of.origin))
    return own + used + core + here


@functools.lru_cache(maxsize=None)
def compiler_fingerprint(backend: str) -> str:
    """32 hex digits naming the compiler that builds ``backend``'s artifacts in this process."""
    digest = hashlib.sha256()
    for path in _sources(type(registry.get(backend)).__module__):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    ident = {"tinymlaas": _version("tinymlaas") if _version("tinymlaas") != "-" else __version__,
             "sources": digest.hexdigest(), "tools": {t: _version(t) for t in TOOLCHAIN}}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


def cache_key(entry: ModelEntry, backend: str, precision: str, features: tuple[str, ...]) -> str:
    cal = entry.calibration.stem if entry.calibration is not None else None
    text = json.dumps({"model": entry.sha256, "calibration": cal, "import": entry.identity(), "backend": backend,
                       "precision": precision, "features": sorted(features),
                       "compiler": compiler_fingerprint(backend)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def compile_artifact(entry: ModelEntry, backend: str, precision: str) -> tuple[bytes, dict[str, Any]]:
    """In the worker: build with ``tinymlaas.builds``; (artifact bytes, its description)."""
    from compilers.errors import CompilerError
    from tinymlaas.builds import BuildError, build

    try:
        art = build(entry, backend, precision).artifact
    except (CompilerError, BuildError, ValueError) as exc:
        raise CompileFailed(f"{backend} {precision}: {exc}") from None
    return art.data, art.describe()


def _read_checked(path: Path, sha256: str) -> bytes | None:
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return None
    return blob if hashlib.sha256(blob).hexdigest() == sha256 else None


def _write_atomic(directory: Path, key: str, blob: bytes) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f"{key}.part"
    tmp.write_bytes(blob)
    tmp.replace(directory / f"{key}.bin")


class CompileCache:
    def __init__(self, directory: Path, store: Store, workers: int = 1) -> None:
        self.dir = directory
        self.store = store
        self.workers = workers
        self.memory: dict[str, "asyncio.Future[Built]"] = {}  # key -> the build (done or in flight)
        self._pool: ProcessPoolExecutor | None = None
        self.compiles = 0  # builds this process ran
        self.hits = 0  # answered from memory or disk, or joined a build in flight
        self._inline = asyncio.Lock() if workers == 0 else None  # workers=0: one build at a time, in-process

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def get(self, entry: ModelEntry, backend: str, precision: str, features: tuple[str, ...] = ()) -> Built:
        if backend not in registry.deliverable():
            raise CompileFailed(f"backend {backend!r} makes no deliverable artifact "
                                f"(deliverable: {', '.join(registry.deliverable()) or 'none installed'})")
        key = cache_key(entry, backend, precision, features)
        task = self.memory.get(key)
        if task is not None:
            self.hits += 1
        else:  # its own task: a requester that is cancelled does not cancel the others' build
            task = asyncio.ensure_future(self._produce(key, entry, backend, precision, features))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # failures are remembered, not logged
            self.memory[key] = task
        return await asyncio.shield(task)

    async def lookup(self, key: str) -> Built | None:
        """A build by its key, if this cache has it (in memory or on disk); never compiles."""
        task = self.memory.get(key)
        if task is not None and task.done() and not task.cancelled() and task.exception() is None:
            return task.result()
        return await self._load(key)

    async def _produce(self, key: str, entry: ModelEntry, backend: str, precision: str,
                       features: tuple[str, ...]) -> Built:
        return await self._load(key) or await self._compile(key, entry, backend, precision, features)

    async def _load(self, key: str) -> Built | None:
        row = await self.store.read(lambda c: c.execute(select(ARTIFACTS).where(ARTIFACTS.c.key == key)).first())
        if row is None:
            return None
        blob = await asyncio.to_thread(_read_checked, self.dir / f"{key}.bin", row.sha256)
        if blob is None:
            return None  # missing or damaged: build it again
        try:
            artifact = Artifact.restore(blob, row.figures)
        except (KeyError, TypeError, ValueError):
            return None  # written by an older release: build it again
        self.hits += 1
        return Built(key, tuple(filter(None, row.features.split(","))), artifact, row.sha256)

    async def _compile(self, key: str, entry: ModelEntry, backend: str, precision: str,
                       features: tuple[str, ...]) -> Built:
        loop = asyncio.get_running_loop()
        self.compiles += 1
        if self._inline is not None:
            async with self._inline:
                blob, described = await asyncio.to_thread(compile_artifact, replace(entry, notes=()), backend,
                                                          precision)
        else:
            blob, described = await loop.run_in_executor(self._executor(), compile_artifact,
                                                         replace(entry, notes=()), backend, precision)
        sha = hashlib.sha256(blob).hexdigest()
        await asyncio.to_thread(_write_atomic, self.dir, key, blob)
        row = {"key": key, "model_sha256": entry.sha256, "backend": backend, "precision": precision,
               "features": ",".join(features), "sha256": sha, "size": len(blob), "figures": described,
               "created_at": time.time(), "compiler": compiler_fingerprint(backend)}

        def save(c: Any) -> None:
            if c.execute(select(ARTIFACTS.c.key).where(ARTIFACTS.c.key == key)).first() is None:
                c.execute(insert(ARTIFACTS).values(**row))
        await self.store.write(save)
        return Built(key, features, Artifact.restore(blob, described), sha)


@dataclass(frozen=True)
class Pruned:
    rows: int  # artifacts rows removed
    files: int  # files removed from the cache directory
    bytes_freed: int


def prune(store: Store, directory: Path, dry_run: bool = False) -> Pruned:
    """Remove the artifacts no build can reach any more (see the module doc); with ``dry_run``
    only count them. Safe beside a running server: a build whose row or file went is rebuilt."""
    current = {name: compiler_fingerprint(name) for name in registry.deliverable()}

    def dead(c: Any) -> tuple[list[str], set[str]]:
        models = {r.sha256 for r in c.execute(select(MODELS.c.sha256))}
        rows = list(c.execute(select(ARTIFACTS.c.key, ARTIFACTS.c.backend, ARTIFACTS.c.compiler,
                                     ARTIFACTS.c.model_sha256)))
        gone = [r.key for r in rows if current.get(r.backend) != r.compiler or r.model_sha256 not in models
                or not (directory / f"{r.key}.bin").is_file()]
        return gone, {r.key for r in rows} - set(gone)

    gone, keep = store.read_sync(dead)
    recent = time.time() - 600  # a .part this young may be a build being written now

    def orphan(p: Path) -> bool:
        if p.suffix == ".bin":
            return p.stem not in keep
        return p.suffix == ".part" and p.stat().st_mtime < recent

    files = [p for p in directory.iterdir() if p.is_file() and orphan(p)] if directory.is_dir() else []
    freed = sum(p.stat().st_size for p in files)
    if not dry_run:
        if gone:
            store.write_sync(lambda c: c.execute(delete(ARTIFACTS).where(ARTIFACTS.c.key.in_(gone))))
        for p in files:
            p.unlink(missing_ok=True)
    return Pruned(len(gone), len(files), freed)
