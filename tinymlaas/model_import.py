"""How a registered model version is imported: its import options and its side files.

A model version is more than its file: ``ImportOptions`` holds what the operator declared when
adding it (``models add --input-shape NAME=1x49x10x1 --input-layout nhwc``; the API's form
fields ``input_shape`` and ``input_layout``):

* ``input_shapes``: input name -> full static shape, for inputs whose stored shape has a
  symbolic or dynamic dimension (a tf2onnx export with batch ``N``, a Keras TFLite file with
  batch -1). Every import of the version uses them (builds, the compile cache, inspect).
* ``input_layout``: ``"nchw"`` keeps the model's declared input shapes; ``"nhwc"`` declares the
  image inputs channels-last on every backend (``compilers.passes.input_layout``), so an NCHW
  ONNX CNN needs no TRANSPOSE on a TFLM build. Refused for a model without an NCHW image
  input (a TFLite model's inputs are channels-last already), naming its inputs.

Side files are an ONNX model's external data (``compilers.frontends.onnx_load``): ``side_files``
reads them next to a model file (every location checked: relative, inside the model's
directory, symbolic links followed), ``match_side_files`` pairs uploaded files with the
locations the model names (by location, else by a unique base name) and refuses extra files
the model does not name and locations nobody gave.

``import_model`` imports bytes with the options and side files and returns the graph with its
``ImportNote`` texts (the frontend's, such as a dropped skl2onnx label output, and the float16
upcast's), collected per call rather than through the process-wide warnings filter, so
concurrent imports on the API's worker threads do not mix their notes.

What it does not do: store anything (``tinymlaas.registry``) or build (``tinymlaas.builds``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Mapping

from compilers.errors import CompilerError

INPUT_LAYOUTS = ("nchw", "nhwc")
_SHAPE = re.compile(r"(?P<name>.+)=(?P<dims>\d+(?:x\d+)*)")


class ImportOptionError(ValueError):
    """An import option that is malformed or does not fit the model (message names it)."""


@dataclass(frozen=True)
class ImportOptions:
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()  # sorted by input name
    input_layout: str = "nchw"

    @classmethod
    def make(cls, input_shapes: Mapping[str, Iterable[int]] | None = None,
             input_layout: str | None = None) -> "ImportOptions":
        layout = input_layout or "nchw"
        if layout not in INPUT_LAYOUTS:
            raise ImportOptionError(f"input layout {layout!r}: expected one of {', '.join(INPUT_LAYOUTS)}")
        shapes = tuple(sorted((str(k), tuple(int(d) for d in v)) for k, v in (input_shapes or {}).items()))
        for name, dims in shapes:
            if not dims or any(d < 1 for d in dims):
                raise ImportOptionError(f"input shape of {name!r}: {dims} (every dimension must be 1 or more)")
        return cls(shapes, layout)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self.input_shapes)

    def as_json(self) -> dict[str, Any]:
        return {"input_shapes": {k: list(v) for k, v in self.input_shapes}, "input_layout": self.input_layout}


def parse_input_shapes(texts: Iterable[str]) -> dict[str, tuple[int, ...]]:
    """``["x=1x49x10x1", ...]`` -> ``{"x": (1, 49, 10, 1)}``; a malformed or repeated one is refused."""
    out: dict[str, tuple[int, ...]] = {}
    for text in texts:
        m = _SHAPE.fullmatch(text.strip())
        if m is None:
            raise ImportOptionError(f"input shape {text!r}: expected NAME=DIMxDIMx... (e.g. input_1=1x49x10x1)")
        name = m["name"]
        if name in out:
            raise ImportOptionError(f"input shape for {name!r} given twice")
        out[name] = tuple(int(d) for d in m["dims"].split("x"))
    return out


def external_locations(data: bytes, fmt: str) -> list[str]:
    """The side-file locations an ONNX model names (none for TFLite), as written in the model."""
    if fmt != "onnx":
        return []
    import onnx

    from compilers.frontends.onnx_load import external_files

    return external_files(onnx.ModelProto.FromString(data))


def side_files(file: Path) -> dict[str, bytes]:
    """The external-data files next to the ONNX model ``file``, by location (checked)."""
    data = file.read_bytes()
    if data[4:8] == b"TFL3":
        return {}
    import onnx
    from google.protobuf.message import DecodeError

    from compilers.frontends.onnx_load import side_files as locate

    try:
        proto = onnx.ModelProto.FromString(data)
    except (DecodeError, ValueError):
        return {}  # not an ONNX model: the registry says so
    try:
        return {loc: path.read_bytes() for loc, path in locate(proto, file.parent).items()}
    except CompilerError as exc:
        raise ImportOptionError(f"{file.name}: {exc}") from None
    except OSError as exc:
        raise ImportOptionError(f"cannot read {exc.filename}: {exc.strerror}") from None


def match_side_files(filename: str, locations: list[str], given: Mapping[str, bytes]) -> dict[str, bytes]:
    """The given files by the location the model names them (exact, else a unique base name)."""
    from compilers.frontends.onnx_load import safe_location

    try:
        wanted = {safe_location(loc, f"model {filename}: external data"): loc for loc in locations}
    except CompilerError as exc:
        raise ImportOptionError(str(exc)) from None
    out: dict[str, bytes] = {}
    for name, blob in given.items():
        norm = os.path.normpath(name).replace(os.sep, "/")
        base = PurePosixPath(norm).name
        hits = [w for w in wanted if w == norm] or [w for w in wanted if PurePosixPath(w).name == base]
        if len(hits) != 1 or hits[0] in out:
            raise ImportOptionError(f"model {filename}: extra file {name!r} is not one the model names (it keeps "
                                    f"external data in: {', '.join(sorted(wanted)) or 'no side file'})")
        out[hits[0]] = blob
    missing = sorted(set(wanted) - set(out))
    if missing:
        raise ImportOptionError(f"model {filename} keeps tensors in {', '.join(missing)}, which "
                                f"{'was' if len(missing) == 1 else 'were'} not given: add the file(s) with the model "
                                f"(models add finds them next to the model file; the API takes them as 'extra' parts)")
    return out


@dataclass(frozen=True)
class Imported:
    graph: Any  # compilers.ir.Graph
    notes: tuple[str, ...]  # ImportNote texts: what the import changed about the model's interface


def import_model(data: bytes, fmt: str, options: ImportOptions = ImportOptions(),
                 external: Mapping[str, bytes | str | os.PathLike[str]] | None = None) -> Imported:
    """Import ``data`` with the compiler's frontend for ``fmt`` (its errors name what is wrong)."""
    from compilers.passes.float16 import upcast_float16

    notes: list[str] = []

    def collect(message: object, *_: object, **__: object) -> None:
        notes.append(str(message))

    from compilers.errors import ShapeError

    try:
        if fmt == "onnx":
            from compilers.frontends.onnx import import_onnx

            graph = import_onnx(data, input_shapes=options.shapes or None, external=external or {}, warn=collect)
        else:
            from compilers.frontends import tflite

            graph = tflite.import_tflite(data, input_shapes=options.shapes or None)
    except ShapeError as exc:
        if exc.input_name is None or exc.suggested is None:
            raise
        shape = "x".join(map(str, exc.suggested))
        raise ImportOptionError(f"{exc}; for a registered model: models add --input-shape {exc.input_name}={shape} "
                                f"(API: form field input_shape={exc.input_name}={shape})") from None
    notes += upcast_float16(graph)[1]
    if options.input_layout == "nhwc":
        _check_images(graph)
    return Imported(graph, tuple(notes))


def _check_images(graph: Any) -> None:
    from compilers.passes import optimize
    from compilers.passes.input_layout import image_inputs

    if not image_inputs(optimize(graph)):
        shown = ", ".join(f"{n} {'x'.join(map(str, graph.tensors[n].shape))}" for n in graph.inputs)
        raise ImportOptionError(f"input layout nhwc: the model has no NCHW image input (a 4-D input its "
                                f"convolutions read; inputs: {shown}); TFLite models are channels-last already")


__all__ = ["INPUT_LAYOUTS", "ImportOptionError", "ImportOptions", "Imported", "external_locations", "import_model",
           "match_side_files", "parse_input_shapes", "side_files"]
