"""Models that mirror what real exporters write, built with ``onnx.helper`` and the TFLite schema
(for exporters too heavy for CI: TensorFlow/Keras, tf2onnx, onnxconverter-common). Each
builder says which exporter and version it imitates and what of its output it keeps: the op
sequence, the names' style, the symbolic batch, the layout transposes and the shape
arithmetic, with seeded weights. The real torch exports are files in ``tests/exporters/``
(``make_torch_fixtures.py``); skl2onnx runs at test time (``skl2onnx_digits_mlp``).

``exporter_set(directory)`` writes the whole set as files, as an operator would add them (the
external-data model with its ``.onnx.data`` beside it), each with the import options it needs
(``--input-shape`` for a symbolic batch; the NCHW torch CNN also as ``--input-layout nhwc``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from ai_edge_litert import schema_py_generated as S
from onnx import TensorProto, helper, numpy_helper

from compilers.backends.tflm.writer import ModelWriter
from compilers.ir import DType

F32 = TensorProto.FLOAT


def _init(name: str, a: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(a), name)


def _model(nodes: list, inputs: list, outputs: list, inits: list, opset: int,
           producer: tuple[str, str]) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "tf2onnx", inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                          producer_name=producer[0], producer_version=producer[1])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def tf2onnx_keras_cnn(seed: int = 0) -> onnx.ModelProto:
    """tf2onnx 1.16.1 (opset 15) of a Keras 3 / TF 2.16 ``Sequential`` exported with its
    default ``None`` batch: ``Input((28, 28, 1)) -> Conv2D(8, 3, padding="same",
    activation="relu") -> MaxPooling2D() -> Flatten() -> Dense(10, "softmax")``. tf2onnx keeps
    the NHWC interface (input ``[unk__6, 28, 28, 1]``) with Transposes around the NCHW Conv,
    and turns Keras 3's Flatten (``reshape(x, (shape(x)[0], -1))``, i.e. TF's
    ``Shape -> StridedSlice -> Pack -> Reshape``) into ``Shape -> Cast -> Slice -> Squeeze ->
    Unsqueeze -> Concat -> Cast -> Reshape``; Dense is ``MatMul + Add``."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((8, 1, 3, 3)) * 0.4).astype(np.float32)
    b = (rng.standard_normal(8) * 0.1).astype(np.float32)
    fc = (rng.standard_normal((14 * 14 * 8, 10)) * 0.05).astype(np.float32)
    fb = (rng.standard_normal(10) * 0.1).astype(np.float32)
    p = "sequential_1/"
    nodes = [
        helper.make_node("Transpose", ["conv2d_input"], ["t0"], p + "conv2d_1/Conv2D__6", perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["t0", "W", "B"], ["c0"], p + "conv2d_1/Relu", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1], strides=[1, 1], dilations=[1, 1], group=1),
        helper.make_node("Relu", ["c0"], ["r0"], p + "conv2d_1/Relu__5"),
        helper.make_node("MaxPool", ["r0"], ["m0"], p + "max_pooling2d_1/MaxPool2d",
                         kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Transpose", ["m0"], ["m1"], p + "max_pooling2d_1/MaxPool2d__12", perm=[0, 2, 3, 1]),
        helper.make_node("Shape", ["m1"], ["s0"], p + "flatten_1/Shape"),
        helper.make_node("Cast", ["s0"], ["s1"], p + "flatten_1/Shape__14", to=TensorProto.INT32),
        helper.make_node("Slice", ["s1", "begin", "end", "axes32"], ["s2"], p + "flatten_1/strided_slice"),
        helper.make_node("Squeeze", ["s2", "axes"], ["s3"], p + "flatten_1/strided_slice__18"),
        helper.make_node("Unsqueeze", ["s3", "axes"], ["s4"], p + "flatten_1/Reshape/shape_Unsqueeze__19"),
        helper.make_node("Concat", ["s4", "minus1"], ["s5"], p + "flatten_1/Reshape/shape_Concat__20", axis=0),
        helper.make_node("Cast", ["s5"], ["s6"], p + "flatten_1/Reshape__21", to=TensorProto.INT64),
        helper.make_node("Reshape", ["m1", "s6"], ["f0"], p + "flatten_1/Reshape"),
        helper.make_node("MatMul", ["f0", "FC"], ["d0"], p + "dense_1/MatMul"),
        helper.make_node("Add", ["d0", "FB"], ["d1"], p + "dense_1/BiasAdd"),
        helper.make_node("Softmax", ["d1"], ["dense_1"], p + "dense_1/Softmax", axis=-1),
    ]
    inits = [_init("W", w), _init("B", b), _init("FC", fc), _init("FB", fb),
             _init("begin", np.array([0], np.int32)), _init("end", np.array([1], np.int32)),
             _init("axes", np.array([0], np.int64)), _init("axes32", np.array([0], np.int32)),
             _init("minus1", np.array([-1], np.int32))]
    inp = helper.make_tensor_value_info("conv2d_input", F32, ["unk__6", 28, 28, 1])
    out = helper.make_tensor_value_info("dense_1", F32, ["unk__7", 10])
    return _model(nodes, [inp], [out], inits, 15, ("tf2onnx", "1.16.1 15c810"))


