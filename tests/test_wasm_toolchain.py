"""The Wasm / portable-C toolchain: ziglang builds, the ABI check, wasmtime and wasm3 hosts,
section sizes for MCU cores. Hand-written C implementing tinyml ABI v1 stands in for the C
backend's output. Needs the ziglang, wasmtime and pywasm3 packages."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import wasmtime

from compilers.backends.wasm import abi as wasm_abi
from compilers.backends.c.cross import CrossCompileError, section_sizes
from compilers.backends.wasm.compile import WasmBuildError, compile_wasm, pages
from compilers.backends.wasm.host import WasmTrap, run_wasm3, run_wasmtime, time_wasm3, time_wasmtime

ABI_C = """
#define N 64
static float in0[N];
static float out0[N];
EXTRA
int tinyml_abi_version(void) { return 1; }
int input_count(void) { return 1; }
int input_ptr(int i) { return i == 0 ? (int)(__SIZE_TYPE__)in0 : 0; }
int input_size(int i) { return i == 0 ? (int)sizeof in0 : 0; }
int output_count(void) { return 1; }
int output_ptr(int i) { return i == 0 ? (int)(__SIZE_TYPE__)out0 : 0; }
int output_size(int i) { return i == 0 ? (int)sizeof out0 : 0; }
int invoke(void) { BODY return 0; }
"""
SCALE = "for (int k = 0; k < N; k++) out0[k] = in0[k] * 2.0f + 1.0f;"
META = {"name": "scale", "version": "1", "tensors": {"inputs": [{"name": "x", "dtype": "float32",
                                                                 "shape": [1, 64]}]}}
X = np.linspace(-3.0, 5.0, 64, dtype=np.float32)


def source(body: str = SCALE, extra: str = "") -> str:
    return ABI_C.replace("EXTRA", extra).replace("BODY", body)


@pytest.fixture(scope="module")
def mvp() -> bytes:
    return compile_wasm(source(), metadata=META)


@pytest.fixture(scope="module")
def simd() -> bytes:
    return compile_wasm(source(), simd=True)


def as_floats(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4")


def test_mvp_module_keeps_the_abi(mvp: bytes) -> None:
    info = wasm_abi.parse_wasm(mvp)
    assert info.imports == () and info.start is None
    assert wasm_abi.abi_violations(info) == []
    assert {e.name for e in info.exports} == set(wasm_abi.ABI_FUNCTIONS) | {"memory"}
    assert wasm_abi.metadata(info) == META
    assert pages(mvp) == 1  # 16 KiB stack + 512 bytes of buffers


def test_mvp_and_simd_agree_in_both_runtimes(mvp: bytes, simd: bytes) -> None:
    want = X * 2 + 1
    outs = [run_wasmtime(mvp, [X.tobytes()]), run_wasm3(mvp, [X.tobytes()]),
            run_wasmtime(simd, [X.tobytes()])]
    for out in outs:
        assert len(out) == 1
        np.testing.assert_array_equal(as_floats(out[0]), want)
    assert simd != mvp  # the loop was vectorised
    assert time_wasmtime(mvp, [X.tobytes()], 5) > 0
    assert time_wasm3(mvp, [X.tobytes()], 5) > 0


def test_wasm3_refuses_the_simd_module(simd: bytes) -> None:
    # wasm3 compiles lazily: it loads the module and runs the scalar ABI calls, then fails
    # to compile invoke(), the one function with v128 code.
    with pytest.raises(WasmTrap, match=r"^wasm3: Wasm invoke\(\) failed: unknown value_type"):
        run_wasm3(simd, [X.tobytes()])


def test_pages_are_the_minimum() -> None:
    arena = "static unsigned char arena[200 * 1024];"
    use = "for (int k = 0; k < N; k++) { arena[k * 3000] = (unsigned char)k; out0[k] = arena[k * 1500]; }"
    big = compile_wasm(source(use, arena))
    # 16,384 stack + 204,800 arena + 512 buffers = 221,696 bytes: 3.4 pages -> 4
    assert pages(big) == 4
    assert pages(compile_wasm(source(), stack_bytes=65536)) == 2  # 65,536 + 512 bytes
    assert run_wasm3(big, [X.tobytes()])[0] == run_wasmtime(big, [X.tobytes()])[0]


def test_an_undefined_extern_is_named() -> None:
    c = source("out0[0] = foo(in0[0]);", "extern float foo(float);")
    with pytest.raises(WasmBuildError, match=r"module imports env\.foo: the sandbox grants no imports"):
        compile_wasm(c)


def test_a_compile_error_is_one_readable_line() -> None:
    with pytest.raises(WasmBuildError, match=r"model\.c:\d+:\d+: error: .*undeclared") as info:
        compile_wasm(source("out0[0] = nope;"))
    assert "tinyml-wasm-" not in str(info.value) and "\n" not in str(info.value)


def test_a_missing_export_is_an_abi_violation() -> None:
    c = source().replace("int output_count(void) { return 1; }", "")
    with pytest.raises(WasmBuildError, match="does not define output_count: Wasm module lacks the function export"):
        compile_wasm(c)


def test_out_of_bounds_reads_trap_in_both_runtimes() -> None:
    bad = compile_wasm(source("out0[0] = (float)*(volatile int *)0x7ffffff0;"))
    with pytest.raises(WasmTrap, match=r"^wasmtime: Wasm trap in invoke\(\): out of bounds memory access "
                                       r"\(memory fault at wasm address 0x7ffffff0"):
        run_wasmtime(bad, [X.tobytes()])
    with pytest.raises(WasmTrap, match=r"^wasm3: Wasm trap in invoke\(\): out of bounds"):
        run_wasm3(bad, [X.tobytes()])


def test_a_nonzero_invoke_is_reported_with_its_code() -> None:
    failing = compile_wasm(source("return 7;"))
    for run, name in ((run_wasmtime, "wasmtime"), (run_wasm3, "wasm3")):
        with pytest.raises(WasmTrap, match=rf"^{name}: .*error code 7"):
            run(failing, [X.tobytes()])


def test_wrong_inputs_are_refused() -> None:
    module = compile_wasm(source())
    with pytest.raises(WasmTrap, match="input 0 has 4 bytes; the module takes 256"):
        run_wasmtime(module, [b"\0" * 4])
    with pytest.raises(WasmTrap, match="0 inputs given; the module takes 1"):
        run_wasm3(module, [])


def test_a_module_importing_env_abort_is_rejected() -> None:
    exports = "".join(f'(func (export "{n}") (result i32) i32.const 0)'
                      for n, t in wasm_abi.ABI_FUNCTIONS.items() if not t.params)
    exports += "".join(f'(func (export "{n}") (param i32) (result i32) i32.const 0)'
                       for n, t in wasm_abi.ABI_FUNCTIONS.items() if t.params)
    blob = bytes(wasmtime.wat2wasm(f'(module (import "env" "abort" (func)) '
                                   f'(memory (export "memory") 1) {exports})'))
    problems = wasm_abi.abi_violations(wasm_abi.parse_wasm(blob))
    assert problems == ["Wasm module imports env.abort: the sandbox grants no imports"]
    with pytest.raises(WasmTrap, match=r"^wasmtime: module imports env\.abort: the sandbox grants no imports"):
        run_wasmtime(blob, [])


def test_section_sizes_on_cortex_m4f() -> None:
    c = ("static const unsigned char table[4000] = {1, 2, 3};\n"
         "static unsigned char zbuf[10000];\n"
         "int f(int i) { zbuf[i] = table[i]; return zbuf[i / 2] + table[i + 1]; }\n")
    sizes = section_sizes(c, "cortex-m4f")
    assert sizes.rodata >= 4000 and sizes.bss >= 10000 and sizes.text > 0
    assert (sizes.rodata, sizes.data, sizes.bss) == (4000, 0, 10000)  # measured: text 36


def test_section_sizes_of_a_float_kernel_on_several_cores() -> None:
    c = source() + "int pad = 1;\n"
    for core in ("cortex-m0plus", "cortex-m7", "cortex-m33", "riscv32", "aarch64"):
        sizes = section_sizes(c, core)
        assert (sizes.data, sizes.bss) == (4, 512) and sizes.text > 0, core


def test_a_core_zig_cannot_target_is_named() -> None:
    with pytest.raises(CrossCompileError, match=r"core 'xtensa-lx6' cannot be compiled for: zig"):
        section_sizes("int x;", "xtensa-lx6")
    with pytest.raises(CrossCompileError, match=r"unknown core 'z80'"):
        section_sizes("int x;", "z80")


def test_metadata_must_be_an_object() -> None:
    with pytest.raises(WasmBuildError, match="metadata is a list"):
        compile_wasm(source(), metadata=[1, 2])  # type: ignore[arg-type]


def test_custom_section_bytes() -> None:
    from compilers.backends.wasm.compile import custom_section
    sec = custom_section("tinyml", b"{}")
    assert sec == b"\x00\x09\x06tinyml{}"
    assert struct.unpack("B", sec[1:2])[0] == len(sec) - 2
