"""TFLM backend benchmark: our int8 flatbuffers against the official int8 .tflite files.

Per model: ``build_tflm(graph, "int8")`` (the MLPerf Tiny ONNX models, mnist-8, and the TFLM
example models round-tripped through our TFLite frontend), then in the same run, for ours
and for the official .tflite of the same network: flatbuffer bytes, the TFLM arena (the
smallest arena the real tflite-micro interpreter loads and invokes with, measured the same
way for both) and the median tflite-micro invoke time (reference kernels, this host) over
``--runs`` invokes on seeded inputs. Ratios are ours / official (<= 1 is better).

    python bench/tflm.py [--quick] [--runs N]

``--quick`` leaves out the large ResNet and uses 5 invokes per model (under a minute here).
Prints a table; the last line is one JSON object ``{"models": [{"name", "size",
"official_size", "arena", "official_arena", "invoke_ms", "official_invoke_ms", ...}]}``
(official fields are null for mnist-8, which has no official .tflite).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from compilers.backends.tflm.arena import recommended_arena  # noqa: E402
from compilers.backends.tflm.build import build_tflm  # noqa: E402
from compilers.frontends import import_onnx, import_tflite  # noqa: E402

SHARED = REPO.parent / "shared" / "models"
# (name, source model, official int8 .tflite or None)
MODELS = [
    ("ad01 (int8 onnx)", "mlperf_tiny/onnx_converted/ad01_int8.onnx", "mlperf_tiny/ad01_int8.tflite"),
    ("ad01 (fp32 onnx, ours PTQ)", "mlperf_tiny/onnx_converted/ad01_fp32.onnx", "mlperf_tiny/ad01_int8.tflite"),
    ("kws (int8 onnx)", "mlperf_tiny/onnx_converted/kws_ref_model.onnx", "mlperf_tiny/kws_ref_model.tflite"),
    ("kws (fp32 onnx, ours PTQ)", "mlperf_tiny/onnx_converted/kws_ref_model_float32.onnx",
     "mlperf_tiny/kws_ref_model.tflite"),
    ("resnet8 (int8 onnx)", "mlperf_tiny/onnx_converted/pretrainedResnet_quant.onnx",
     "mlperf_tiny/pretrainedResnet_quant.tflite"),
    ("resnet8 (fp32 onnx, ours PTQ)", "mlperf_tiny/pretrainedResnet.onnx", "mlperf_tiny/pretrainedResnet_quant.tflite"),
    ("vww (int8 onnx)", "mlperf_tiny/onnx_converted/vww_96_int8.onnx", "mlperf_tiny/vww_96_int8.tflite"),
    ("vww (fp32 onnx, ours PTQ)", "mlperf_tiny/vww_96_float.onnx", "mlperf_tiny/vww_96_int8.tflite"),
    ("mnist-8 (fp32 onnx, ours PTQ)", "onnx/mnist-8/mnist-8.onnx", None),
    ("str_ww (tflite)", "mlperf_tiny/str_ww_ref_model.tflite", "mlperf_tiny/str_ww_ref_model.tflite"),
    ("person_detect (tflite)", "tflm_examples/person_detect.tflite", "tflm_examples/person_detect.tflite"),
    ("micro_speech (tflite)", "tflm_examples/micro_speech_quantized.tflite",
     "tflm_examples/micro_speech_quantized.tflite"),
    ("hello_world (tflite)", "tflm_examples/hello_world_int8.tflite", "tflm_examples/hello_world_int8.tflite"),
    ("resnet large (tflite)", "mlperf_tiny/pretrainedResnet_large_int8.tflite",
     "mlperf_tiny/pretrainedResnet_large_int8.tflite"),
]


def invoke_ms(model: bytes, arena: int, runs: int) -> float:
    """Median tflite-micro invoke time on seeded inputs of the model's input type."""
    from tflite_micro.python.tflite_micro import runtime
    it = runtime.Interpreter.from_bytes(model, arena_size=arena)
    detail = it.get_input_details(0)
    shape, dtype = tuple(detail["shape"]), np.dtype(detail["dtype"])
    rng = np.random.default_rng(0)
    times = []
    for _ in range(runs + 1):
        if dtype.kind == "f":
            x = rng.uniform(-1, 1, shape).astype(dtype)
        else:
            info = np.iinfo(dtype)
            x = rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
        it.set_input(x, 0)
        t = time.perf_counter()
        it.invoke()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times[1:])  # the first invoke warms caches


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="skip the large ResNet; 5 invokes per model")
    ap.add_argument("--runs", type=int, default=None, help="invokes per model (default 20, quick 5)")
    args = ap.parse_args()
    runs = args.runs or (5 if args.quick else 20)
    console = Console(stderr=True, width=170)
    rows: list[dict[str, Any]] = []
    for name, rel, official_rel in MODELS:
        if args.quick and "large" in rel:
            continue
        src = SHARED / rel
        if not src.exists():
            console.print(f"[yellow]skipped {name}: {rel} not in the shared models[/]")
            continue
        t = time.perf_counter()
        graph = import_onnx(src) if src.suffix == ".onnx" else import_tflite(src)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # float models here have no calibration data
            b = build_tflm(graph, "int8", name=src.stem)
        build_s = time.perf_counter() - t
        assert b.arena is not None
        row: dict[str, Any] = {"name": name, "source": rel, "size": len(b.flatbuffer), "arena": b.arena.recommended,
               "invoke_ms": round(invoke_ms(b.flatbuffer, b.arena.recommended, runs), 3),
               "offline_plan": b.offline_plan, "build_s": round(build_s, 2),
               "official": official_rel, "official_size": None, "official_arena": None,
               "official_invoke_ms": None}
        if official_rel is not None:
            off = (SHARED / official_rel).read_bytes()
            arena = recommended_arena(off).recommended
            row.update(official_size=len(off), official_arena=arena,
                       official_invoke_ms=round(invoke_ms(off, arena, runs), 3))
        row.update(size_ratio=ratio(row["size"], row["official_size"]),
                   arena_ratio=ratio(row["arena"], row["official_arena"]),
                   invoke_ratio=ratio(row["invoke_ms"], row["official_invoke_ms"]))
        rows.append(row)

    table = Table(title=f"TFLM int8: ours vs official .tflite (tflite-micro, median of {runs} invokes)")
    for col in ("model", "bytes", "official", "ratio", "arena", "official", "ratio", "invoke ms",
                "official", "ratio", "plan"):
        table.add_column(col, justify="left" if col == "model" else "right")

    def fmt(v: object, spec: str = ",") -> str:
        return "-" if v is None else format(v, spec)

    for r in rows:
        table.add_row(r["name"], fmt(r["size"]), fmt(r["official_size"]), fmt(r["size_ratio"], ".3f"),
                      fmt(r["arena"]), fmt(r["official_arena"]), fmt(r["arena_ratio"], ".3f"),
                      fmt(r["invoke_ms"], ".2f"), fmt(r["official_invoke_ms"], ".2f"),
                      fmt(r["invoke_ratio"], ".3f"), "offline" if r["offline_plan"] else "tflm")
    console.print(table)
    compared = [r for r in rows if r["official_size"] is not None]
    bigger = [r["name"] for r in compared if r["size"] > r["official_size"]]
    larger_arena = [r["name"] for r in compared if r["arena"] > r["official_arena"]]
    console.print(f"size <= official: {'all' if not bigger else 'NOT ' + ', '.join(bigger)}; "
                  f"arena <= official: {'all' if not larger_arena else 'NOT ' + ', '.join(larger_arena)}")
    print(json.dumps({"models": rows, "all_size_le_official": not bigger,
                      "all_arena_le_official": not larger_arena}))


if __name__ == "__main__":
    main()
