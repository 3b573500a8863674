"""Channels-last image inputs: ``with_input_layout(graph, layout) -> Graph``.

Why: an ONNX CNN takes NCHW images, but the sensor pipelines of microcontrollers and TFLM's
kernels are channels-last; a model fed NCHW needs a TRANSPOSE in front of its first
convolution, which many TFLM builds do not register (the bundled nRF52840 profile does not).
``input_layout="nhwc"`` (a property of a registered model version: ``models add
--input-layout nhwc``) declares the image inputs channels-last instead: each becomes a graph
input of shape (N, H, W, C) under the same name, followed by a TRANSPOSE (0, 3, 1, 2) to
``<name>@nchw``, which the network reads. The TFLM emitter expresses that TRANSPOSE as an
alias (the NHWC input is what its convolution reads: no op, no bytes); the C/Wasm backend
copies it into its arena (one more buffer of the input's size). Every backend therefore
takes the same input bytes for one model version. ``"nchw"`` (the default) keeps the model's
declared input shapes.

Image inputs (``image_inputs``): the 4-D non-constant graph inputs that reach a
convolution, transposed convolution or pooling window through element-wise ops only
(activations, QUANTIZE/DEQUANTIZE, CAST, PAD, CONCAT, ADD/SUB/MUL/DIV, BATCH_NORM; no RESHAPE
or TRANSPOSE in between): what the network reads as an image. An input that is flattened
first, or that is already channels-last (a TFLite model's, which the TFLite frontend puts
behind a TRANSPOSE), keeps its shape.

Run it after ``precision.prepare``: calibration samples stay in the model's declared layout,
and a quantised input keeps its (per-tensor) quantisation.

What it does not do: change any other tensor's layout (the backends choose those), or
reorder a 3-D or 5-D input.
"""

from __future__ import annotations

from ..errors import CompilerError
from ..ir import Graph, Node, Op, Tensor
from .rewrite import Editor

INPUT_LAYOUTS = ("nchw", "nhwc")
TO_NCHW = (0, 3, 1, 2)
_WINDOWS = (Op.CONV, Op.CONV_TRANSPOSE, Op.AVG_POOL, Op.MAX_POOL)
_ELEMENTWISE = (Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.RELU, Op.CLIP, Op.LEAKY_RELU, Op.PRELU, Op.SIGMOID,
                Op.HARD_SIGMOID, Op.HARD_SWISH, Op.TANH, Op.BATCH_NORM, Op.CONCAT, Op.PAD, Op.CAST,
                Op.IDENTITY, Op.QUANTIZE, Op.DEQUANTIZE)


def check_layout(layout: str) -> str:
    if layout not in INPUT_LAYOUTS:
        raise CompilerError(f"input_layout {layout!r}: expected one of {', '.join(INPUT_LAYOUTS)}")
    return layout


def image_inputs(graph: Graph) -> tuple[str, ...]:
    """The graph inputs the network reads as NCHW images (module docstring)."""
    readers = graph.consumers()

    def reaches_window(name: str, seen: set[str]) -> bool:
        for node in readers.get(name, ()):
            if node.op in _WINDOWS and node.inputs[0] == name:
                return True
            if node.op in _ELEMENTWISE:
                out = node.outputs[0]
                if len(graph.tensors[out].shape) == 4 and out not in seen:
                    seen.add(out)
                    if reaches_window(out, seen):
                        return True
        return False

    return tuple(n for n in graph.inputs if len(graph.tensors[n].shape) == 4
                 and not graph.tensors[n].is_const and reaches_window(n, {n}))


def with_input_layout(graph: Graph, layout: str) -> Graph:
    """``graph`` with its image inputs channels-last for ``layout="nhwc"``; as is for "nchw"."""
    if check_layout(layout) == "nchw":
        return graph
    images = image_inputs(graph)
    if not images:
        return graph
    ed = Editor(graph)
    for name in images:
        t = ed.tensors[name]
        if t.quant is not None and t.quant.axis is not None:
            raise CompilerError(f"input {name!r} is quantised per channel: it cannot be declared channels-last")
        inner = ed.fresh(f"{name}@nchw")
        ed.substitute(name, inner)
        ed.tensors[inner] = Tensor(inner, t.shape, t.dtype, t.quant)
        n, c, h, w = t.shape
        ed.tensors[name] = Tensor(name, (n, h, w, c), t.dtype, t.quant)
        ed.nodes.insert(0, Node.make(Op.TRANSPOSE, [name], [inner], name=f"{name}/to_nchw", perm=TO_NCHW))
    return ed.graph().validate()


__all__ = ["INPUT_LAYOUTS", "check_layout", "image_inputs", "with_input_layout"]
