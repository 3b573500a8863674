"""``tinymlaas models``: the model registry from the command line.

One source of truth: while a server runs, ``add`` (the file is uploaded), ``list``, ``rm`` and
``inspect`` go to its admin API, exactly as the device commands do, so the server deploys what
the CLI added. Only when no server runs do they open the registry directly, on the database
that server uses (``--db`` / ``$TINYMLAAS_DB`` / its ``api.json`` / the default in the data
directory); ``export`` builds locally from that same registry.

``add`` stores a model content-addressed with a name and version (and a calibration set, its
external data found next to it, and the version's import options ``--input-shape`` and
``--input-layout``), and prints the import's notes; ``list`` shows them; ``inspect`` shows what
a model needs — ops, parameters, MACs, the planner's estimate of flash and arena per precision
(an estimate), the import's notes — and, with ``--profile``, builds it with every backend the
board can use and gives each backend's fit verdict on the measured build: for the deliverable
backends the deploy decision's own candidates (``tinymlaas.deploy.verdict``, the same margin,
the sealed package as flash), through the server's compile cache while one runs, else the data
directory's (built in this process; the server reuses those builds); ``export`` compiles a model with
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
from tinymlaas import names
from tinymlaas.cli.client import OneLineErrors, api_path, call, local_db, running
from tinymlaas.model_import import ImportOptions, parse_input_shapes
from tinymlaas.registry import ModelRegistry
from tinymlaas.store import Store
from tinymlaas.cli.terminal import console

models_app = typer.Typer(help="The model registry: add, list and inspect trained models.", no_args_is_help=True)
out = console()


def models_registry(db: str | None) -> ModelRegistry:
    """The registry opened directly (no server runs): ``--db``, else the configured database, else
    the one the server of this data directory last used (its api.json), else the default."""
    from tinymlaas.cli.ops import load_for_cli

    settings = load_for_cli(None, None, {"database": {"url": db}} if db else None).settings
    settings.data.home.mkdir(parents=True, exist_ok=True)
    url = settings.database.url or local_db(None)  # --db, the configuration, else the server's api.json
    return ModelRegistry(settings.data.home, Store(url, pool_size=settings.database.pool_size,
                                                   max_overflow=settings.database.max_overflow))


def board(name: str, db: str | None) -> Any:
    """A profile by name, from the files and the profiles stored in the server's database."""
    from tinymlaas.cli.profiles import _book

    return _book(None, db).get(name)


def entry_json(e: Any) -> dict[str, Any]:
    return e.as_json()  # type: ignore[no-any-return]


def upload(file: Path, name: str | None, version: str | None, calibration: Path | None,
           extra: list[Path], options: ImportOptions) -> dict[str, Any]:
    """``POST /models`` with the file, its external data (found next to it, named by location),
    the calibration set and any extra files as multipart, and the import options as form fields."""
    from tinymlaas.model_import import side_files

    handles = []
    try:
        files: list[tuple[str, tuple[str, Any, str]]] = []
        for field, path in [("model", file)] + ([("calibration", calibration)] if calibration else []) + \
                [("extra", x) for x in extra]:
            handle = path.open("rb")
            handles.append(handle)
            files.append((field, (path.name, handle, "application/octet-stream")))
        given = {x.name for x in extra}
        files += [("extra", (loc, blob, "application/octet-stream")) for loc, blob in side_files(file).items()
                  if loc not in given and Path(loc).name not in given]
        form: dict[str, Any] = {k: v for k, v in (("name", name), ("version", version)) if v}
        form["input_layout"] = options.input_layout
        if options.input_shapes:
            form["input_shape"] = [f"{k}={'x'.join(map(str, v))}" for k, v in options.input_shapes]
        return call("POST", "/models", files=files, data=form, timeout=600)  # type: ignore[no-any-return]
    finally:
        for handle in handles:
            handle.close()


def print_notes(notes: list[str]) -> None:
    status = console(stderr=True)
    for note in notes:
        status.print(f"[yellow]note:[/] {escape(note)}", highlight=False)


def local_inspect(entry: Any, board_: Any, registry_: ModelRegistry, only: str | None, margin: float,
                  step: Any) -> dict[str, Any]:
    """``models inspect`` with no server: the data directory's compile cache, built in this process."""
    import asyncio

    from tinymlaas.deploy.cache import CompileCache
    from tinymlaas.deploy.signing import ServerKey
    from tinymlaas.deploy.verdict import inspect as run_inspect

    store = registry_.store
    store.start()
    cache = CompileCache(registry_.dir.parent / "artifacts", store, workers=0)
    try:
        return asyncio.run(run_inspect(entry, board_, cache, ServerKey.of_this_process().seal, only, margin, step))
    finally:
        cache.close()
        store.close()