def tf2onnx_keras_conv1d(seed: int = 1) -> onnx.ModelProto:
    """tf2onnx 1.16.1 (opset 15) of Keras 3 ``Input((40, 8)) -> Conv1D(16, 3, padding="same",
    activation="relu") -> GlobalAveragePooling1D() -> Dense(4)``, batch fixed to 1. TF runs
    Conv1D as ``ExpandDims -> Conv2D -> Squeeze``; tf2onnx writes ``Unsqueeze(axis 1) ->
    Transpose(0,3,1,2) -> Conv (1x3) -> Transpose(0,2,3,1) -> Squeeze(axis 1)``, BiasAdd
    folded into the Conv, then Relu, ReduceMean over the steps, MatMul + Add."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((16, 8, 1, 3)) * 0.3).astype(np.float32)
    b = (rng.standard_normal(16) * 0.1).astype(np.float32)
    fc = (rng.standard_normal((16, 4)) * 0.3).astype(np.float32)
    fb = (rng.standard_normal(4) * 0.1).astype(np.float32)
    p = "functional_1/"
    nodes = [
        helper.make_node("Unsqueeze", ["input_layer", "ax1"], ["u0"], p + "conv1d_1/convolution/ExpandDims"),
        helper.make_node("Transpose", ["u0"], ["t0"], p + "conv1d_1/convolution__7", perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["t0", "W", "B"], ["c0"], p + "conv1d_1/convolution", kernel_shape=[1, 3],
                         pads=[0, 1, 0, 1], strides=[1, 1], dilations=[1, 1], group=1),
        helper.make_node("Transpose", ["c0"], ["t1"], p + "conv1d_1/convolution__9", perm=[0, 2, 3, 1]),
        helper.make_node("Squeeze", ["t1", "ax1"], ["q0"], p + "conv1d_1/convolution/Squeeze"),
        helper.make_node("Relu", ["q0"], ["r0"], p + "conv1d_1/Relu"),
        helper.make_node("ReduceMean", ["r0"], ["g0"], p + "global_average_pooling1d_1/Mean",
                         axes=[1], keepdims=0),
        helper.make_node("MatMul", ["g0", "FC"], ["d0"], p + "dense_1/MatMul"),
        helper.make_node("Add", ["d0", "FB"], ["output_0"], p + "dense_1/BiasAdd"),
    ]
    inits = [_init("W", w), _init("B", b), _init("FC", fc), _init("FB", fb),
             _init("ax1", np.array([1], np.int64))]
    inp = helper.make_tensor_value_info("input_layer", F32, [1, 40, 8])
    out = helper.make_tensor_value_info("output_0", F32, [1, 4])
    return _model(nodes, [inp], [out], inits, 15, ("tf2onnx", "1.16.1 15c810"))


def keras_tflite_cnn(seed: int = 2) -> bytes:
    """TF 2.16 ``TFLiteConverter.from_keras_model`` (float32, no optimisations) of the Keras 3
    CNN of ``tf2onnx_keras_cnn`` with its ``None`` batch: the input's ``shape`` is
    ``[1, 28, 28, 1]`` and its ``shape_signature`` ``[-1, 28, 28, 1]``; Flatten is
    ``SHAPE -> STRIDED_SLICE (shrink axis 0) -> PACK([batch, -1]) -> RESHAPE``, as that
    converter leaves it when the batch is dynamic."""
    rng = np.random.default_rng(seed)
    m = ModelWriter("MLIR Converted.")
    f = DType.FLOAT32
    x = m.tensor("serving_default_keras_tensor:0", (1, 28, 28, 1), f, None)
    m.sg.tensors[x].shapeSignature = np.array([-1, 28, 28, 1], np.int32)
    w = m.tensor("sequential_1/conv2d_1/convolution", (8, 3, 3, 1), f, None,
                 (rng.standard_normal((8, 3, 3, 1)) * 0.4).astype(np.float32))
    b = m.tensor("sequential_1/conv2d_1/Squeeze", (8,), f, None, (rng.standard_normal(8) * 0.1).astype(np.float32))
    c = m.tensor("sequential_1/conv2d_1/Relu", (1, 28, 28, 8), f, None)
    mp = m.tensor("sequential_1/max_pooling2d_1/MaxPool2d", (1, 14, 14, 8), f, None)
    sh = m.tensor("sequential_1/flatten_1/Shape", (4,), DType.INT32, None)
    begin = m.tensor("sequential_1/flatten_1/strided_slice/begin", (1,), DType.INT32, None, np.array([0], np.int32))
    end = m.tensor("sequential_1/flatten_1/strided_slice/end", (1,), DType.INT32, None, np.array([1], np.int32))
    st = m.tensor("sequential_1/flatten_1/strided_slice/strides", (1,), DType.INT32, None, np.array([1], np.int32))
    batch = m.tensor("sequential_1/flatten_1/strided_slice", (), DType.INT32, None)
    minus1 = m.tensor("sequential_1/flatten_1/Reshape/shape/1", (), DType.INT32, None, np.array(-1, np.int32))
    packed = m.tensor("sequential_1/flatten_1/Reshape/shape", (2,), DType.INT32, None)
    flat = m.tensor("sequential_1/flatten_1/Reshape", (1, 1568), f, None)
    m.sg.tensors[flat].shapeSignature = np.array([-1, 1568], np.int32)
    fw = m.tensor("sequential_1/dense_1/MatMul", (10, 1568), f, None,
                  (rng.standard_normal((10, 1568)) * 0.05).astype(np.float32))
    fb = m.tensor("sequential_1/dense_1/BiasAdd/ReadVariableOp", (10,), f, None,
                  (rng.standard_normal(10) * 0.1).astype(np.float32))
    logits = m.tensor("sequential_1/dense_1/BiasAdd", (1, 10), f, None)
    y = m.tensor("StatefulPartitionedCall_1:0", (1, 10), f, None)
    for t in (c, mp, logits, y):
        m.sg.tensors[t].shapeSignature = np.array([-1, *m.shape(t)[1:]], np.int32)
    m.op(S.BuiltinOperator.CONV_2D, [x, w, b], [c], S.BuiltinOptions.Conv2DOptions,
         S.Conv2DOptionsT(padding=S.Padding.SAME, strideH=1, strideW=1, dilationHFactor=1,
                          dilationWFactor=1, fusedActivationFunction=S.ActivationFunctionType.RELU))
    m.op(S.BuiltinOperator.MAX_POOL_2D, [c], [mp], S.BuiltinOptions.Pool2DOptions,
         S.Pool2DOptionsT(padding=S.Padding.VALID, strideH=2, strideW=2, filterHeight=2, filterWidth=2))
    so = S.ShapeOptionsT()
    so.outType = S.TensorType.INT32
    m.op(S.BuiltinOperator.SHAPE, [mp], [sh], S.BuiltinOptions.ShapeOptions, so)
    sso = S.StridedSliceOptionsT()
    sso.shrinkAxisMask = 1
    m.op(S.BuiltinOperator.STRIDED_SLICE, [sh, begin, end, st], [batch],
         S.BuiltinOptions.StridedSliceOptions, sso)
    po = S.PackOptionsT()
    po.valuesCount, po.axis = 2, 0
    m.op(S.BuiltinOperator.PACK, [batch, minus1], [packed], S.BuiltinOptions.PackOptions, po)
    m.op(S.BuiltinOperator.RESHAPE, [mp, packed], [flat], S.BuiltinOptions.ReshapeOptions,
         S.ReshapeOptionsT())
    m.op(S.BuiltinOperator.FULLY_CONNECTED, [flat, fw, fb], [logits],
         S.BuiltinOptions.FullyConnectedOptions, S.FullyConnectedOptionsT())
    m.op(S.BuiltinOperator.SOFTMAX, [logits], [y], S.BuiltinOptions.SoftmaxOptions,
         S.SoftmaxOptionsT(beta=1.0))
    return m.finish([x], [y])


def small_float_cnn(seed: int = 3) -> onnx.ModelProto:
    """A plain float32 ONNX CNN (opset 17): Conv -> Relu -> Conv -> GlobalAveragePool ->
    Flatten -> Gemm, the source of the float16 and external-data variants."""
    rng = np.random.default_rng(seed)
    inits = [_init("w1", (rng.standard_normal((8, 1, 3, 3)) * 0.4).astype(np.float32)),
             _init("b1", (rng.standard_normal(8) * 0.1).astype(np.float32)),
             _init("w2", (rng.standard_normal((8, 8, 3, 3)) * 0.2).astype(np.float32)),
             _init("b2", (rng.standard_normal(8) * 0.1).astype(np.float32)),
             _init("fc", (rng.standard_normal((4, 8)) * 0.3).astype(np.float32)),
             _init("fb", (rng.standard_normal(4) * 0.1).astype(np.float32))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], "conv2", pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c2"], ["g"], "gap"),
             helper.make_node("Flatten", ["g"], ["f"], "flatten"),
             helper.make_node("Gemm", ["f", "fc", "fb"], ["y"], "fc", transB=1)]
    g = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", F32, [1, 1, 12, 12])],
                          [helper.make_tensor_value_info("y", F32, [1, 4])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def to_float16(model: onnx.ModelProto, keep_io_types: bool) -> onnx.ModelProto:
    """What onnxconverter-common 1.14's ``float16.convert_float_to_float16(model,
    keep_io_types=...)`` writes: every float initializer float16; with ``keep_io_types`` the
    graph keeps float32 inputs/outputs and gets ``Cast`` nodes named
    ``graph_input_cast_<i>`` / ``graph_output_cast_<i>`` at the edges, otherwise the inputs
    and outputs themselves are float16."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for t in g.initializer:
        if t.data_type == F32:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))
    del g.value_info[:]
    if not keep_io_types:
        for v in [*g.input, *g.output]:
            v.type.tensor_type.elem_type = TensorProto.FLOAT16
        return m
    nodes = list(g.node)
    for i, v in enumerate(g.input):
        cast = f"graph_input_cast{i}"
        for n in nodes:
            n.input[:] = [cast if x == v.name else x for x in n.input]
        nodes.insert(0, helper.make_node("Cast", [v.name], [cast], f"graph_input_cast_{i}",
                                         to=TensorProto.FLOAT16))
    for i, v in enumerate(g.output):
        cast = f"graph_output_cast{i}"
        for n in nodes:
            n.output[:] = [cast if x == v.name else x for x in n.output]
        nodes.append(helper.make_node("Cast", [cast], [v.name], f"graph_output_cast_{i}",
                                      to=TensorProto.FLOAT))
    del g.node[:]
    g.node.extend(nodes)
    return m


