"""The compile cache and the server's signing key, over a real SQLite store and real builds.

Builds run in the cache's spawned worker process, as in the server: the bundled mnist-8 (TFLM
int8 ~9.4 KB flatbuffer, 9,984 B arena) and a one-node HardSigmoid model that neither TFLM
emitter nor the int8 lowering accepts (a real compiler refusal).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import time
from pathlib import Path
from typing import AsyncIterator

import pytest
from sqlalchemy import func, select

from tinymlaas.bundled import MNIST, MNIST_SHA256
from tinymlaas.deploy.cache import CompileCache, CompileFailed, cache_key
from tinymlaas.deploy.signing import KEY_FILE, ServerKey
from lwm2m.package import PackageError, open_package
from tinymlaas.registry import ModelEntry
from tinymlaas.store import Store
from tinymlaas.store.tables import ARTIFACTS

pytestmark = pytest.mark.both_databases

MNIST_ENTRY = ModelEntry("mnist", "1", MNIST_SHA256, "onnx", MNIST.stat().st_size, MNIST, None, 0.0)


def hard_sigmoid_model(path: Path) -> ModelEntry:
    """x[1,8] -> HardSigmoid -> y: reads fine, builds for no backend/precision of TFLM (TFLM has
    no HARD_SIGMOID kernel, and no integer kernel of ours computes it)."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])
    graph = helper.make_graph([helper.make_node("HardSigmoid", ["x"], ["y"])], "hs", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    data = model.SerializeToString()
    path.write_bytes(data)
    return ModelEntry("hs", "1", hashlib.sha256(data).hexdigest(), "onnx", len(data), path, None, 0.0)


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = Store(db_url)
    s.start()
    yield s
    s.close()


@pytest.fixture
async def caches(tmp_path: Path, store: Store):
    """A factory of caches over the same directory and database; all closed at the end."""
    made: list[CompileCache] = []

    def make(directory: Path | None = None) -> CompileCache:
        made.append(CompileCache(directory or tmp_path / "artifacts", store))
        return made[-1]

    yield make
    for c in made:
        c.close()


def rows(store: Store) -> int:
    return store.read_sync(lambda c: c.execute(select(func.count()).select_from(ARTIFACTS)).scalar_one())


async def test_concurrent_identical_requests_build_once(caches, store, tmp_path):
    cache = caches()
    results = await asyncio.gather(*(cache.get(MNIST_ENTRY, "tflm", "int8") for _ in range(6)))
    assert cache.compiles == 1 and cache.hits == 5
    first = results[0]
    assert all(r is first for r in results)  # one future served them all
    assert first.data[4:8] == b"TFL3" and hashlib.sha256(first.data).hexdigest() == first.sha256
    assert first.artifact.needs.ram_bytes == 9_984 and first.artifact.macs == 786_560
    assert (tmp_path / "artifacts" / f"{first.key}.bin").read_bytes() == first.data
    assert not list((tmp_path / "artifacts").glob("*.part")) and rows(store) == 1
    # asked again in this process: memory
    again = await cache.get(MNIST_ENTRY, "tflm", "int8")
    assert again is first and cache.compiles == 1

    # another cache (a restarted server) over the same directory and database: disk, no build
    other = caches()
    loaded = await other.get(MNIST_ENTRY, "tflm", "int8")
    assert other.compiles == 0 and other._pool is None
    assert (loaded.key, loaded.sha256, loaded.data, loaded.backend, loaded.precision) == (
        first.key, first.sha256, first.data, "tflm", "int8")
    assert loaded.artifact.needs.ram_bytes == 9_984 and loaded.artifact.tensors == first.artifact.tensors

    # a damaged file is built again, and repaired on disk
    path = tmp_path / "artifacts" / f"{first.key}.bin"
    path.write_bytes(b"\x00" * 100)
    third = caches()
    rebuilt = await third.get(MNIST_ENTRY, "tflm", "int8")
    assert third.compiles == 1 and rebuilt.sha256 == first.sha256 and rebuilt.data == first.data
    assert path.read_bytes() == first.data and rows(store) == 1


async def test_the_key_covers_precision_backend_features_and_model(caches):
    keys = {cache_key(MNIST_ENTRY, b, p, f) for b in ("tflm", "wasm") for p in ("float32", "int8")
            for f in ((), ("cmsis-nn",))}
    assert len(keys) == 8
    assert cache_key(MNIST_ENTRY, "tflm", "int8", ("a", "b")) == cache_key(MNIST_ENTRY, "tflm", "int8", ("b", "a"))
    other_model = ModelEntry("mnist", "2", "00" * 32, "onnx", 1, MNIST, None, 0.0)
    assert cache_key(other_model, "tflm", "int8", ()) != cache_key(MNIST_ENTRY, "tflm", "int8", ())

    cache = caches()
    i8, f32 = await asyncio.gather(cache.get(MNIST_ENTRY, "tflm", "int8"), cache.get(MNIST_ENTRY, "tflm", "float32"))
    assert i8.key != f32.key and cache.compiles == 2
    assert f32.artifact.needs.ram_bytes == 33_440 and len(f32.data) > 2 * len(i8.data)


async def test_a_build_failure_is_compile_failed_and_remembered(caches, tmp_path):
    entry = hard_sigmoid_model(tmp_path / "hs.onnx")
    cache = caches()
    with pytest.raises(CompileFailed, match=r"tflm int8: graph 'hs' cannot run in int8: .*HardSigmoid"):
        await cache.get(entry, "tflm", "int8")
    assert cache.compiles == 1
    with pytest.raises(CompileFailed, match="cannot run in int8"):
        await cache.get(entry, "tflm", "int8")
    assert cache.compiles == 1 and cache.hits == 1  # not built again
    with pytest.raises(CompileFailed, match=r"tflm float32: unsupported op HARD_SIGMOID"):
        await cache.get(entry, "tflm", "float32")
    assert cache.compiles == 2
    assert not list(tmp_path.glob("artifacts/*.bin"))  # nothing stored for a failed build
    # a backend that makes no deliverable is refused before anything is built
    with pytest.raises(CompileFailed, match=r"backend 'c' makes no deliverable artifact \(deliverable: tflm, wasm\)"):
        await cache.get(MNIST_ENTRY, "c", "int8")
    assert cache.compiles == 2


async def test_the_event_loop_keeps_running_during_a_build(caches):
    cache = caches()
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    t0 = time.perf_counter()
    built = await cache.get(MNIST_ENTRY, "tflm", "float32")  # spawns the worker, then ~0.3 s of compiling
    took = time.perf_counter() - t0
    stop.set()
    await tick
    assert built.artifact.needs.ram_bytes == 33_440 and cache.compiles == 1
    assert len(gaps) >= took / 0.05  # it kept ticking all along ...
    assert max(gaps) < 0.2, f"the event loop stalled {max(gaps) * 1000:.0f} ms during a {took:.2f} s build"


async def test_server_key_is_created_private_then_loaded(tmp_path):
    home = tmp_path / "home"
    key = ServerKey.load_or_create(home)
    path = home / KEY_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert len(key.public) == 32 and len(key.fingerprint) == 16
    again = ServerKey.load_or_create(home)
    assert again.public == key.public and again.fingerprint == key.fingerprint
    assert ServerKey.load_or_create(tmp_path / "elsewhere").public != key.public


async def test_sealed_package_opens_with_the_key_and_describes_the_build(caches, tmp_path):
    built = await caches().get(MNIST_ENTRY, "tflm", "int8")
    key = ServerKey.load_or_create(tmp_path / "home")
    pkg = key.seal(built, MNIST_ENTRY)
    assert key.seal(built, MNIST_ENTRY) is pkg  # cached per artifact
    manifest, artifact = open_package(pkg, key.public)
    assert artifact == built.data
    assert (manifest.name, manifest.version, manifest.kind) == ("mnist", "1+" + built.sha256[:8], "tflite")
    assert manifest.sha256 == bytes.fromhex(built.sha256) == hashlib.sha256(artifact).digest()
    assert manifest.size == len(artifact) and manifest.arena == 9_984 and not hasattr(manifest, "pages")
    assert manifest.min_runtime == "tflm 2024-06"
    inputs = [t for t in manifest.tensors if t["role"] == "input"]
    assert [t["shape"] for t in inputs] == [[1, 1, 28, 28]] and inputs[0]["dtype"] == "int8"
    assert [t["shape"] for t in manifest.tensors if t["role"] == "output"] == [[1, 10]]

    stranger = ServerKey.load_or_create(tmp_path / "other")
    foreign = stranger.seal(built, MNIST_ENTRY)
    with pytest.raises(PackageError) as err:
        open_package(foreign, key.public)
    assert err.value.reason == "integrity"
    assert open_package(foreign, stranger.public)[1] == built.data


async def test_a_build_by_another_compiler_is_not_reused_and_prune_removes_it(caches, store, tmp_path, monkeypatch):
    """A third-party backend's source changes (a copy of tests/plugins, edited): a cache miss, a new
    build in a new worker, and ``cache prune`` removes the stale build and an orphan file."""
    import shutil
    import sys

    from compilers.backends import registry
    from tinymlaas.deploy.cache import compiler_fingerprint, prune
    from tinymlaas.registry import ModelRegistry

    plugins = tmp_path / "plugins"
    shutil.copytree(Path(__file__).resolve().parent / "plugins", plugins)
    monkeypatch.syspath_prepend(str(plugins))
    registry.refresh()
    compiler_fingerprint.cache_clear()
    try:
        entry = ModelRegistry(tmp_path, store).add(MNIST, name="mnist")
        cache = caches()
        old = await cache.get(entry, "toy", "float32")
        assert cache.compiles == 1 and rows(store) == 1
        assert (await caches().get(entry, "toy", "float32")).key == old.key  # same compiler: reused
        before = compiler_fingerprint("toy")
        codec = plugins / "toy_backend" / "codec.py"
        codec.write_text(codec.read_text() + "\n# a change to the compiler\n")
        compiler_fingerprint.cache_clear()  # a new process, as after an upgrade
        assert compiler_fingerprint("toy") != before
        fresh = caches()
        new = await fresh.get(entry, "toy", "float32")
        assert fresh.compiles == 1 and new.key != old.key and rows(store) == 2  # not reused: built again
        stale = store.read_sync(lambda c: c.execute(select(ARTIFACTS.c.compiler).where(ARTIFACTS.c.key == old.key))
                                .scalar_one())
        assert stale == before
        orphan = tmp_path / "artifacts" / ("ab" * 32 + ".part")
        orphan.write_bytes(b"half a build")
        os.utime(orphan, (time.time() - 3600, time.time() - 3600))
        assert prune(store, tmp_path / "artifacts", dry_run=True).rows == 1 and rows(store) == 2
        done = prune(store, tmp_path / "artifacts")
        assert (done.rows, done.files) == (1, 2) and done.bytes_freed == len(old.data) + len(b"half a build")
        assert sorted(p.name for p in (tmp_path / "artifacts").iterdir()) == [f"{new.key}.bin"]
        again = caches()
        assert (await again.get(entry, "toy", "float32")).key == new.key and again.compiles == 0  # kept
    finally:
        monkeypatch.undo()
        sys.modules.pop("toy_backend", None)
        sys.modules.pop("toy_backend.codec", None)
        registry.refresh()
        compiler_fingerprint.cache_clear()


def test_the_fingerprint_covers_the_backend_its_backends_and_the_core():
    from tinymlaas.deploy.cache import _sources

    root = Path(__file__).resolve().parents[1]
    wasm = {p.relative_to(root).as_posix() for p in _sources("compilers.backends.wasm.backend")}
    assert {"compilers/backends/wasm/compile.py", "compilers/backends/c/emit.py", "compilers/planner.py",
            "compilers/frontends/onnx.py", "compilers/backends/base.py", "tinymlaas/builds.py"} <= wasm
    tflm = {p.name for p in _sources("compilers.backends.tflm.backend")}
    assert "writer.py" in tflm and "compile.py" not in tflm  # another backend's change is not TFLM's
