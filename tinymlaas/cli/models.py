"""``tinymlaas models``: the model registry from the command line (no server needed).

``add`` stores a model content-addressed with a name and version (and a calibration set);
``list`` shows them; ``inspect`` shows what a model needs — ops, parameters, MACs, the
planner's estimate of flash and arena per precision — and, with ``--profile``, builds it with
every backend the board can use and gives each backend's fit verdict on the measured build
(the numbers the deploy decision uses, with the same margin); ``export`` compiles a model with
a backend (``tinymlaas.builds``) and writes its files, refusing a board that lacks an
operator the model needs.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from compilers.backends import registry
from device_profiles import Profile, get_profile
from tinymlaas import names
from tinymlaas.registry import ModelRegistry
from tinymlaas.runtime import home
from tinymlaas.store import Store
from tinymlaas.store.store import default_url
from tinymlaas.cli.terminal import console

models_app = typer.Typer(help="The model registry: add, list and inspect trained models.", no_args_is_help=True)
out = console()


def models_registry(db: str | None) -> ModelRegistry:
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
        entry = models_registry(db).add(file, name, version, calibration)
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
        entries = models_registry(db).list()
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
                profile: Optional[str] = typer.Option(None, help="device profile: build for it and judge the fit"),
                backend: Optional[str] = typer.Option(None, help=f"only this backend ({', '.join(registry.names())})"),
                margin: float = typer.Option(0.10, min=0.0, max=0.99, help="safety margin, as the deploy decision"),
                db: Optional[str] = DbOpt, as_json: bool = typer.Option(False, "--json")) -> None:
        """Ops, parameters, MACs and the planner's estimate per precision; with --profile, every
        backend the board can use built for real and judged by its fit (the deploy decision's numbers)."""
        from compilers.report import report

        from tinymlaas.registry import load_graph

        entry = models_registry(db).get(model)
        rep = report(load_graph(entry.path.read_bytes(), entry.format))
        board = get_profile(profile) if profile else None
        fits = verdicts(entry, board, [f.precision for f in rep.footprints], backend, margin) if board else []
        if as_json:
            sys.stdout.write(json.dumps({**rep.as_dict(), "model": f"{entry.name}:{entry.version}",
                                         "sha256": entry.sha256, "profile": profile, "margin": margin,
                                         "fits": fits}) + "\n")
            return
        out.print(f"[bold]{escape(entry.name)}:{escape(entry.version)}[/bold] ({entry.format}, sha256 "
                  f"{entry.sha256[:16]}…): {rep.params:,} parameters, {rep.macs:,} MACs", highlight=False)
        out.print("ops: " + ", ".join(f"{op} x{n}" for op, n in sorted(rep.ops.items())), highlight=False)
        table = Table("precision", "flash (weights)", "arena (planned)", "lower bound", title="planner estimate")
        for f in rep.footprints:
            table.add_row(f.precision, f"{f.flash_bytes:,} B", f"{f.arena:,} B", f"{f.lower_bound:,} B")
        out.print(table)
        if board is None:
            return
        built = Table("backend", "precision", "flash (need / usable)", "RAM (need / usable)", "latency est.",
                      f"verdict on {board.name}, {margin:.0%} margin", title="built and measured")
        for f in fits:
            built.add_row(f["backend"], f["precision"], _pair(f.get("flash_bytes"), f.get("flash_usable_bytes")),
                          _pair(f.get("ram_bytes"), f.get("ram_usable_bytes")),
                          f"{f['latency_ms']:,.1f} ms" if f.get("latency_ms") is not None else "-",
                          "fits" if f["fits"] else escape("; ".join(f["problems"])))
        out.print(built)

    @models_app.command("export")
    @one_line_errors
    def export(model: str = typer.Argument(..., help="NAME, NAME:VERSION or a sha256 prefix"),
               backend: Optional[str] = typer.Option(None, help=f"one of {', '.join(registry.names())} (default: the "
                                                                "first installed backend the board can run)"),
               precision: str = typer.Option("int8", help="int8 or float32"),
               profile: Optional[str] = typer.Option(None, help="check against this board (TFLM: its operators)"),
               out_dir: Optional[Path] = typer.Option(None, "--out", help="default: ./NAME-VERSION-BACKEND-PRECISION"),
               db: Optional[str] = DbOpt, as_json: bool = typer.Option(False, "--json")) -> None:
        """Compile a model with a backend and write its files (TFLM: .tflite, C array, op resolver,
        arena size; Wasm: the module; C: model.c and model.h) and build.json."""
        from tinymlaas.builds import build, default_backend

        entry = models_registry(db).get(model)
        board = get_profile(profile) if profile else None
        backend = backend or default_backend(board)
        target = out_dir or names.child(Path.cwd(), f"{entry.name}-{entry.version}-{backend}-{precision}")
        status = console(stderr=True)
        with status.status(f"{entry.name}:{entry.version} -> {backend} {precision}") as spinner:
            done = build(entry, backend, precision, board,
                         step=lambda what: spinner.update(f"{entry.name}:{entry.version}: {what}"))
        target.mkdir(parents=True, exist_ok=True)
        for name, data in done.files.items():
            names.child(target, name).write_bytes(data)
        art = done.artifact
        if as_json:
            sys.stdout.write(json.dumps({**done.build_json, "dir": str(target), "files": sorted(done.files)}) + "\n")
            return
        for w in art.warnings:
            status.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
        out.print(f"{escape(entry.name)}:{escape(entry.version)} -> {backend} {precision}: "
                  f"{escape(registry.get(backend).summary(art))}", highlight=False)
        if done.fit is not None:
            f = done.fit
            out.print(f"{profile}: {escape(f.verdict())} (RAM {f.ram_bytes:,} of {f.ram_usable_bytes:,} B free, "
                      f"flash {f.flash_bytes:,} of {f.flash_usable_bytes:,} B free)", highlight=False)
        out.print(f"wrote {len(done.files)} files to {escape(str(target))}/", highlight=False)

    app.add_typer(models_app, name="models")

    @app.command("backends")
    @one_line_errors
    def backends(as_json: bool = typer.Option(False, "--json")) -> None:
        """The compiler backends installed here (entry points ``tinymlaas.backends``), and any left out."""
        rows = [registry.describe(b) for b in registry.backends().values()]
        if as_json:
            sys.stdout.write(json.dumps({"backends": rows, "left_out": dict(registry.problems())}) + "\n")
            return
        table = Table("name", "title", "artifact", "device runtimes", "precisions", "module")
        for r in rows:
            kind = r["kind"]
            table.add_row(str(r["name"]), escape(str(r["title"])),
                          f"{kind['name']} ({kind['suffix']})" if isinstance(kind, dict) else "sources (export only)",
                          ", ".join(r["runtimes"]) or "-", ", ".join(r["precisions"]), str(r["module"]))  # type: ignore[arg-type]
        out.print(table)
        for name, why in registry.problems().items():
            out.print(f"[yellow]left out:[/] {escape(name)}: {escape(why)}", highlight=False)


def _pair(need: Any, usable: Any) -> str:
    return f"{need:,} / {usable:,} B" if isinstance(need, int) and isinstance(usable, int) else "-"


def verdicts(entry: Any, board: Profile, precisions: list[str], only: str | None,
             margin: float) -> list[dict[str, Any]]:
    """Every backend the board can use at each of ``precisions``, built and judged by its fit."""
    from compilers.errors import CompilerError
    from tinymlaas.builds import BuildError, build, usable_backends

    chosen = [b for b in usable_backends(board) if only is None or b.name == only]
    if only is not None and not chosen:
        raise BuildError(f"backend {only!r} cannot be used on {board.name} (usable: "
                         f"{', '.join(b.name for b in usable_backends(board)) or 'none'})")
    rows: list[dict[str, Any]] = []
    status = console(stderr=True)
    with status.status(f"building {entry.name}:{entry.version} for {board.name}") as spinner:
        for b in chosen:
            for precision in (p for p in precisions if p in b.precisions):
                spinner.update(f"building {entry.name}:{entry.version} for {board.name}: {b.name} {precision}")
                try:
                    fit = build(entry, b.name, precision, board, refuse_early=False, margin=margin).fit
                except (CompilerError, BuildError, ValueError) as exc:
                    rows.append({"backend": b.name, "precision": precision, "fits": False,
                                 "problems": [f"does not build: {exc}"], "latency_ms": None})
                    continue
                assert fit is not None
                rows.append(fit.as_json())
    return rows
