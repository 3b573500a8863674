"""Compiler benchmark: what each shared model needs, planned by us and measured in TFLM.

For every model in the shared models folder (ONNX and TFLite) and the torch exports of
``tests/exporters/``: import it, run the standard passes and plan its int8 arena
(``compilers.report``): compile time, parameters, MACs, our planned int8 activation arena
and its lower bound; then build it for TFLM at int8 and measure the smallest arena the real
tflite-micro interpreter loads and invokes our flatbuffer with (``arena_measured``, TFLM's
own allocations included; ``arena_planned`` is the planner's activation estimate). In the
same run, the official int8 .tflite of the same model is loaded in tflite-micro (through the
simulator's model runner, in a sandboxed child process): its activation arena (the "head"
the GreedyMemoryPlanner lays out) and its total. Targets: planned arena <= the TFLM
activation arena on every model, and within 5% of the lower bound.

    python bench/compiler.py [--quick]

Prints a table; the last line is one JSON object {"models": [{"name", "planned_arena",
"lower_bound", "tflm_arena", "arena_planned", "arena_measured", "compile_s", ...}, ...],
"imported": N, "refused": [{"name", "reason"}, ...], ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from compilers.backends.base import RuntimeSpec, Target  # noqa: E402
from compilers.backends.tflm.build import build_tflm  # noqa: E402
from compilers.errors import CompilerError  # noqa: E402
from compilers.frontends import import_onnx, import_tflite  # noqa: E402
from compilers.report import report  # noqa: E402
from simulator.runtimes import ModelError, ModelRunner  # noqa: E402

SHARED = REPO.parent / "shared" / "models"
EXPORTERS = REPO / "tests" / "exporters"
# Models whose inputs have a symbolic batch dimension: the shape we compile them for.
INPUT_SHAPES = {"onnx/onnx2c/tfl_helloworld/model.onnx": {"dense_2_input": (1, 1)}}
# model -> the official int8 .tflite of the same network (None: there is none)
OFFICIAL = {
    "ad01": "mlperf_tiny/ad01_int8.tflite", "kws_ref_model": "mlperf_tiny/kws_ref_model.tflite",
    "pretrainedResnet_large": "mlperf_tiny/pretrainedResnet_large_int8.tflite",
    "pretrainedResnet": "mlperf_tiny/pretrainedResnet_quant.tflite", "vww_96": "mlperf_tiny/vww_96_int8.tflite",
    "str_ww_ref_model": "mlperf_tiny/str_ww_ref_model.tflite", "hello_world": "tflm_examples/hello_world_int8.tflite",
    "tfl_helloworld": "tflm_examples/hello_world_int8.tflite", "person_detect": "tflm_examples/person_detect.tflite",
    "micro_speech": "tflm_examples/micro_speech_quantized.tflite",
    "keyword_scrambled": "tflm_examples/keyword_scrambled_8bit.tflite",
}


def official_for(rel: str) -> str | None:
    key = rel.replace("onnx/onnx2c/", "").replace("/model.onnx", "")
    return next((v for k, v in sorted(OFFICIAL.items(), key=lambda kv: -len(kv[0])) if k in key), None)


def models(quick: bool) -> list[Path]:
    files = sorted(p for p in SHARED.rglob("*") if p.suffix in (".onnx", ".tflite"))
    files += sorted(EXPORTERS.glob("*.onnx"))
    return [p for p in files if not (quick and "large" in p.name)]


def measured_arena(graph) -> tuple[int | None, int | None, str | None]:  # type: ignore[no-untyped-def]
    """(arena tflite-micro needs for our int8 flatbuffer, its head, why not) ."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # synthetic calibration for float models
            b = build_tflm(graph, "int8", offline_plan=False)
    except CompilerError as exc:
        return None, None, f"{type(exc).__name__}: {exc}"
    assert b.arena is not None
    return b.arena.recommended, b.arena.head, None


# a board with room for any shared model: the runner measures the arena, the fit never refuses
ROOMY = Target("bench", "cortex-m4f", 0, "sp", 64 << 20, 64 << 20, 64 << 20, RuntimeSpec("tflm", "1", (), 0))


