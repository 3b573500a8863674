"""The model registry: trained models stored content-addressed, by name and version.

``add`` checks the file is a model the compiler can read (ONNX or TFLite, by content) whose
tensors are of a sane size (none over ``Limits.model_tensor_max_bytes``: a model declaring a
16 GiB activation is refused with that figure), copies it to
``<data dir>/models/<sha256>.<format>`` (the same bytes are stored once, whatever their names: a
name never becomes a path), and records name, version, sha256 and an optional calibration set (an
``.npz`` stored the same way) in the database. Names and versions follow ``tinymlaas.names``. The
version defaults to the next integer for that name. Nothing is written unless the model
imports, with the version's import options (``tinymlaas.model_import.ImportOptions``: input
shapes, input layout; stored with it and used by every import of it: ``load_graph``) and its
side files: an ONNX model's external data is stored content-addressed beside it
(``<sha256>.data``, the row maps each location the model names to its sha256), found next to the
model file (``add``) or given by name (``add_data``, the API's upload), a location that leaves the
model's directory refused. ``ModelEntry.notes`` are the import's notes (a dropped label output, a
float16 upcast) for the caller to show.

The running server owns the registry (its admin API: ``POST /models``, ``GET /models``,
``DELETE /models/NAME:VERSION``, ``POST /models/NAME/inspect``); the CLI uses that API and comes
here directly only when no server runs, with the database that server uses. ``remove`` refuses a
model a deployment in flight uses; its files stay while another entry has the same bytes.
"""

from __future__ import annotations

import builtins
import hashlib
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy import delete, desc, insert, select

from tinymlaas import names
from tinymlaas.server.limits import Limits
from tinymlaas.model_import import (ImportOptionError, ImportOptions, Imported, external_locations, import_model,
                                    match_side_files, side_files)
from tinymlaas.store import Store
from tinymlaas.store.tables import MODELS

FORMATS = {"onnx": ".onnx", "tflite": ".tflite"}
SIDE_SUFFIX = ".data"  # an ONNX model's external data, stored as <sha256>.data


class RegistryError(ValueError):
    """A model that cannot be added or found; the message says which and why."""


class RegistryInUse(RegistryError):
    """A model that cannot be removed now (a deployment in flight uses it)."""


def model_format(data: bytes) -> str:
    """"tflite" (TFL3 identifier) or "onnx" (parses as a ModelProto with a graph), by content."""
    if data[4:8] == b"TFL3":
        return "tflite"
    import onnx
    from google.protobuf.message import DecodeError

    try:
        if onnx.ModelProto.FromString(data).graph.node:
            return "onnx"
    except (DecodeError, ValueError):
        pass
    raise RegistryError(f"not an ONNX or TFLite model (first bytes {data[:8].hex()})")


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:,.1f} {unit} ({n:,} bytes)"
    return f"{n:,} bytes"


def check_sizes(graph: Any, max_tensor_bytes: int) -> None:
    """Refuse a graph any of whose tensors would take more than ``max_tensor_bytes``."""
    for t in graph.tensors.values():
        nbytes = math.prod(t.shape) * t.dtype.itemsize  # Python ints: no int64 wrap-around
        if nbytes > max_tensor_bytes:
            raise RegistryError(f"tensor {t.name!r} of shape {tuple(t.shape)} ({t.dtype.name.lower()}) declares "
                                f"{_bytes(nbytes)}: the limit is {_bytes(max_tensor_bytes)}")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    version: str
    sha256: str
    format: str
    size: int
    path: Path
    calibration: Path | None
    added_at: float
    options: ImportOptions = ImportOptions()
    external: tuple[tuple[str, str], ...] = ()  # (location the model names, sha256 of the stored file)
    notes: tuple[str, ...] = ()  # the import's notes when this entry was just added (not stored)

    def side_files(self) -> dict[str, Path]:
        """The stored external-data files by the location the model names them."""
        return {loc: self.path.parent / f"{sha}{SIDE_SUFFIX}" for loc, sha in self.external}

    def as_json(self) -> dict[str, Any]:
        """The entry as the API and the CLI show it (notes only when just added)."""
        return {"name": self.name, "version": self.version, "sha256": self.sha256, "format": self.format,
                "size": self.size, "calibration": self.calibration is not None, "added_at": self.added_at,
                **self.options.as_json(), "external_files": [loc for loc, _ in self.external],
                "notes": list(self.notes)}

    def identity(self) -> dict[str, Any]:
        """What besides the model's sha256 decides its import (compile-cache keys)."""
        return {**self.options.as_json(), "external": dict(self.external)}


