"""Low-level TFLite flatbuffer writing for the TFLM backend: a ``ModelWriter`` that collects
tensors, buffers, operator codes and operators with the schema's object API
(``ai_edge_litert.schema_py_generated``) and serialises them.

* buffer 0 is the empty buffer TFLite requires; every constant gets its own buffer;
* constant data is written 16-byte aligned (``_AlignedBufferT`` writes the byte vector with
  ``Builder.StartVector(1, n, 16)``; the stock ``BufferT.Pack`` aligns uint8 data to 1);
* ``finish(metadata)`` adds optional metadata entries (name -> bytes) and returns the bytes
  with the ``TFL3`` file identifier;
* tensor names are shortened (``short_name``: the first of TFLite's ``;``-joined fused
  names, no layout suffix) and made unique.

What it does not do: no buffer deduplication, no > 2 GiB models (offset buffers), no
signatures, no sparsity.
"""

from __future__ import annotations

import re

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as S

from ...errors import UnsupportedDType
from ...ir import DType, Quant, fresh_name

ALIGN = 16

TENSOR_TYPES = {
    DType.FLOAT32: S.TensorType.FLOAT32, DType.FLOAT16: S.TensorType.FLOAT16,
    DType.FLOAT64: S.TensorType.FLOAT64, DType.INT8: S.TensorType.INT8,
    DType.UINT8: S.TensorType.UINT8, DType.INT16: S.TensorType.INT16,
    DType.UINT16: S.TensorType.UINT16, DType.INT32: S.TensorType.INT32,
    DType.UINT32: S.TensorType.UINT32, DType.INT64: S.TensorType.INT64,
    DType.UINT64: S.TensorType.UINT64, DType.BOOL: S.TensorType.BOOL,
}


_LAYOUT_SUFFIX = re.compile(r"@(nchw|nhwc|c1hw|oihw)$")


def short_name(name: str) -> str:
    """The name a tensor gets in the flatbuffer: the first of TFLite's ``;``-joined fused
    names (the converter lists every op folded into a tensor: ``model/activation/Relu;model/
    batch_normalization/FusedBatchNormV3;...``) without the frontend's layout suffix
    (``@nchw``, ``@oihw``...). Names are for people and tools; TFLM never reads them, and the
    full lists cost hundreds of bytes per model."""
    return _LAYOUT_SUFFIX.sub("", name.split(";")[0]) or name


class _AlignedBufferT(S.BufferT):  # type: ignore[misc]  # the schema module is untyped
    """A ``BufferT`` whose data vector starts on an ``ALIGN``-byte boundary."""

    def Pack(self, builder: flatbuffers.Builder) -> int:  # noqa: N802 - schema API name
        data_off = None
        if self.data is not None:
            payload = bytes(self.data)
            builder.StartVector(1, len(payload), ALIGN)
            builder.head = builder.head - len(payload)
            builder.Bytes[builder.head:builder.head + len(payload)] = payload
            builder.vectorNumElems = len(payload)
            data_off = builder.EndVector()
        S.BufferStart(builder)
        if data_off is not None:
            S.BufferAddData(builder, data_off)
        return int(S.BufferEnd(builder))


class ModelWriter:
    def __init__(self, description: str = "tinymlaas compilers.backends.tflm") -> None:
        self.model = S.ModelT()
        self.model.version = 3
        self.model.description = description
        self.model.buffers = [S.BufferT()]          # buffer 0: empty, as TFLite requires
        self.model.operatorCodes = []
        self.sg = S.SubGraphT()
        self.sg.tensors, self.sg.operators, self.sg.inputs, self.sg.outputs = [], [], [], []
        self.sg.name = "main"
        self._codes: dict[int, int] = {}
        self._names: set[str] = set()

    # ---- tensors ------------------------------------------------------------------------
    def _unique(self, name: str) -> str:
        name = fresh_name(short_name(name), self._names)
        self._names.add(name)
        return name

    def tensor(self, name: str, shape: tuple[int, ...], dtype: DType, quant: Quant | None,
               data: np.ndarray | None = None) -> int:
        if dtype not in TENSOR_TYPES:
            raise UnsupportedDType(f"tensor {name!r}: no TFLite type for {dtype.value}")
        t = S.TensorT()
        t.name = self._unique(name)
        t.shape = np.asarray(shape, np.int32)
        t.type = TENSOR_TYPES[dtype]
        if quant is not None:
            q = S.QuantizationParametersT()
            q.scale = np.asarray(quant.scale, np.float32)
            q.zeroPoint = np.asarray(quant.zero_point, np.int64)
            q.quantizedDimension = int(quant.axis or 0)
            t.quantization = q
        if data is not None:
            buf = _AlignedBufferT()
            arr = np.ascontiguousarray(np.asarray(data, dtype.numpy).reshape(shape))
            buf.data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
            self.model.buffers.append(buf)
            t.buffer = len(self.model.buffers) - 1
        else:
            t.buffer = 0
        self.sg.tensors.append(t)
        return len(self.sg.tensors) - 1

    def shape(self, index: int) -> tuple[int, ...]:
        return tuple(int(d) for d in self.sg.tensors[index].shape)

    # ---- operators ----------------------------------------------------------------------
    def opcode(self, builtin: int, version: int = 1) -> int:
        if builtin not in self._codes:
            c = S.OperatorCodeT()
            c.builtinCode = builtin
            c.deprecatedBuiltinCode = min(builtin, 127)
            c.version = version
            self.model.operatorCodes.append(c)
            self._codes[builtin] = len(self.model.operatorCodes) - 1
        return self._codes[builtin]

    def op(self, builtin: int, inputs: list[int], outputs: list[int],
           options_type: int = S.BuiltinOptions.NONE, options: object = None,
           version: int = 1) -> None:
        o = S.OperatorT()
        o.opcodeIndex = self.opcode(builtin, version)
        o.inputs = np.asarray(inputs, np.int32)
        o.outputs = np.asarray(outputs, np.int32)
        o.builtinOptionsType = options_type
        o.builtinOptions = options
        self.sg.operators.append(o)

    # ---- output -------------------------------------------------------------------------
    def finish(self, inputs: list[int], outputs: list[int],
               metadata: dict[str, bytes] | None = None) -> bytes:
        self.sg.inputs = np.asarray(inputs, np.int32)
        self.sg.outputs = np.asarray(outputs, np.int32)
        self.model.subgraphs = [self.sg]
        self.model.metadata = []
        for name, payload in (metadata or {}).items():
            buf = _AlignedBufferT()
            buf.data = bytes(payload)
            self.model.buffers.append(buf)
            m = S.MetadataT()
            m.name = name
            m.buffer = len(self.model.buffers) - 1
            self.model.metadata.append(m)
        if not self.model.metadata:
            self.model.metadata = None
        builder = flatbuffers.Builder(1024)
        builder.Finish(self.model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())