async def tflm_arena(runner: ModelRunner, rel: str, cache: dict[str, dict[str, int] | str]) -> dict[str, int] | str:
    if rel not in cache:
        try:
            plan = await runner.check((SHARED / rel).read_bytes(), ROOMY)
            rec = plan.details.get("recorded")
            cache[rel] = {"head": rec["head"], "total": rec["total"], "need": plan.need} if rec else "no record"
        except ModelError as exc:
            cache[rel] = f"{exc.result}: {exc}"
    return cache[rel]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="skip the large ResNet (done in < 60 s)")
    args = ap.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"shared models not found next to the checkout ({SHARED})")
    runner = ModelRunner()
    cache: dict[str, dict[str, int] | str] = {}
    rows: list[dict[str, Any]] = []
    try:
        for path in models(args.quick):
            rel = str(path.relative_to(SHARED if path.is_relative_to(SHARED) else REPO))
            t0 = time.perf_counter()
            try:
                graph = import_tflite(path) if path.suffix == ".tflite" else \
                    import_onnx(path, input_shapes=INPUT_SHAPES.get(rel))
                rep = report(graph)
            except CompilerError as exc:
                rows.append({"name": rel, "error": f"{type(exc).__name__}: {exc}"})
                continue
            compile_s = time.perf_counter() - t0
            int8 = next(f for f in rep.footprints if f.precision == "int8")
            measured, measured_head, why = measured_arena(graph)
            official = official_for(rel)
            tflm = await tflm_arena(runner, official, cache) if official else None
            head = tflm.get("head") if isinstance(tflm, dict) else None
            rows.append({"name": rel, "params": rep.params, "macs": rep.macs, "planned_arena": int8.arena,
                         "lower_bound": int8.lower_bound, "tflm_arena": head,
                         "tflm_total": tflm.get("total") if isinstance(tflm, dict) else None,
                         "official": official, "compile_s": round(compile_s, 4),
                         "vs_tflm": round(int8.arena / head, 3) if head else None,
                         "vs_bound": round(int8.arena / int8.lower_bound - 1, 4) if int8.lower_bound else 0.0,
                         "arena_planned": int8.arena, "arena_measured": measured,
                         "arena_measured_head": measured_head, "tflm_build_error": why})
    finally:
        runner.close()
    table = Table("model", "params", "MACs", "planned int8 arena", "lower bound", "TFLM arena (head)",
                  "planned/TFLM", "over bound", "measured (ours)", "compile s",
                  title="compiler: planned vs TFLM")
    for r in rows:
        if "error" in r:
            table.add_row(r["name"], "-", "-", "refused", "-", "-", "-", "-", "-", "-")
            continue
        table.add_row(r["name"], f"{r['params']:,}", f"{r['macs']:,}", f"{r['planned_arena']:,}",
                      f"{r['lower_bound']:,}", f"{r['tflm_arena']:,}" if r["tflm_arena"] else "-",
                      f"{r['vs_tflm']:.3f}" if r["vs_tflm"] else "-", f"{r['vs_bound']:.1%}",
                      f"{r['arena_measured']:,}" if r["arena_measured"] else "not built",
                      f"{r['compile_s']:.3f}")
    console = Console(width=200)
    console.print(table)
    ok = [r for r in rows if "error" not in r]
    over_tflm = [r["name"] for r in ok if r["tflm_arena"] and r["planned_arena"] > r["tflm_arena"]]
    over_bound = [r["name"] for r in ok if r["vs_bound"] > 0.05]
    console.print(f"planned <= TFLM activation arena: {'all' if not over_tflm else 'NOT ' + ', '.join(over_tflm)}; "
                  f"within 5% of the lower bound: {'all' if not over_bound else 'NOT ' + ', '.join(over_bound)}; "
                  f"refused: {', '.join(r['name'] for r in rows if 'error' in r) or 'none'}")
    refused = [{"name": r["name"], "reason": r["error"]} for r in rows if "error" in r]
    print(json.dumps({"models": rows, "imported": len(ok), "refused": refused,
                      "all_le_tflm": not over_tflm, "all_within_5pct": not over_bound}))


if __name__ == "__main__":
    asyncio.run(main())
