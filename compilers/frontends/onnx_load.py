"""Reading an ONNX model for the frontend: ``load_onnx(model, base_dir=None, external=None) -> ModelProto``.

What it does:

* takes a ``ModelProto`` (copied: the frontend writes ``input_shapes`` into it), the
  serialised bytes, or a path; an unreadable, truncated or invalid file is a
  ``ModelFormatError``;
* **external data** (tensors stored in a side file, ``data_location = EXTERNAL``, as
  ``onnx.save(..., save_as_external_data=True)`` and the torch exporter for models over
  2 GB write them): the side files are resolved against the model's own directory (the
  path's parent) or ``base_dir`` (for bytes and protos). Every ``location`` must name a
  file inside that directory: an absolute path, ``..`` or a symbolic link that leads
  out of it is refused (``ModelFormatError`` naming the tensor and the location), as is a
  missing file or an ``offset``/``length`` past its end. A model with external data but no
  directory to resolve it in (bytes without ``base_dir``) is refused naming the files it
  needs. ``external`` (location -> file path or bytes) gives the side files instead of a
  directory (a registry that stores them content-addressed, under other names): each
  location must still be a relative path that stays inside the model's directory
  (``safe_location``), and must be in the mapping. The bytes are copied into the tensors
  here (offset and length honoured) rather than by onnx's ``external_data_helper``, which
  only reads from a directory: one reader for both sources;
* checks the model with ``onnx.checker`` (after the external data is in memory).

``external_files(model)`` lists the side files a model refers to (what a registry that
stores the model must store with it), ``side_files(model, base_dir)`` finds and checks them
in a directory; ``safe_location(location)`` is the location rule alone.

What it does not do: write external data, follow URLs, or read anything outside the
model's directory.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Mapping

import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper

from ..errors import ModelFormatError

ModelLike = onnx.ModelProto | bytes | bytearray | str | os.PathLike[str]
ExternalFiles = Mapping[str, "bytes | str | os.PathLike[str]"]  # location -> bytes or the file holding them


def _external(proto: onnx.ModelProto) -> list[onnx.TensorProto]:
    return [t for t in external_data_helper._get_all_tensors(proto)
            if t.HasField("data_location") and t.data_location == onnx.TensorProto.EXTERNAL]


def _info(t: onnx.TensorProto) -> dict[str, str]:
    return {e.key: e.value for e in t.external_data}


def external_files(model: onnx.ModelProto) -> list[str]:
    """The side-file locations the model's external tensors name (sorted, distinct)."""
    return sorted({_info(t).get("location", "") for t in _external(model)})


def safe_location(location: str, what: str = "external data") -> str:
    """``location`` normalised (``./a.data`` -> ``a.data``), or ``ModelFormatError`` when it
    is empty, absolute or leaves the model's directory (``..``)."""
    if not location:
        raise ModelFormatError(f"{what} without a location")
    if os.path.isabs(location) or PurePosixPath(location).is_absolute() or PureWindowsPath(location).drive \
            or location.startswith("\\"):
        raise ModelFormatError(f"{what} in {location!r}: an absolute path; external data must be a file "
                               f"next to the model")
    norm = posixpath.normpath(location.replace("\\", "/"))
    if norm == ".." or norm.startswith("../"):
        raise ModelFormatError(f"{what} in {location!r}, which leaves the model's directory: refused")
    return norm


def _where(t: onnx.TensorProto) -> str:
    return f"tensor {t.name!r} keeps its data"


def _in_directory(t: onnx.TensorProto, base: Path) -> Path:
    """The file of ``t``'s external data inside ``base`` (symbolic links followed and checked)."""
    loc = _info(t).get("location", "")
    safe_location(loc, _where(t))
    root = base.resolve()
    path = (root / loc).resolve()
    if not path.is_relative_to(root):
        raise ModelFormatError(f"{_where(t)} in {loc!r}, which leaves the model's directory: refused")
    if not path.is_file():
        raise ModelFormatError(f"{_where(t)} in {loc!r}, which does not exist next to the model ({loc})")
    return path


def side_files(model: onnx.ModelProto, base_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """The model's external-data files in ``base_dir``, by normalised location, each checked
    (inside the directory, symbolic links followed; present): what a registry stores."""
    return {safe_location(_info(t).get("location", ""), _where(t)): _in_directory(t, Path(base_dir))
            for t in _external(model)}


def _load_tensor(t: onnx.TensorProto, blob: bytes) -> None:
    info = _info(t)
    offset, length = int(info.get("offset", 0) or 0), info.get("length")
    end = offset + int(length) if length is not None else len(blob)
    if offset < 0 or end > len(blob) or end < offset:
        raise ModelFormatError(f"{_where(t)} in {info.get('location', '')!r} at bytes {offset}..{end}, past the "
                               f"end of the {len(blob)}-byte file")
    t.raw_data = blob[offset:end]
    del t.external_data[:]
    t.data_location = onnx.TensorProto.DEFAULT


def _resolve_external(proto: onnx.ModelProto, base_dir: str | os.PathLike[str] | None,
                      external: ExternalFiles | None = None) -> None:
    tensors = _external(proto)
    if not tensors:
        return
    if base_dir is None and external is None:
        raise ModelFormatError(
            f"the model keeps {len(tensors)} tensor(s) in external data "
            f"({', '.join(external_files(proto))}): give the model's path, or base_dir= the "
            f"directory that holds those files")
    if external is None:
        assert base_dir is not None
        given: Mapping[str, bytes | str | os.PathLike[str]] = side_files(proto, base_dir)
    else:
        given = {safe_location(k): v for k, v in external.items()}
    blobs: dict[str, bytes] = {}
    for t in tensors:
        loc = _info(t).get("location", "")
        key = safe_location(loc, _where(t))
        if key not in given:
            raise ModelFormatError(f"{_where(t)} in {loc!r}, which was not given with the model "
                                   f"(given: {', '.join(sorted(given)) or 'none'})")
        if key not in blobs:
            source = given[key]
            try:
                blobs[key] = bytes(source) if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
            except OSError as e:
                raise ModelFormatError(f"cannot read the model's external data {loc!r}: {e.strerror}") from e
        _load_tensor(t, blobs[key])


def load_onnx(model: ModelLike, base_dir: str | os.PathLike[str] | None = None,
              external: ExternalFiles | None = None) -> onnx.ModelProto:
    """The checked ``ModelProto`` of ``model`` with its external data loaded (see the
    module docstring)."""
    if isinstance(model, onnx.ModelProto):
        proto = onnx.ModelProto()
        proto.CopyFrom(model)  # input_shapes are written into it: never touch the caller's
    else:
        if isinstance(model, (bytes, bytearray)):
            data = bytes(model)
        else:
            path = Path(model)
            try:
                data = path.read_bytes()
            except OSError as e:
                raise ModelFormatError(f"cannot read ONNX model {path}: {e}") from e
            base_dir = path.parent if base_dir is None else base_dir
        proto = onnx.ModelProto()
        try:
            proto.ParseFromString(data)
        except (DecodeError, ValueError, RuntimeError) as e:
            raise ModelFormatError(f"not a valid ONNX protobuf ({len(data)} bytes; truncated "
                                   f"or corrupt?): {e}") from e
    _resolve_external(proto, base_dir, external)
    if not proto.graph.node and not proto.graph.output:
        raise ModelFormatError("the ONNX model has an empty graph (truncated or corrupt?)")
    try:
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFormatError(f"invalid ONNX model (truncated or corrupt?): {first}") from e
    return proto


__all__ = ["ExternalFiles", "ModelLike", "external_files", "load_onnx", "safe_location", "side_files"]