def rounded_to_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The float32 model with every float initializer rounded through float16: what a
    float16 model means, computed in float32 (the reference for the upcast build)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for t in m.graph.initializer:
        if t.data_type == F32:
            a = numpy_helper.to_array(t).astype(np.float16).astype(np.float32)
            t.CopyFrom(numpy_helper.from_array(a, t.name))
    return m


def prelu_cnn(seed: int = 4) -> onnx.ModelProto:
    """torch-style ``Conv2d -> PReLU(num_parameters=C) -> Conv2d -> GlobalAveragePool ->
    Flatten -> Linear`` as the TorchScript exporter writes it (opset 17; PRelu's slope is an
    initializer of shape ``(C, 1, 1)``)."""
    rng = np.random.default_rng(seed)
    inits = [_init("w1", (rng.standard_normal((6, 2, 3, 3)) * 0.4).astype(np.float32)),
             _init("b1", (rng.standard_normal(6) * 0.1).astype(np.float32)),
             _init("slope", rng.uniform(0.05, 0.4, (6, 1, 1)).astype(np.float32)),
             _init("w2", (rng.standard_normal((4, 6, 3, 3)) * 0.3).astype(np.float32)),
             _init("b2", (rng.standard_normal(4) * 0.1).astype(np.float32)),
             _init("fc", (rng.standard_normal((3, 4)) * 0.4).astype(np.float32)),
             _init("fb", (rng.standard_normal(3) * 0.1).astype(np.float32))]
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], "/conv1/Conv", pads=[1, 1, 1, 1]),
             helper.make_node("PRelu", ["c1", "slope"], ["p1"], "/act/PRelu"),
             helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], "/conv2/Conv", strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["c2"], ["g"], "/pool/GlobalAveragePool"),
             helper.make_node("Flatten", ["g"], ["f"], "/Flatten"),
             helper.make_node("Gemm", ["f", "fc", "fb"], ["output"], "/fc/Gemm", transB=1)]
    g = helper.make_graph(nodes, "main_graph",
                          [helper.make_tensor_value_info("input", F32, [1, 2, 10, 10])],
                          [helper.make_tensor_value_info("output", F32, [1, 3])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)],
                          producer_name="pytorch", producer_version="2.13.0")
    m.ir_version = 8
    return m


