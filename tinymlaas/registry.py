"""The model registry: trained models stored content-addressed, by name and version.

``add`` checks the file is a model the compiler can read (ONNX or TFLite, by content) whose
tensors are of a sane size (none over ``Limits.model_tensor_max_bytes``: a model declaring a
16 GiB activation is refused with that figure), copies it to
``<data dir>/models/<sha256>.<format>`` (the same bytes are stored once, whatever their
names: a name never becomes a path), and records name, version, sha256 and an optional
calibration set (an ``.npz`` stored the same way) in the database. Names and versions follow
``tinymlaas.names``. The version defaults to the next integer for that name. Nothing is
written unless the model imports.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, desc, insert, select

from tinymlaas import names
from tinymlaas.server.limits import Limits
from tinymlaas.store import Store
from tinymlaas.store.tables import MODELS

FORMATS = {"onnx": ".onnx", "tflite": ".tflite"}


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


def load_graph(data: bytes, fmt: str, max_tensor_bytes: int = Limits.model_tensor_max_bytes) -> Any:
    """Import with the compiler's frontend for ``fmt`` (its errors name what is wrong), and
    refuse absurd tensor sizes (``check_sizes``) before anything builds on them."""
    if fmt == "onnx":
        from compilers.frontends.onnx import import_onnx

        graph = import_onnx(data)
    else:
        from compilers.frontends import tflite

        graph = tflite.import_tflite(data)
    check_sizes(graph, max_tensor_bytes)
    return graph


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
            calibration: Path | None = None, extra: dict[str, bytes] | None = None) -> ModelEntry:
        try:
            data = file.read_bytes()
            cal_data = calibration.read_bytes() if calibration is not None else None
        except OSError as exc:
            raise RegistryError(f"cannot read {exc.filename}: {exc.strerror}") from None
        return self.add_data(data, file.name, name, version, cal_data, extra)

    def add_data(self, data: bytes, filename: str, name: str | None = None, version: str | None = None,
                 calibration: bytes | None = None, extra: dict[str, bytes] | None = None) -> ModelEntry:
        """Add a model given as bytes (``filename`` names it in errors and is the default name).
        ``extra``: further files of the model by name (an ONNX model's external data); this
        registry version stores none and refuses them by name."""
        if extra:
            raise RegistryError(f"model {filename}: extra files ({', '.join(sorted(extra))}) are not stored by "
                                "this registry; give a self-contained model")
        name = names.check("model", name or Path(filename).stem)
        if version is not None:
            names.check("version", version)
        fmt = model_format(data)
        load_graph(data, fmt, self.max_tensor_bytes)  # refuse what the compiler cannot read, before storing
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
        row = {"name": name, "version": version, "sha256": sha, "format": fmt, "size": len(data),
               "calibration_sha256": cal_sha, "added_at": time.time()}
        self.store.write_sync(lambda c: c.execute(insert(MODELS).values(**row)))
        return self._entry(row)

    def _entry(self, row: Any) -> ModelEntry:
        r = dict(row._mapping) if hasattr(row, "_mapping") else row
        cal = self.dir / f"{r['calibration_sha256']}.npz" if r["calibration_sha256"] else None
        return ModelEntry(r["name"], r["version"], r["sha256"], r["format"], r["size"],
                          self.dir / f"{r['sha256']}{FORMATS[r['format']]}", cal, r["added_at"])

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
        still = {e.sha256 for e in self.list()} | {e.calibration.stem for e in self.list() if e.calibration}
        for e in entries:
            for path in (e.path, e.calibration):
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