def register(app: typer.Typer, one_line_errors: OneLineErrors) -> None:
    DbOpt = typer.Option(None, "--db", help="SQLAlchemy URL (database.url; default SQLite in the data dir)")

    @models_app.command("add")
    @one_line_errors
    def add(file: Path = typer.Argument(..., help="an .onnx or .tflite model"),
            name: Optional[str] = typer.Option(None, help="default: the file name"),
            version: Optional[str] = typer.Option(None, help="default: the next integer"),
            calibration: Optional[Path] = typer.Option(None, help=".npz of sample inputs for int8 calibration"),
            extra: Optional[list[Path]] = typer.Option(None, "--extra", help="a further file of the model, e.g. "
                                                       "ONNX external data kept elsewhere (repeatable; the files "
                                                       "next to the model are found by themselves)"),
            input_shape: Optional[list[str]] = typer.Option(
                None, "--input-shape", help="NAME=1x49x10x1: the full shape of an input with a symbolic or "
                                            "dynamic dimension (repeatable; used by every build of this version)"),
            input_layout: Optional[str] = typer.Option(
                None, "--input-layout", help="nchw (default: the model's declared input shapes) or nhwc (image "
                                             "inputs channels-last on every backend: no TRANSPOSE on TFLM)"),
            db: Optional[str] = DbOpt, as_json: bool = typer.Option(False, "--json")) -> None:
        """Store a model (content-addressed by sha256) under a name and version."""
        options = ImportOptions.make(parse_input_shapes(input_shape or []), input_layout)
        if running():
            entry = upload(file, name, version, calibration, extra or [], options)
        else:
            extras = {x.name: x.read_bytes() for x in extra or []}
            entry = entry_json(models_registry(db).add(file, name, version, calibration, extras, options))
        if as_json:
            keys = ("name", "version", "sha256", "format", "size", "input_shapes", "input_layout", "external_files",
                    "notes")
            sys.stdout.write(json.dumps({k: entry[k] for k in keys}) + "\n")
            return
        print_notes(entry["notes"])
        extra_text = "".join(f", {k} {v}" for k, v in (
            ("input shapes", ", ".join(f"{n}={'x'.join(map(str, d))}" for n, d in entry["input_shapes"].items())),
            ("input layout", entry["input_layout"] if entry["input_layout"] != "nchw" else ""),
            ("external data", ", ".join(entry["external_files"]))) if v)
        out.print(f"added {entry['name']}:{entry['version']} ({entry['format']}, {entry['size']:,} bytes, "
                  f"sha256 {entry['sha256'][:16]}…{extra_text})", highlight=False)

    @models_app.command("list")
    @one_line_errors
    def list_(db: Optional[str] = DbOpt, as_json: bool = typer.Option(False, "--json")) -> None:
        """Every model version in the registry."""
        entries = call("GET", "/models") if running() else [entry_json(e) for e in models_registry(db).list()]
        if as_json:
            sys.stdout.write(json.dumps([{k: e[k] for k in ("name", "version", "sha256", "format", "size",
                                                            "calibration")} for e in entries]) + "\n")
            return
        table = Table("name", "version", "format", "bytes", "sha256", "calibration", "added")
        for e in entries:
            table.add_row(escape(e["name"]), escape(e["version"]), e["format"], f"{e['size']:,}", e["sha256"][:16],
                          "yes" if e["calibration"] else "-",
                          datetime.fromtimestamp(e["added_at"]).strftime("%Y-%m-%d %H:%M"))
        out.print(table)

    @models_app.command("rm")
    @one_line_errors
    def rm(model: str = typer.Argument(..., help="NAME:VERSION, or NAME for every version"),
           db: Optional[str] = DbOpt) -> None:
        """Remove a model version (refused while a deployment in flight uses it)."""
        if running():
            removed = call("DELETE", api_path("models", model))["removed"]
        else:
            removed = [entry_json(e) for e in models_registry(db).remove(model)]
        for e in removed:
            out.print(f"removed {escape(e['name'])}:{escape(e['version'])}", highlight=False)

    @models_app.command("inspect")
    @one_line_errors
    def inspect(model: str = typer.Argument(..., help="NAME, NAME:VERSION or a sha256 prefix"),
                profile: Optional[str] = typer.Option(None, help="device profile: build for it and judge the fit"),
                backend: Optional[str] = typer.Option(None, help=f"only this backend ({', '.join(registry.names())})"),
                margin: float = typer.Option(0.10, min=0.0, max=0.99, help="safety margin, as the deploy decision"),
                db: Optional[str] = DbOpt, as_json: bool = typer.Option(False, "--json")) -> None:
        """Ops, parameters, MACs and the planner's estimate per precision; with --profile, every
        backend the board can use built for real and judged by its fit (the deploy decision's candidates)."""
        status = console(stderr=True)
        if running():
            with status.status(f"the server inspects {model}" + (f" for {profile}" if profile else "")):
                rep = call("POST", api_path("models", model, "inspect"),
                           json_body={"profile": profile, "backend": backend, "margin": margin}, timeout=3600)
        else:
            reg = models_registry(db)
            entry = reg.get(model)
            chosen = board(profile, db) if profile else None
            with status.status(f"inspecting {entry.name}:{entry.version}") as spinner:
                rep = local_inspect(entry, chosen, reg, backend, margin, spinner.update)
        if as_json:
            sys.stdout.write(json.dumps(rep) + "\n")
            return
        print_notes(rep.get("notes", []))
        out.print(f"[bold]{escape(rep['model'])}[/bold] ({rep['format']}, sha256 {rep['sha256'][:16]}…): "
                  f"{rep['params']:,} parameters, {rep['macs']:,} MACs", highlight=False)
        out.print("ops: " + ", ".join(f"{op} x{n}" for op, n in sorted(rep["ops"].items())), highlight=False)
        table = Table("precision", "flash (weights)", "arena (planned)", "lower bound",
                      title="planner estimate (not the verdict)")
        for precision, f in rep["footprints"].items():
            table.add_row(precision, f"{f['flash_bytes']:,} B", f"{f['arena']:,} B", f"{f['lower_bound']:,} B")
        out.print(table)
        if not rep["profile"]:
            return
        fits = rep["fits"]
        built = Table("backend", "precision", "flash (need / usable)", "RAM (need / usable)", "latency est.",
                      f"verdict on {rep['profile']}, {margin:.0%} margin", title="built and measured")
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
        target_board = board(profile, db) if profile else None
        backend = backend or default_backend(target_board)
        target = out_dir or names.child(Path.cwd(), f"{entry.name}-{entry.version}-{backend}-{precision}")
        status = console(stderr=True)
        with status.status(f"{entry.name}:{entry.version} -> {backend} {precision}") as spinner:
            done = build(entry, backend, precision, target_board,
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