def skl2onnx_digits_mlp() -> tuple[onnx.ModelProto, np.ndarray, np.ndarray, np.ndarray, Any]:
    """scikit-learn's ``MLPClassifier((32,))`` on the digits set through ``skl2onnx.to_onnx``
    (batch ``None``, label path and ZipMap included): (model, x_train, x_test, y_test, classifier)."""
    import skl2onnx
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning
        clf = MLPClassifier((32,), max_iter=300, random_state=0).fit(xtr, ytr)
    return skl2onnx.to_onnx(clf, xtr[:1]), xtr, xte, yte, clf


@dataclass(frozen=True)
class ExporterModel:
    name: str
    path: Path
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    input_layout: str = "nchw"


TORCH_DIR = Path(__file__).resolve().parent / "exporters"


def exporter_set(directory: Path) -> list[ExporterModel]:
    """Every model of the exporter test set as a file in ``directory``, with its import options."""
    directory.mkdir(parents=True, exist_ok=True)
    out = [ExporterModel(p.stem, p) for p in sorted(TORCH_DIR.glob("torch_*.onnx"))]
    out.append(ExporterModel("torch_nchw_cnn_nhwc", TORCH_DIR / "torch_nchw_cnn.onnx", input_layout="nhwc"))

    def save(name: str, model: onnx.ModelProto | bytes, **options: Any) -> None:
        path = directory / (f"{name}.tflite" if isinstance(model, bytes) else f"{name}.onnx")
        path.write_bytes(model if isinstance(model, bytes) else model.SerializeToString())
        out.append(ExporterModel(name, path, **options))

    save("tf2onnx_keras_cnn", tf2onnx_keras_cnn(), input_shapes={"conv2d_input": (1, 28, 28, 1)})
    save("tf2onnx_keras_conv1d", tf2onnx_keras_conv1d())
    save("keras_tflite_cnn", keras_tflite_cnn())
    save("small_float_cnn", small_float_cnn())
    save("float16_float32_io", to_float16(small_float_cnn(), keep_io_types=True))
    save("float16_io", to_float16(small_float_cnn(), keep_io_types=False))
    save("prelu_cnn", prelu_cnn())
    try:
        mlp = skl2onnx_digits_mlp()[0]
    except ImportError:
        pass
    else:
        save("skl2onnx_mlp", mlp, input_shapes={"X": (1, 64)})
    ext = directory / "external"
    ext.mkdir(exist_ok=True)
    onnx.save(small_float_cnn(), str(ext / "cnn_external.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="cnn_external.onnx.data", size_threshold=0)
    out.append(ExporterModel("cnn_external", ext / "cnn_external.onnx"))
    return out
