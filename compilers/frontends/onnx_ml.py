"""Converters for the two ``ai.onnx.ml`` ops that skl2onnx writes after every classifier:
the label path and ZipMap. (Linear models and trees, ``ai.onnx.ml`` too, come later.)

skl2onnx's classifier graph ends in ``Softmax -> probabilities`` and, next to it,

* ``ArgMax -> ArrayFeatureExtractor(classes, index) -> Reshape -> Cast -> label``: the
  label is ``classes[argmax]``. When ``classes`` is the constant ``0, 1, ..., C-1`` (integer
  targets, the usual case) the label *is* the index: ArrayFeatureExtractor becomes a
  RESHAPE of the index (a CAST when the class type differs) and the whole path runs on the
  device (TFLM ``ARG_MAX``). Any other classes (strings, sparse integer labels) have no IR
  form: the label output is **dropped** with an ``ImportNote`` naming the classes and
  saying that ``argmax`` of the probabilities indexes them;
* ``ZipMap(probabilities) -> [{class: p}]``, a sequence of maps (the default unless the
  model was converted with ``options={"zipmap": False}``): it is imported as the ``[N, C]``
  probability tensor itself under the output's name, with an ``ImportNote``.

What it does not do: ``ai.onnx.ml`` ops that compute something (LinearClassifier,
TreeEnsemble, Normalizer, ...): they are refused by name like any unsupported op.
"""

from __future__ import annotations

import numpy as np

from ..ir import DType, Op
from .onnx_context import ML_DOMAIN, NodeCtx, converts


@converts("ZipMap", (1,), ("classlabels_int64s", "classlabels_strings"), domain=ML_DOMAIN,
          any_output_type=True)
def _zipmap(ctx: NodeCtx) -> None:
    out = ctx.output()
    ctx.emit(Op.IDENTITY, [ctx.input(0)], [out])
    ctx.b.notes.append(f"ZipMap node {ctx.name!r}: output {out!r} (a sequence of class -> "
                       f"probability maps) is imported as the {list(ctx.shape(0))} "
                       f"probability tensor")


@converts("ArrayFeatureExtractor", (1,), (), domain=ML_DOMAIN, any_output_type=True)
def _array_feature_extractor(ctx: NodeCtx) -> None:
    classes, index = ctx.const(0), ctx.tensor(ctx.input(1))
    out = ctx.output()
    # onnxruntime's shape for 1-D data: (1, number of indices)
    shape = ctx.b.onnx_types.get(out, (None, None))[0] or (1, index.size)
    if classes is not None and classes.ndim == 1 and classes.dtype.kind in "iu" and \
            np.array_equal(classes, np.arange(classes.size)) \
            and index.dtype in (DType.INT64, DType.INT32):
        shaped = ctx.emit(Op.RESHAPE, [index.name], shape=tuple(shape))
        target = DType.from_numpy(classes.dtype)
        if ctx.tensor(shaped).dtype is target:
            ctx.emit(Op.IDENTITY, [shaped], [out])
        else:
            ctx.emit(Op.CAST, [shaped], [out], to=target)
        return
    if classes is None:
        raise ctx.unsupported("the data input (the classes) must be a constant")
    shown = classes.reshape(-1)[:6].tolist()
    ctx.b.drop(out, f"the class labels {shown}{' ...' if classes.size > 6 else ''} "
                    f"({classes.dtype}) have no IR form; argmax of the probabilities indexes "
                    f"them")
