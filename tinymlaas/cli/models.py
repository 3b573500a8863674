"""``tinymlaas models``: the model registry from the command line (no server needed).

``add`` stores a model content-addressed with a name and version (and a calibration set);
``list`` shows them; ``inspect`` shows what a model needs — ops, parameters, MACs, and for
float32 and int8 the flash bytes, the planned arena and its lower bound — and, with
``--profile``, whether that fits the board; ``export`` compiles a model for a backend
(``tinymlaas.builds``) and writes the deliverable files, refusing a board that lacks an
operator the model needs.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from device_profiles import Profile, get_profile
from tinymlaas.registry import ModelRegistry
from tinymlaas.runtime import home
from tinymlaas.store import Store
from tinymlaas.store.store import default_url

models_app = typer.Typer(help="The model registry: add, list and inspect trained models.", no_args_is_help=True)
out = Console()


def registry(db: str | None) -> ModelRegistry:
    data_dir = home()
    data_dir.mkdir(parents=True, exist_ok=True)
    return ModelRegistry(data_dir, Store(db or default_url(data_dir)))


def register(app: typer.Typer, one_line_errors: Any) -> None:
    DbOpt = typer.Option(None, "--db", envvar="TINYMLAAS_DB", help="SQLAlchemy URL; default SQLite in the data dir")

    @models_app.command("add")
    @one_line_errors
    def add(file: Path = typer.Argument(..., help="an .onnx or .tflite model"),
            name: Optional[str] = typer.Option(None, help="default: the file name"),
            version: Optional[str] = typer.Option(None, help="default: the next integer"),
            calibration: Optional[Path] = typer.Option(None, help=".npz of sample inputs for int8 calibration"),
            db: Optional[str] = DbOpt, as_json: bool = typer.Option(False, "--json")) -> None:
        """Store a model (content-addressed by sha256) under a name and version."""
        entry = registry(db).add(file, name, version, calibration)
        if as_json:
            sys.stdout.write(json.dumps({"name": entry.name, "version": entry.version, "sha256": entry.sha256,
                                         "format": entry.format, "size": entry.size}) + "\n")
        else:
            out.print(f"added {entry.name}:{entry.version} ({entry.format}, {entry.size:,} bytes, "
                      f"sha256 {entry.sha256[:16]}…)", highlight=False)

    @models_app.command("list")
    @one_line_errors
    def list_(db: Optional[str] = DbOpt, as_json: bool = typer.Option(False, "--json")) -> None:
        """Every model version in the registry."""
        entries = registry(db).list()
        if as_json:
            sys.stdout.write(json.dumps([{"name": e.name, "version": e.version, "sha256": e.sha256,
                                          "format": e.format, "size": e.size,
                                          "calibration": e.calibration is not None} for e in entries]) + "\n")
            return
        table = Table("name", "version", "format", "bytes", "sha256", "calibration", "added")
        for e in entries:
            table.add_row(escape(e.name), escape(e.version), e.format, f"{e.size:,}", e.sha256[:16],
                          "yes" if e.calibration else "-", datetime.fromtimestamp(e.added_at).strftime("%Y-%m-%d %H:%M"))
        out.print(table)

    @models_app.command("inspect")
    @one_line_errors
    def inspect(model: str = typer.Argument(..., help="NAME, NAME:VERSION or a sha256 prefix"),
                profile: Optional[str] = typer.Option(None, help="device profile to check the fit against"),
                db: Optional[str] = DbOpt, as_json: bool = typer.Option(False, "--json")) -> None:
        """Ops, parameters, MACs, and per precision the flash and arena a model needs (and fit)."""
        from compilers.report import report

        from tinymlaas.registry import load_graph

        entry = registry(db).get(model)
        rep = report(load_graph(entry.path.read_bytes(), entry.format))
        board = get_profile(profile) if profile else None
        fits = {f.precision: fit(f, board) for f in rep.footprints} if board else {}
        if as_json:
            sys.stdout.write(json.dumps({**rep.as_dict(), "model": f"{entry.name}:{entry.version}",
                                         "sha256": entry.sha256, "profile": profile, "fits": fits}) + "\n")
            return
        out.print(f"[bold]{escape(entry.name)}:{escape(entry.version)}[/bold] ({entry.format}, sha256 "
                  f"{entry.sha256[:16]}…): {rep.params:,} parameters, {rep.macs:,} MACs", highlight=False)
        out.print("ops: " + ", ".join(f"{op} x{n}" for op, n in sorted(rep.ops.items())), highlight=False)
        table = Table("precision", "flash (weights)", "arena (planned)", "lower bound",
                      *(["fits " + board.name] if board else []))
        for f in rep.footprints:
            table.add_row(f.precision, f"{f.flash_bytes:,} B", f"{f.arena:,} B", f"{f.lower_bound:,} B",
                          *([escape(fits[f.precision]["verdict"])] if board else []))
        out.print(table)

    @models_app.command("export")
    @one_line_errors
    def export(model: str = typer.Argument(..., help="NAME, NAME:VERSION or a sha256 prefix"),
               backend: str = typer.Option("tflm", help="tflm, wasm or c"),
               precision: str = typer.Option("int8", help="int8 or float32"),
               profile: Optional[str] = typer.Option(None, help="check against this board (TFLM: its operators)"),
               out_dir: Optional[Path] = typer.Option(None, "--out", help="default: ./NAME-VERSION-BACKEND-PRECISION"),
               db: Optional[str] = DbOpt, as_json: bool = typer.Option(False, "--json")) -> None:
        """Compile a model for a backend and write the deliverable files (TFLM: .tflite, C array,
        op resolver, arena size, build.json)."""
        from tinymlaas.builds import build

        entry = registry(db).get(model)
        board = get_profile(profile) if profile else None
        status = Console(stderr=True)
        with status.status(f"{entry.name}:{entry.version} -> {backend} {precision}") as spinner:
            art = build(entry, backend, precision, board,
                        step=lambda what: spinner.update(f"{entry.name}:{entry.version}: {what}"))
        target = out_dir or Path(f"{entry.name}-{entry.version}-{backend}-{precision}")
        target.mkdir(parents=True, exist_ok=True)
        for name, data in art.files.items():
            (target / name).write_bytes(data)
        if as_json:
            sys.stdout.write(json.dumps({**art.figures, "dir": str(target), "files": sorted(art.files),
                                         "warnings": list(art.warnings)}) + "\n")
            return
        for w in art.warnings:
            status.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
        f = art.figures
        summary = {"tflm": lambda: (f"{f['bytes']:,} B, arena {f['arena']:,} B ("
                                    f"{'our offline plan' if f.get('offline_plan') else 'TFLM planner'}), "
                                    f"ops {', '.join(f['operators'])}"),
                   "wasm": lambda: f"{f['bytes']:,} B module, {f['pages']} pages of 64 KiB, arena {f['arena']:,} B",
                   "c": lambda: (f"{f['core']}: flash {f['flash']:,} B (.text {f['sections']['text']:,}, "
                                 f".rodata {f['sections']['rodata']:,}), RAM {f['ram']:,} B "
                                 f"(.bss {f['sections']['bss']:,} + stack estimate {f['stack_estimate']:,})")}
        out.print(f"{escape(f['model'])} -> {backend} {precision}: {summary[backend]()}", highlight=False)
        if "fits" in f:
            fit_ = f["fits"]
            out.print(f"{profile}: fits {escape(fit_['verdict'])} (SRAM {fit_['sram_need']:,} of "
                      f"{fit_['sram_free']:,} B free, flash {fit_['flash_need']:,} of "
                      f"{fit_['flash_free']:,} B free)", highlight=False)
        out.print(f"wrote {len(art.files)} files to {escape(str(target))}/", highlight=False)

    app.add_typer(models_app, name="models")


def fit(footprint: Any, board: Profile) -> dict[str, Any]:
    """Whether a footprint fits a board's free SRAM (arena + TFLM's own RAM) and flash."""
    from tinymlaas.builds import tflm_fit

    return tflm_fit(footprint.arena, footprint.flash_bytes, board)
