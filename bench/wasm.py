"""Wasm / portable C backend benchmark, in one run per model:

* the MVP Wasm module: bytes, 64 KiB pages, median invoke latency in wasmtime (Cranelift
  JIT) and in wasm3 (the MCU-class interpreter, pywasm3); the SIMD128 build in wasmtime;
* the same model as our TFLM flatbuffer: latency in tflite-micro (reference kernels) and in
  ai-edge-litert (its default CPU kernels, one thread), and the TFLM arena (the smallest
  tflite-micro accepts, measured);
* the same C cross-compiled for a Cortex-M4F by ziglang: flash (.text + .rodata + .data) and
  RAM (.data + .bss, the planned arena included, + a 1 KiB stack estimate).

Targets (issue): C RAM geometric mean <= 0.6x the TFLM arena over the four MLPerf Tiny int8
models; wasmtime latency <= 2x ai-edge-litert's (geometric mean).

    python bench/wasm.py [--quick]

``--quick``: the four MLPerf int8 models and mnist-8, fewer invokes (under a minute here).
Prints a table; the last line is one JSON object with ``models`` (``name``, ``wasm_bytes``,
``pages``, ``c_ram``, ``c_flash``, ``tflm_arena``, ``wasmtime_ms``, ``wasm3_ms``,
``litert_ms``, ``tflm_ms``, ...), ``ram_ratio_geomean`` and ``wasmtime_vs_litert_geomean``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from compilers.backends.c.build import STACK_ESTIMATE  # noqa: E402
from compilers.backends.c.cross import section_sizes  # noqa: E402
from compilers.backends.tflm.build import build_tflm  # noqa: E402
from compilers.backends.wasm.build import build_wasm  # noqa: E402
from compilers.backends.wasm.host import time_wasm3, time_wasmtime  # noqa: E402
from compilers.frontends import import_onnx, import_tflite  # noqa: E402
from tflm import invoke_ms as tflm_ms  # noqa: E402

SHARED = REPO.parent / "shared" / "models"
MLPERF = {"ad01", "kws", "resnet8", "vww"}
MODELS = [  # (name, source, precision)
    ("ad01", "mlperf_tiny/onnx_converted/ad01_int8.onnx", "int8"),
    ("kws", "mlperf_tiny/onnx_converted/kws_ref_model.onnx", "int8"),
    ("resnet8", "mlperf_tiny/onnx_converted/pretrainedResnet_quant.onnx", "int8"),
    ("vww", "mlperf_tiny/onnx_converted/vww_96_int8.onnx", "int8"),
    ("mnist-8 int8", "onnx/mnist-8/mnist-8.onnx", "int8"),
    ("mnist-8 float32", "onnx/mnist-8/mnist-8.onnx", "float32"),
    ("kws float32", "mlperf_tiny/onnx_converted/kws_ref_model_float32.onnx", "float32"),
    ("vww float32", "mlperf_tiny/vww_96_float.onnx", "float32"),
]


def litert_ms(model: bytes, runs: int) -> float:
    from ai_edge_litert.interpreter import Interpreter
    li = Interpreter(model_content=model, num_threads=1)
    li.allocate_tensors()
    d = li.get_input_details()[0]
    rng = np.random.default_rng(0)
    x = (rng.uniform(-1, 1, d["shape"]) if np.dtype(d["dtype"]).kind == "f"
         else rng.integers(-128, 128, d["shape"])).astype(d["dtype"])
    li.set_tensor(d["index"], x)
    li.invoke()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        li.invoke()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def geomean(values: list[float]) -> float | None:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    runs, runs3 = (5, 2) if args.quick else (20, 5)
    console = Console(stderr=True, width=170)
    rows = []
    for name, rel, precision in MODELS:
        if args.quick and not (name in MLPERF or name == "mnist-8 int8"):
            continue
        src = SHARED / rel
        if not src.exists():
            console.print(f"[yellow]skipped {name}: {rel} not in the shared models[/]")
            continue
        graph = import_onnx(src) if src.suffix == ".onnx" else import_tflite(src)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # float models here have no calibration data
            w = build_wasm(graph, precision, name=src.stem)
            ws = build_wasm(graph, precision, name=src.stem, simd=True)
            t = build_tflm(graph, precision, name=src.stem)
        g = w.graph
        rng = np.random.default_rng(0)
        blobs = []
        for n in g.inputs:
            spec = g.tensors[n]
            x = (rng.uniform(-1, 1, spec.shape) if spec.dtype.is_float
                 else rng.integers(-128, 128, spec.shape)).astype(spec.dtype.numpy)
            blobs.append(x.tobytes())
        sizes = section_sizes(w.cmodel.source, "cortex-m4f")
        assert t.arena is not None
        row = {"name": name, "source": rel, "precision": precision, "wasm_bytes": len(w.module),
               "pages": w.pages, "arena": w.cmodel.arena_bytes,
               "c_ram": sizes.ram + STACK_ESTIMATE, "c_flash": sizes.flash,
               "c_sections": {"text": sizes.text, "rodata": sizes.rodata, "data": sizes.data, "bss": sizes.bss},
               "tflm_arena": t.arena.recommended,
               "wasmtime_ms": round(time_wasmtime(w.module, blobs, runs), 3),
               "wasmtime_simd_ms": round(time_wasmtime(ws.module, blobs, runs), 3),
               "wasm3_ms": round(time_wasm3(w.module, blobs, runs3), 3),
               "tflm_ms": round(tflm_ms(t.flatbuffer, t.arena.recommended, runs), 3),
               "litert_ms": round(litert_ms(t.flatbuffer, runs), 3)}
        row["ram_ratio"] = round(row["c_ram"] / row["tflm_arena"], 3)
        row["wasmtime_vs_litert"] = round(row["wasmtime_ms"] / row["litert_ms"], 3)
        row["wasmtime_simd_vs_litert"] = round(row["wasmtime_simd_ms"] / row["litert_ms"], 3)
        rows.append(row)
        console.print(f"  {name}: done", highlight=False)

    table = Table(title="Wasm / C backend (C figures: Cortex-M4F, -Os; latencies: this host, median)")
    for col in ("model", "wasm B", "pages", "C flash", "C RAM", "TFLM arena", "RAM ratio",
                "wasmtime ms", "simd ms", "wasm3 ms", "tflm ms", "litert ms", "wasmtime/litert"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        table.add_row(r["name"], f"{r['wasm_bytes']:,}", str(r["pages"]), f"{r['c_flash']:,}",
                      f"{r['c_ram']:,}", f"{r['tflm_arena']:,}", f"{r['ram_ratio']:.3f}",
                      f"{r['wasmtime_ms']:.2f}", f"{r['wasmtime_simd_ms']:.2f}", f"{r['wasm3_ms']:.1f}",
                      f"{r['tflm_ms']:.2f}",
                      f"{r['litert_ms']:.3f}", f"{r['wasmtime_vs_litert']:.2f}")
    console.print(table)
    mlperf = [r for r in rows if r["name"] in MLPERF]
    ram = geomean([r["ram_ratio"] for r in mlperf])
    speed = geomean([r["wasmtime_vs_litert"] for r in mlperf])
    speed_simd = geomean([r["wasmtime_simd_vs_litert"] for r in mlperf])
    console.print(f"C RAM / TFLM arena, geomean over the MLPerf int8 models: {ram:.3f} (target <= 0.6); "
                  f"wasmtime / litert: {speed:.2f} MVP, {speed_simd:.2f} SIMD128 (target <= 2)")
    print(json.dumps({"models": rows, "ram_ratio_geomean": round(ram, 3) if ram else None,
                      "wasmtime_vs_litert_geomean": round(speed, 3) if speed else None,
                      "wasmtime_simd_vs_litert_geomean": round(speed_simd, 3) if speed_simd else None}))


if __name__ == "__main__":
    main()
