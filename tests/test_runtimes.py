"""The simulator's model runner: artifact kinds, TFLM arena checks and runs, Wasm ABI v1, through
each backend's device runtime and fit.

TFLM outputs are compared with LiteRT (ai-edge-litert), an independent interpreter. Wasm
modules are written here as WAT and assembled with wasmtime.wat2wasm; they run in wasm3.
A Wasm module with imports is refused as install-failure (a well-formed module that the
sandbox cannot link), like every other ABI violation; unsupported-package is for bytes that
are not a model format at all, or are malformed.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import wasmtime

from compilers.backends import isolation
from compilers.backends.base import RuntimeSpec, Target
from compilers.backends.tflm import runtime as tflm_runtime
from compilers.backends.wasm import abi as wm
from simulator.runtimes import ModelError, ModelRunner, TensorSpec, artifact_kind

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
needs_models = pytest.mark.skipif(not (MODELS / "models.json").exists(), reason="shared/models is absent")


@pytest.fixture(scope="module")
def runner() -> Iterator[ModelRunner]:
    r = ModelRunner(timeout_s=10)
    yield r
    r.close()


def board(sram_free: int, runtime_ram: int = 0, runtime: str | None = None, blob: bytes | None = None) -> Target:
    """A device with ``sram_free`` bytes for ML whose runtime keeps ``runtime_ram`` of them."""
    name = runtime or ("wasm3" if blob is not None and blob[:4] == wm.MAGIC else "tflm")
    return Target("dev", "cortex-m4f", 64, "sp", sram_free, 10**7, 10**7, RuntimeSpec(name, "1", (), runtime_ram))


async def check(runner: ModelRunner, blob: bytes, sram_free: int, runtime_ram: int = 0):  # type: ignore[no-untyped-def]
    return await runner.check(blob, board(sram_free, runtime_ram, blob=blob))


def model(path: str) -> bytes:
    return (MODELS / path).read_bytes()


def catalogue(path: str) -> dict:
    entries = json.loads((MODELS / "models.json").read_text())["models"]
    return next(e for e in entries if e["path"] == path)


async def expect(result: str, coro: object) -> ModelError:
    with pytest.raises(ModelError) as info:
        await coro  # type: ignore[misc]
    assert info.value.result == result, str(info.value)
    return info.value


# ---------------------------------------------------------------- kinds

@needs_models
def test_artifact_kind_of_the_shared_models() -> None:
    files = [p for p in MODELS.rglob("*") if p.is_file()]
    assert len([p for p in files if p.suffix == ".tflite"]) >= 10
    for p in files:
        want = "tflite" if p.suffix == ".tflite" else None  # .onnx, .pb, README, licences, json
        assert artifact_kind(p.read_bytes()) == want, p


def test_artifact_kind_by_content_only() -> None:
    assert artifact_kind(b"\x1c\0\0\0TFL3" + bytes(20)) == "tflite"
    assert artifact_kind(bytes(wasmtime.wat2wasm("(module)"))) == "wasm"
    assert artifact_kind(b"\0asm\x02\0\0\0") is None  # another binary version
    for junk in (b"", b"TFL3", b"\x7fELF\x02\x01\x01", b"PK\x03\x04" + bytes(40), bytes(64)):
        assert artifact_kind(junk) is None


async def test_junk_is_unsupported(runner: ModelRunner) -> None:
    e = await expect("unsupported-package", check(runner, b"\x7fELF\x02\x01\x01\0" + bytes(100), 10**6))
    assert str(e) == "not an artifact of an installed backend (tflite, wasm; first bytes 7f454c46)"


# ---------------------------------------------------------------- TFLite Micro

def litert(blob: bytes, inputs: list[np.ndarray]) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_content=blob)
    it.allocate_tensors()
    for d, x in zip(it.get_input_details(), inputs, strict=True):
        it.set_tensor(d["index"], x)
    it.invoke()
    return [it.get_tensor(d["index"]).copy() for d in it.get_output_details()]


@needs_models
@pytest.mark.parametrize("path", ["tflm_examples/hello_world_int8.tflite", "mlperf_tiny/kws_ref_model.tflite"])
async def test_tflm_arena_and_outputs(runner: ModelRunner, path: str) -> None:
    blob, entry = model(path), catalogue(path)
    plan = await check(runner, blob, 256 * 1024, 8 * 1024)
    recorded = entry["tflm_arena_measured"]
    assert plan.details["recorded"] == {k: recorded[k] for k in ("total", "head", "tail")}
    assert plan.need >= recorded["total"]  # Prepare's temporary memory may need more
    assert plan.arena == 256 * 1024 - 8 * 1024 and plan.kind == "tflite"
    [spec] = plan.inputs
    assert list(spec.shape) == entry["inputs"][0]["shape"] and spec.dtype == "int8"
    assert spec.zero_point == entry["inputs"][0]["zero_point"]

    rng = np.random.default_rng(7)
    x = rng.integers(-128, 128, size=spec.shape, dtype=np.int8)
    result = await runner.run(blob, plan, [x.tobytes()])
    [want] = litert(blob, [x])
    got = np.frombuffer(result.outputs[0], np.int8).reshape(want.shape)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    assert result.latency_us > 0 and result.arena_bytes == recorded["total"]

    sample = await runner.run(blob, plan)  # sample input: the zero point everywhere
    [want] = litert(blob, [np.full(spec.shape, spec.zero_point, np.int8)])
    got = np.frombuffer(sample.outputs[0], np.int8).reshape(want.shape)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


@needs_models
async def test_arena_one_byte_short_is_out_of_memory(runner: ModelRunner) -> None:
    blob = model("mlperf_tiny/kws_ref_model.tflite")
    need = (await check(runner, blob, 10**6)).need
    assert need == 24272
    e = await expect("out-of-memory", check(runner, blob, need - 1))
    assert str(e) == "SRAM short by 1 B (the model needs 24,272 bytes of RAM; 24,271 bytes of SRAM are free)"
    await expect("out-of-memory", check(runner, blob, need + 1000, runtime_ram=1001))
    plan = await check(runner, blob, need + 1000, runtime_ram=1000)
    assert plan.arena == need  # the smallest arena the device may give: it still runs
    assert len((await runner.run(blob, plan)).outputs[0]) == 12


@needs_models
async def test_needed_arena_is_the_smallest_that_works(runner: ModelRunner) -> None:
    """hello_world records 1,504 bytes but needs more; below the need TFLM fails or crashes,
    which only the forked child notices."""
    blob = model("tflm_examples/hello_world_int8.tflite")
    plan = await check(runner, blob, 10**6)
    assert plan.need > plan.details["recorded"]["total"]

    async def probe(arena: int) -> isolation.Outcome:
        return await runner._call(isolation.isolated, tflm_runtime._once, (blob, arena, None), 10.0)

    assert (await probe(plan.need)).status == "ok"
    assert (await probe(plan.need - 1)).status in ("exception", "crash")
    crashed = await probe(200)  # tflite-micro segfaults with this arena
    assert crashed.status == "crash" and "Failed to allocate tail memory" in crashed.log
    assert (await probe(plan.need)).status == "ok"  # the same worker carries on


@needs_models
async def test_tflm_refusals(runner: ModelRunner) -> None:
    e = await expect("install-failure", check(runner, model("mlperf_tiny/kws_ref_model_float32.tflite"), 10**6))
    assert "Hybrid models are not supported" in str(e)
    truncated = model("mlperf_tiny/kws_ref_model.tflite")[:3000]
    await expect("unsupported-package", check(runner, truncated, 10**6))
    blob = model("tflm_examples/hello_world_int8.tflite")
    plan = await check(runner, blob, 10**5)
    e = await expect("runtime-error", runner.run(blob, plan, [b"\0\0"]))
    assert str(e) == "input 0 has 2 bytes; the model takes 1 (int8 [1, 1])"


@needs_models
async def test_worker_crash_is_a_runtime_error_and_the_pool_comes_back(runner: ModelRunner) -> None:
    blob = model("tflm_examples/hello_world_int8.tflite")
    plan = await check(runner, blob, 10**5)
    e = await expect("runtime-error", runner._call(os._exit, 3))
    assert "the runtime crashed" in str(e)
    assert len((await runner.run(blob, plan)).outputs) == 1


@needs_models
async def test_many_devices_checking_one_model_share_one_measurement(runner: ModelRunner) -> None:
    blob = model("tflm_examples/micro_speech_quantized.tflite")
    plans = await asyncio.gather(*(check(runner, blob, 32 * 1024 + i) for i in range(20)))
    assert {p.need for p in plans} == {7584} and [p.arena for p in plans] == [32 * 1024 + i for i in range(20)]
    assert not runner._inflight


@needs_models
async def test_runs_do_not_block_the_event_loop(runner: ModelRunner) -> None:
    blob = model("mlperf_tiny/kws_ref_model.tflite")
    plan = await check(runner, blob, 10**6)
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while not done.is_set():
            await asyncio.sleep(0.005)
            gaps.append(time.monotonic() - last)
            last = time.monotonic()

    tick = asyncio.create_task(ticker())
    results = await asyncio.gather(*(runner.run(blob, plan) for _ in range(30)))
    done.set()
    await tick
    assert len({r.outputs[0] for r in results}) == 1
    assert max(gaps) < 0.25


# ---------------------------------------------------------------- Wasm

ABI_EXPORTS = """
  (func (export "tinyml_abi_version") (result i32) (i32.const {version}))
  (func (export "input_count") (result i32) (i32.const 1))
  (func (export "output_count") (result i32) (i32.const 1))
  (func (export "input_ptr") (param i32) (result i32) (i32.const 0))
  (func (export "input_size") (param i32) (result i32) (i32.const 16))
  (func (export "output_ptr") (param i32) (result i32) (i32.const 16))
  (func (export "output_size") (param i32) (result i32) (i32.const 16))
