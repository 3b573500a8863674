"""Reading an ONNX model for the frontend: ``load_onnx(model, base_dir=None) -> ModelProto``.

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
  missing file or an ``offset``/``length`` past its end; then onnx's own
  ``external_data_helper`` reads the bytes. A model with external data but no directory
  to resolve it in (bytes without ``base_dir``) is refused naming the files it needs;
* checks the model with ``onnx.checker`` (after the external data is in memory).

``external_files(model)`` lists the side files a model refers to (what a registry that
stores the model must store with it).

What it does not do: write external data, follow URLs, or read anything outside the
model's directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper

from ..errors import ModelFormatError

ModelLike = onnx.ModelProto | bytes | bytearray | str | os.PathLike[str]


def _external(proto: onnx.ModelProto) -> list[onnx.TensorProto]:
    return [t for t in external_data_helper._get_all_tensors(proto)
            if t.HasField("data_location") and t.data_location == onnx.TensorProto.EXTERNAL]


def _info(t: onnx.TensorProto) -> dict[str, str]:
    return {e.key: e.value for e in t.external_data}


def external_files(model: onnx.ModelProto) -> list[str]:
    """The side-file locations the model's external tensors name (sorted, distinct)."""
    return sorted({_info(t).get("location", "") for t in _external(model)})


def _check_location(t: onnx.TensorProto, base: Path) -> None:
    info = _info(t)
    loc = info.get("location", "")
    where = f"tensor {t.name!r} keeps its data in {loc!r}"
    if not loc:
        raise ModelFormatError(f"tensor {t.name!r}: external data without a location")
    if os.path.isabs(loc) or Path(loc).drive:
        raise ModelFormatError(f"{where}: an absolute path; external data must be a file "
                               f"next to the model")
    root = base.resolve()
    path = (root / loc).resolve()
    if not path.is_relative_to(root):
        raise ModelFormatError(f"{where}, which leaves the model's directory: refused")
    if not path.is_file():
        raise ModelFormatError(f"{where}, which does not exist next to the model ({loc})")
    size = path.stat().st_size
    offset, length = int(info.get("offset", 0) or 0), info.get("length")
    end = offset + int(length) if length is not None else offset
    if offset < 0 or end > size:
        raise ModelFormatError(f"{where} at bytes {offset}..{end}, past the end of the "
                               f"{size}-byte file")


def _resolve_external(proto: onnx.ModelProto, base_dir: str | os.PathLike[str] | None) -> None:
    tensors = _external(proto)
    if not tensors:
        return
    if base_dir is None:
        raise ModelFormatError(
            f"the model keeps {len(tensors)} tensor(s) in external data "
            f"({', '.join(external_files(proto))}): give the model's path, or base_dir= the "
            f"directory that holds those files")
    base = Path(base_dir)
    for t in tensors:
        _check_location(t, base)
    try:
        external_data_helper.load_external_data_for_model(proto, str(base))
    except (OSError, ValueError) as e:
        raise ModelFormatError(f"cannot read the model's external data: {e}") from e


def load_onnx(model: ModelLike, base_dir: str | os.PathLike[str] | None = None
              ) -> onnx.ModelProto:
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
    _resolve_external(proto, base_dir)
    if not proto.graph.node and not proto.graph.output:
        raise ModelFormatError("the ONNX model has an empty graph (truncated or corrupt?)")
    try:
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFormatError(f"invalid ONNX model (truncated or corrupt?): {first}") from e
    return proto


__all__ = ["ModelLike", "external_files", "load_onnx"]