def load_model(entry: ModelEntry) -> Imported:
    """``entry`` imported with its options and side files (the graph and its notes)."""
    return import_model(entry.path.read_bytes(), entry.format, entry.options, entry.side_files())


def load_graph(entry: ModelEntry) -> Any:
    """``entry``'s graph (``compilers.ir.Graph``), as every build imports it."""
    return load_model(entry).graph


class ModelRegistry:
    def __init__(self, home: Path, store: Store, limits: Limits | None = None) -> None:
        self.dir = home / "models"
        self.store = store
        self.max_tensor_bytes = (limits or Limits()).model_tensor_max_bytes

    def _stored(self, data: bytes, suffix: str) -> tuple[str, Path]:
        sha = hashlib.sha256(data).hexdigest()
        path = self.dir / f"{sha}{suffix}"
        if not path.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(path.suffix + ".part")
            tmp.write_bytes(data)
            tmp.replace(path)
        return sha, path

    def add(self, file: Path, name: str | None = None, version: str | None = None,
            calibration: Path | None = None, extra: dict[str, bytes] | None = None,
            options: ImportOptions = ImportOptions()) -> ModelEntry:
        """Add the model ``file``; its external data is read next to it (``extra`` overrides by name)."""
        try:
            data = file.read_bytes()
            cal_data = calibration.read_bytes() if calibration is not None else None
            found = side_files(file)
        except OSError as exc:
            raise RegistryError(f"cannot read {exc.filename}: {exc.strerror}") from None
        except ImportOptionError as exc:
            raise RegistryError(str(exc)) from None
        return self.add_data(data, file.name, name, version, cal_data, {**found, **(extra or {})}, options)

    def _imported(self, data: bytes, fmt: str, filename: str, extra: dict[str, bytes] | None,
                  options: ImportOptions) -> tuple[Imported, dict[str, bytes]]:
        """Import with the options and side files (refusing what the compiler cannot read)."""
        try:
            files = match_side_files(filename, external_locations(data, fmt), extra or {})
            imported = import_model(data, fmt, options, files)
        except ImportOptionError as exc:
            raise RegistryError(str(exc)) from None
        check_sizes(imported.graph, self.max_tensor_bytes)  # absurd sizes refused before anything builds on them
        return imported, files

    def add_data(self, data: bytes, filename: str, name: str | None = None, version: str | None = None,
                 calibration: bytes | None = None, extra: dict[str, bytes] | None = None,
                 options: ImportOptions = ImportOptions()) -> ModelEntry:
        """Add a model given as bytes (``filename`` names it in errors and is the default name).
        ``extra``: further files of the model by name (an ONNX model's external data, by the
        location the model names or its base name); ``options``: the version's import options."""
        name = names.check("model", name or Path(filename).stem)
        if version is not None:
            names.check("version", version)
        fmt = model_format(data)
        imported, files = self._imported(data, fmt, filename, extra, options)  # before storing anything
        cal_data = calibration
        if cal_data is not None and not cal_data.startswith(b"PK"):
            raise RegistryError(f"calibration for {filename} is not an .npz file")
        if version is None:
            versions = [e.version for e in self.list(name)]
            version = str(max((int(v) for v in versions if v.isdigit()), default=0) + 1)
        elif self.find(name, version) is not None:
            raise RegistryError(f"model {name} version {version} exists already")
        sha, path = self._stored(data, FORMATS[fmt])
        cal_sha = self._stored(cal_data, ".npz")[0] if cal_data is not None else None
        external = {loc: self._stored(blob, SIDE_SUFFIX)[0] for loc, blob in sorted(files.items())}
        row = {"name": name, "version": version, "sha256": sha, "format": fmt, "size": len(data),
               "calibration_sha256": cal_sha, "added_at": time.time(), **_options_row(options),
               "external_files": external or None}
        self.store.write_sync(lambda c: c.execute(insert(MODELS).values(**row)))
        return replace(self._entry(row), notes=imported.notes)

    def _entry(self, row: Any) -> ModelEntry:
        r = dict(row._mapping) if hasattr(row, "_mapping") else row
        cal = self.dir / f"{r['calibration_sha256']}.npz" if r["calibration_sha256"] else None
        options = ImportOptions.make(r.get("input_shapes") or {}, r.get("input_layout") or "nchw")
        return ModelEntry(r["name"], r["version"], r["sha256"], r["format"], r["size"],
                          self.dir / f"{r['sha256']}{FORMATS[r['format']]}", cal, r["added_at"], options,
                          tuple(sorted((r.get("external_files") or {}).items())))

    def list(self, name: str | None = None) -> list[ModelEntry]:
        q = select(MODELS).order_by(MODELS.c.name, MODELS.c.added_at)
        if name is not None:
            q = q.where(MODELS.c.name == name)
        return [self._entry(r) for r in self.store.read_sync(lambda c: list(c.execute(q)))]

    def find(self, name: str, version: str | None = None) -> ModelEntry | None:
        q = select(MODELS).where(MODELS.c.name == name)
        q = q.where(MODELS.c.version == version) if version else q.order_by(desc(MODELS.c.added_at)).limit(1)
        row = self.store.read_sync(lambda c: c.execute(q).first())
        return self._entry(row) if row is not None else None

    def remove(self, name: str, version: str | None = None) -> "builtins.list[ModelEntry]":
        """Remove ``name:version`` (every version with ``version`` None); refuses while a
        deployment that is not finished uses it. Returns what was removed."""
        from tinymlaas.store.tables import DEPLOYMENTS

        if version is None and ":" in name:
            name, version = name.split(":", 1)
        entries = [e for e in self.list(name) if version is None or e.version == version]
        if not entries:
            self.get(name, version)  # the error naming what is known
        busy = self.store.read_sync(lambda c: list(c.execute(
            select(DEPLOYMENTS.c.id, DEPLOYMENTS.c.version).where(
                DEPLOYMENTS.c.model == name, DEPLOYMENTS.c.state.not_in(("succeeded", "failed", "cancelled"))))))
        busy = [r for r in busy if version is None or r.version == version]
        if busy:
            raise RegistryInUse(f"model {name}{':' + version if version else ''} is used by deployment(s) "
                                f"{', '.join(str(r.id) for r in busy)} in flight; cancel them first")
        versions = [e.version for e in entries]
        self.store.write_sync(lambda c: c.execute(delete(MODELS).where(MODELS.c.name == name,
                                                                       MODELS.c.version.in_(versions))))
        left = self.list()
        still = ({e.sha256 for e in left} | {e.calibration.stem for e in left if e.calibration}
                 | {sha for e in left for _, sha in e.external})
        for e in entries:
            for path in (e.path, e.calibration, *e.side_files().values()):
                if path is not None and path.stem not in still:
                    path.unlink(missing_ok=True)
        return entries

    def get(self, name: str, version: str | None = None) -> ModelEntry:
        """``name`` or ``name:version``; a sha256 prefix also works."""
        if version is None and ":" in name:
            name, version = name.split(":", 1)
        entry = self.find(name, version)
        if entry is None and len(name) >= 8:
            entry = next((e for e in self.list() if e.sha256.startswith(name)), None)
        if entry is None:
            known = sorted({e.name for e in self.list()})
            raise RegistryError(f"no model {name}{':' + version if version else ''}; "
                                f"known: {', '.join(known) or 'none (add one with tinymlaas models add FILE)'}")
        return entry



def _options_row(options: ImportOptions) -> dict[str, Any]:
    return {"input_shapes": {k: list(v) for k, v in options.input_shapes} or None,
            "input_layout": options.input_layout}