"""
ADD_ONE = """
  (func (export "invoke") (result i32) (local $i i32)
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (i32.const 16)))
      (i32.store8 (i32.add (local.get $i) (i32.const 16))
                  (i32.add (i32.load8_u (local.get $i)) (i32.const 1)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (i32.const 0))
"""
META = '(@custom "tinyml" "{\\"name\\": \\"add-one\\", \\"version\\": \\"1\\", \\"tensors\\": ' \
       '{\\"inputs\\": [{\\"name\\": \\"x\\", \\"dtype\\": \\"uint8\\", \\"shape\\": [4, 4]}]}}")'


def wasm(invoke: str = ADD_ONE, memory: str = '(memory (export "memory") 1)', extra: str = "",
         version: int = 1) -> bytes:
    return bytes(wasmtime.wat2wasm(f"(module {extra} {memory} {ABI_EXPORTS.format(version=version)} {invoke})"))


def test_parse_wasm_sections() -> None:
    blob = wasm(extra='(import "env" "abort" (func (param i32)))', memory='(memory (export "memory") 2 8)')
    blob += bytes([0, 8, 6]) + b"tinyml" + b"{"  # a custom section appended at the end
    info = wm.parse_wasm(blob)
    assert info.imports == (wm.Import("env", "abort", "func"),)
    assert info.memories == (wm.Memory(2, 8),)
    assert {e.name for e in info.exports} >= set(wm.ABI_FUNCTIONS) | {"memory"}
    ptr = info.export("input_ptr")
    assert ptr is not None and info.function_type(ptr.index) == wm.FuncType(("i32",), ("i32",))
    assert info.custom_section("tinyml") == b"{"
    problems = wm.abi_violations(info)
    assert problems[0] == "Wasm module imports env.abort: the sandbox grants no imports"
    assert any("not UTF-8 JSON" in p for p in problems)
    assert wm.abi_violations(wm.parse_wasm(wasm())) == []


@pytest.mark.parametrize("blob, words", [
    (b"\0asm\x01\0\0\0\x01\x05\x01", "type section of 5 bytes, 1 left"),
    (b"\0asm\x01\0\0\0\x01\xff\xff\xff\xff\xff\xff", "LEB128"),
    (b"\0asm\x01\0\0\0\x0e\0", "unknown section id 14"),
    (b"\0asm\x01\0\0\0\x05\x03\x01\x00\x01\x01\x01\x00", "out of order or repeated"),
    (b"\0asm\x01\0\0\0\x05\x04\x01\x00\x01\x00", "1 bytes left over"),
], ids=["truncated", "long-leb128", "unknown-id", "out-of-order", "left-over"])
def test_parse_wasm_rejects_malformed(blob: bytes, words: str) -> None:
    with pytest.raises(wm.WasmFormatError, match=words):
        wm.parse_wasm(blob)


async def test_wasm_abi_module_runs(runner: ModelRunner) -> None:
    blob = wasm(extra=META)
    plan = await check(runner, blob, 256 * 1024, 16 * 1024)
    assert (plan.kind, plan.need, plan.details["memory_pages"]) == ("wasm", 65536, (1, None))
    assert plan.details["metadata"] and plan.details["metadata"]["name"] == "add-one"
    assert plan.inputs == (TensorSpec("x", "input", (4, 4), "uint8"),) and plan.inputs[0].nbytes == 16
    assert plan.outputs == (TensorSpec("output0", "output", (16,), "uint8"),)
    x = bytes(range(240, 256))
    result = await runner.run(blob, plan, [x])
    assert result.outputs == [bytes((b + 1) % 256 for b in x)]
    assert result.arena_bytes == 65536 and result.latency_us >= 0
    assert (await runner.run(blob, plan)).outputs == [b"\x01" * 16]  # sample input: zero bytes


async def test_wasm_dense_layer(runner: ModelRunner) -> None:
    """y[j] = sum_i w[j][i] * x[i] over int8 x (16 of them) and int8 weights; int32 outputs."""
    w = np.arange(-32, 32, dtype=np.int8).reshape(4, 16)
    data = "".join(f"\\{b:02x}" for b in w.tobytes())
    dense = f"""
      (data (i32.const 256) "{data}")
      (func (export "invoke") (result i32) (local $i i32) (local $j i32) (local $acc i32)
        (block $jdone (loop $jnext
          (br_if $jdone (i32.ge_u (local.get $j) (i32.const 4)))
          (local.set $acc (i32.const 0)) (local.set $i (i32.const 0))
          (block $idone (loop $inext
            (br_if $idone (i32.ge_u (local.get $i) (i32.const 16)))
            (local.set $acc (i32.add (local.get $acc) (i32.mul
              (i32.load8_s (local.get $i))
              (i32.load8_s (i32.add (i32.const 256)
                                    (i32.add (i32.mul (local.get $j) (i32.const 16)) (local.get $i)))))))
            (local.set $i (i32.add (local.get $i) (i32.const 1))) (br $inext)))
          (i32.store (i32.add (i32.const 16) (i32.mul (local.get $j) (i32.const 4))) (local.get $acc))
          (local.set $j (i32.add (local.get $j) (i32.const 1))) (br $jnext)))
        (i32.const 0))"""
    blob = wasm(dense)
    plan = await check(runner, blob, 128 * 1024)
    x = np.random.default_rng(3).integers(-128, 128, 16, dtype=np.int8)
    result = await runner.run(blob, plan, [x.tobytes()])
    assert np.array_equal(np.frombuffer(result.outputs[0], "<i4"), w.astype(np.int32) @ x.astype(np.int32))


async def test_wasm_refusals(runner: ModelRunner) -> None:
    e = await expect("install-failure", check(runner, wasm(extra='(import "env" "abort" (func))'), 10**6))
    assert str(e) == "Wasm module imports env.abort: the sandbox grants no imports"
    e = await expect("install-failure", check(runner, wasm(memory="(memory 1)"), 10**6))
    assert 'does not export its memory as "memory"' in str(e)
    e = await expect("install-failure", check(runner, wasm(invoke=""), 10**6))
    assert "lacks the function export invoke" in str(e)
    e = await expect("install-failure", check(runner, wasm(version=2), 10**6))
    assert str(e) == "Wasm module speaks tinyml ABI 2; this device speaks 1"
    e = await expect("out-of-memory", check(runner, wasm(memory='(memory (export "memory") 5)'), 256 * 1024))
    assert str(e) == ("SRAM short by 65,536 B (the model needs 327,680 bytes of RAM; "
                      "262,144 bytes of SRAM are free)")  # 5 pages of 64 KiB against 256 KiB
    await expect("out-of-memory", check(runner, wasm(), 64 * 1024, runtime_ram=1))
    await expect("unsupported-package", check(runner, wasm()[:25], 10**6))


async def test_wasm_trap_is_a_runtime_error_and_the_next_run_works(runner: ModelRunner) -> None:
    bad = wasm(invoke='(func (export "invoke") (result i32) (i32.load (i32.const 70000)))')
    plan = await check(runner, bad, 10**6)  # nothing in the binary says it will trap
    e = await expect("runtime-error", runner.run(bad, plan))
    assert str(e).startswith("Wasm trap in invoke(): out of bounds memory access")
    good = wasm()
    assert (await runner.run(good, await check(runner, good, 10**6))).outputs == [b"\x01" * 16]


async def test_wasm_failures_while_running(runner: ModelRunner) -> None:
    failing = wasm(invoke='(func (export "invoke") (result i32) (i32.const 3))')
    e = await expect("runtime-error", runner.run(failing, await check(runner, failing, 10**6)))
    assert str(e) == "Wasm invoke() returned error code 3"
    greedy = wasm(invoke='(func (export "invoke") (result i32) '
                         '(drop (memory.grow (i32.const 2))) (i32.const 0))')
    plan = await check(runner, greedy, 128 * 1024)
    e = await expect("out-of-memory", runner.run(greedy, plan))
    assert str(e) == "Wasm module grew its memory to 3 pages (192 KiB); 128 KiB are free"
    assert (await runner.run(greedy, await check(runner, greedy, 192 * 1024))).arena_bytes == 3 * 65536


async def test_wasm_endless_loop_is_stopped() -> None:
    spin = wasm(invoke='(func (export "invoke") (result i32) (loop $l (br $l)) (i32.const 0))')
    async with ModelRunner(timeout_s=1) as r:
        plan = await check(r, spin, 10**6)
        e = await expect("runtime-error", r.run(spin, plan))
        assert "did not finish within 1 s" in str(e)
        good = wasm()
        assert (await r.run(good, await check(r, good, 10**6))).outputs == [b"\x01" * 16]


# ---------------------------------------------------------------- memo_runs (fleet-scale benchmarks)

def count_submits(r: ModelRunner) -> list[str]:
    """Wrap the runner's submit method: the names of the functions sent to the worker."""
    calls: list[str] = []
    submit = r._submit

    def counting(fn, *args):  # type: ignore[no-untyped-def]
        calls.append(fn.__name__)
        return submit(fn, *args)

    r._submit = counting  # type: ignore[method-assign]
    return calls


async def test_memoised_run_answers_an_identical_run_without_the_worker() -> None:
    blob, x = wasm(extra=META), bytes(range(240, 256))
    async with ModelRunner(timeout_s=10, memo_runs=True) as r:
        calls = count_submits(r)
        plan = await check(r, blob, 256 * 1024)
        first = await r.run(blob, plan, [x])
        assert calls == ["_load", "_invoke"]
        second = await r.run(blob, plan, [x])
        assert calls == ["_load", "_invoke"]  # no second worker call
        assert second == first and second.outputs == [bytes((b + 1) % 256 for b in x)]
        second.outputs.append(b"")  # a caller changing its result does not change the memo
        assert (await r.run(blob, plan, [x])).outputs == first.outputs
        assert (await r.run(blob, plan)).outputs == [b"\x01" * 16]  # other inputs: a new run
        assert calls.count("_invoke") == 2
        wider = await check(r, blob, 512 * 1024)  # another arena: a new run
        await r.run(blob, wider, [x])
        assert calls.count("_invoke") == 3
        same = await asyncio.gather(*(r.run(blob, plan, [bytes(16)]) for _ in range(5)))
        assert calls.count("_invoke") == 4 and len({s.outputs[0] for s in same}) == 1  # shared
        failing = wasm(invoke='(func (export "invoke") (result i32) (i32.const 3))')
        fplan = await check(r, failing, 10**6)
        for _ in range(2):  # failures are not remembered
            await expect("runtime-error", r.run(failing, fplan))
        assert calls.count("_invoke") == 6 and not r._running


async def test_without_memo_every_run_goes_to_the_worker() -> None:
    blob, x = wasm(extra=META), bytes(range(16))
    async with ModelRunner(timeout_s=10) as r:
        assert r.memo_runs is False
        calls = count_submits(r)
        plan = await check(r, blob, 256 * 1024)
        results = [await r.run(blob, plan, [x]) for _ in range(3)]
        assert calls == ["_load"] + ["_invoke"] * 3
        assert len({res.outputs[0] for res in results}) == 1 and not r._runs


@needs_models
async def test_memoised_tflm_run_is_the_first_run() -> None:
    blob = model("mlperf_tiny/kws_ref_model.tflite")
    x = np.random.default_rng(11).integers(-128, 128, size=(1, 49, 10, 1), dtype=np.int8).tobytes()
    async with ModelRunner(timeout_s=10, memo_runs=True) as r:
        calls = count_submits(r)
        plan = await check(r, blob, 10**6)
        first = await r.run(blob, plan, [x])
        assert await r.run(blob, plan, [x]) == first and calls.count("_invoke") == 1
    async with ModelRunner(timeout_s=10) as r:
        plan = await check(r, blob, 10**6)
        assert (await r.run(blob, plan, [x])).outputs == first.outputs  # deterministic
