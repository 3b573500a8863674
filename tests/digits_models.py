"""Two small classifiers of scikit-learn's bundled 8x8 digits, trained at test time, as ONNX.

What it does: ``digits_split()`` loads ``sklearn.datasets.load_digits`` (shipped with
scikit-learn, no download), scales the pixels 0..16 to [0, 1] and splits it (stratified,
seed 0) into 1347 training and 450 test images. ``train_mlp`` fits an ``MLPClassifier``
(64 -> 64 -> 32 -> 10, ReLU) and ``mlp_onnx`` writes it by hand as ONNX
(Gemm, Relu, Gemm, Relu, Gemm, Softmax; input ``x`` [1, 64]). ``train_cnn`` trains a small
CNN with a NumPy implementation (manual backprop, Adam): conv 3x3 with 8 filters (pad 1)
+ ReLU + 2x2 max pool + dense 10; ``cnn_onnx`` writes it as ONNX (Conv, Relu, MaxPool,
Flatten, Gemm; input ``x`` [1, 1, 8, 8] NCHW, output logits). Everything is seeded, so
the models are the same on every run (about 97% test accuracy each).

What it does not do: no data augmentation, no model selection; the models are there to
give quantisation something real to lose accuracy on, not to be good.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13


@dataclass(frozen=True)
class Split:
    x_train: np.ndarray  # (N, 64) float32 in [0, 1]
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def digits_split(seed: int = 0) -> Split:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=0.25, random_state=seed,
                                          stratify=d.target)
    return Split(xtr, ytr, xte, yte)


def _model(nodes: list, inits: list, in_shape: list[int], out: str, n_out: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "digits",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, n_out])],
        [numpy_helper.from_array(np.asarray(a, np.float32), n) for n, a in inits])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


# ---- MLP --------------------------------------------------------------------------------------
def train_mlp(split: Split, seed: int = 0):  # -> sklearn.neural_network.MLPClassifier
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=(64, 32), activation="relu", max_iter=300,
                        random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(split.x_train, split.y_train)
    return clf


def mlp_onnx(clf) -> onnx.ModelProto:  # type: ignore[no-untyped-def]
    """The MLP as Gemm (+ Relu) layers and a final Softmax, from ``coefs_``/``intercepts_``."""
    nodes, inits, prev = [], [], "x"
    layers = len(clf.coefs_)
    for k, (w, b) in enumerate(zip(clf.coefs_, clf.intercepts_, strict=True)):
        inits += [(f"W{k}", w), (f"b{k}", b)]
        out = f"gemm{k}"
        nodes.append(helper.make_node("Gemm", [prev, f"W{k}", f"b{k}"], [out], name=out))
        if k < layers - 1:
            nodes.append(helper.make_node("Relu", [out], [f"relu{k}"], name=f"relu{k}"))
            prev = f"relu{k}"
        else:
            prev = out
    nodes.append(helper.make_node("Softmax", [prev], ["probs"], name="softmax", axis=1))
    return _model(nodes, inits, [1, 64], "probs", clf.coefs_[-1].shape[1])


# ---- CNN --------------------------------------------------------------------------------------
@dataclass
class CNN:
    conv_w: np.ndarray  # (8, 1, 3, 3) OIHW
    conv_b: np.ndarray  # (8,)
    dense_w: np.ndarray  # (128, 10), rows in NCHW flatten order (c, h, w)
    dense_b: np.ndarray  # (10,)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Forward pass of (N, 64) images, for checking the training."""
        return _forward(self, _patches(x))[-1]


def _patches(x: np.ndarray) -> np.ndarray:
    """(N, 64) images -> (N, 64 positions, 9 taps) 3x3 patches with zero padding 1."""
    img = np.pad(x.reshape(-1, 8, 8), ((0, 0), (1, 1), (1, 1)))
    win = np.lib.stride_tricks.sliding_window_view(img, (3, 3), axis=(1, 2))  # (N,8,8,3,3)
    return win.reshape(-1, 64, 9).astype(np.float32)


def _forward(m: CNN, p: np.ndarray) -> tuple[np.ndarray, ...]:
    n = p.shape[0]
    z1 = p @ m.conv_w.reshape(8, 9).T + m.conv_b        # (N, 64, 8): position-major, NHWC
    a1 = np.maximum(z1, 0).reshape(n, 4, 2, 4, 2, 8)
    pooled = a1.max(axis=(2, 4))                         # (N, 4, 4, 8)
    f = pooled.transpose(0, 3, 1, 2).reshape(n, 128)     # NCHW flatten order
    logits = f @ m.dense_w + m.dense_b
    return z1, a1, pooled, f, logits


def train_cnn(split: Split, *, epochs: int = 20, batch: int = 32, lr: float = 0.01,
              seed: int = 0) -> CNN:
    rng = np.random.default_rng(seed)
    m = CNN(rng.normal(0, np.sqrt(2 / 9), (8, 1, 3, 3)).astype(np.float32),
            np.zeros(8, np.float32),
            rng.normal(0, np.sqrt(2 / 128), (128, 10)).astype(np.float32),
            np.zeros(10, np.float32))
    params = ["conv_w", "conv_b", "dense_w", "dense_b"]
    mom = {k: np.zeros_like(getattr(m, k)) for k in params}
    vel = {k: np.zeros_like(getattr(m, k)) for k in params}
    b1, b2, eps, step = 0.9, 0.999, 1e-8, 0
    p_all, y_all = _patches(split.x_train), split.y_train
    for _ in range(epochs):
        order = rng.permutation(len(y_all))
        for s in range(0, len(order), batch):
            idx = order[s:s + batch]
            p, y = p_all[idx], y_all[idx]
            n = len(idx)
            z1, a1, pooled, f, logits = _forward(m, p)
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            d_logits = e / e.sum(axis=1, keepdims=True)
            d_logits[np.arange(n), y] -= 1
            d_logits /= n
            grads = {"dense_w": f.T @ d_logits, "dense_b": d_logits.sum(axis=0)}
            d_pooled = (d_logits @ m.dense_w.T).reshape(n, 8, 4, 4).transpose(0, 2, 3, 1)
            mask = a1 == pooled[:, :, None, :, None, :]
            d_a1 = (mask * d_pooled[:, :, None, :, None, :]).reshape(n, 64, 8)
            d_z1 = d_a1 * (z1 > 0)
            grads["conv_w"] = np.einsum("npo,npk->ok", d_z1, p).reshape(8, 1, 3, 3)
            grads["conv_b"] = d_z1.sum(axis=(0, 1))
            step += 1
            for k in params:
                g = grads[k].astype(np.float32)
                mom[k] = b1 * mom[k] + (1 - b1) * g
                vel[k] = b2 * vel[k] + (1 - b2) * g * g
                upd = lr * (mom[k] / (1 - b1 ** step)) / (np.sqrt(vel[k] / (1 - b2 ** step)) + eps)
                setattr(m, k, (getattr(m, k) - upd).astype(np.float32))
    return m


def cnn_onnx(m: CNN) -> onnx.ModelProto:
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["conv"], name="conv",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
        helper.make_node("MaxPool", ["relu"], ["pool"], name="pool", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "dense_w", "dense_b"], ["logits"], name="dense"),
    ]
    inits = [("conv_w", m.conv_w), ("conv_b", m.conv_b), ("dense_w", m.dense_w),
             ("dense_b", m.dense_b)]
    return _model(nodes, inits, [1, 1, 8, 8], "logits", 10)
