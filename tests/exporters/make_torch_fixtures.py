"""Writes the torch fixtures of this directory (run once on a developer machine; torch is not
a dependency of the project or its tests).

    python tests/exporters/make_torch_fixtures.py   # with torch installed

Each model is a small network in the style people train with torch, exported with
``torch.onnx.export`` (the TorchScript exporter, ``dynamo=False``, opset 17, batch 1; what
``torch.onnx.export(model, x, path)`` gives for a plain ``nn.Module``), with seeded weights and
batch-norm statistics that are not the identity. The versions used are written to
``VERSIONS.txt`` next to the files. The tests (``tests/test_compiler_exporters.py``) compare
our builds with onnxruntime on these files.
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import onnx
import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent


def _stats(m: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d | nn.BatchNorm1d):
            n = mod.num_features
            mod.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            mod.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            mod.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return m.eval()


class NchwCnn(nn.Module):
    """NCHW RGB input, Conv/BN/ReLU, MaxPool, Hardswish, global pool, x.view(x.size(0), -1)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.b1(self.c1(x))), 2)
        x = F.hardswish(self.c2(x))
        x = F.adaptive_avg_pool2d(x, 1)
        x = x.view(x.size(0), -1)
        return self.fc(x)


class PadCnn(nn.Module):
    """F.pad with asymmetric pads, explicit-pad convs, sigmoid, tanh, leaky relu."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3)
        self.c2 = nn.Conv2d(8, 8, (3, 1), padding=(1, 0))
        self.c3 = nn.Conv2d(8, 4, 3, stride=2)
        self.fc = nn.Linear(4 * 5 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.sigmoid(self.c1(F.pad(x, (1, 2, 0, 1))))
        x = F.leaky_relu(self.c2(x), 0.1)
        x = torch.tanh(self.c3(x))
        return self.fc(x.view(x.size(0), -1))


class Conv1dNet(nn.Module):
    """torch Conv1d over (N, C, W): conv, max pool, strided conv, tanh, flatten, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv1d(8, 16, 3, padding=1), nn.BatchNorm1d(16)
        self.c2 = nn.Conv1d(16, 16, 3, stride=2)
        self.fc = nn.Linear(16 * 9, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool1d(F.relu(self.b1(self.c1(x))), 2)
        x = torch.tanh(self.c2(x))
        return self.fc(torch.flatten(x, 1))


class DsCnn(nn.Module):
    """MLPerf Tiny's DS-CNN keyword spotter (64 channels, 4 depthwise-separable blocks) as
    written in torch: the first conv has explicit symmetric pads (5, 1), not TFLite's SAME."""

    def __init__(self) -> None:
        super().__init__()
        self.c0, self.b0 = nn.Conv2d(1, 64, (10, 4), stride=2, padding=(5, 1)), nn.BatchNorm2d(64)
        blocks = []
        for _ in range(4):
            blocks += [nn.Conv2d(64, 64, 3, padding=1, groups=64), nn.BatchNorm2d(64), nn.ReLU(),
                       nn.Conv2d(64, 64, 1), nn.BatchNorm2d(64), nn.ReLU()]
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.b0(self.c0(x)))
        x = self.blocks(x)
        x = F.avg_pool2d(x, (25, 5))
        return torch.softmax(self.fc(x.view(x.size(0), -1)), dim=1)


class AutoEncoder(nn.Module):
    """Strided conv, PReLU, ConvTranspose2d (kernel 4, stride 2, padding 1), sigmoid."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.act = nn.PReLU(4)
        self.dec = nn.ConvTranspose2d(4, 1, 4, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.dec(self.act(self.enc(x))))


MODELS = {
    "torch_nchw_cnn.onnx": (NchwCnn, (1, 3, 16, 16)),
    "torch_pad_cnn.onnx": (PadCnn, (1, 1, 12, 8)),
    "torch_conv1d.onnx": (Conv1dNet, (1, 8, 40)),
    "torch_dscnn_kws.onnx": (DsCnn, (1, 1, 49, 10)),
    "torch_autoencoder.onnx": (AutoEncoder, (1, 1, 16, 16)),
}


def main() -> None:
    for i, (name, (cls, shape)) in enumerate(sorted(MODELS.items())):
        torch.manual_seed(i)
        model = _stats(cls(), 100 + i)
        x = torch.randn(*shape)
        torch.onnx.export(model, (x,), str(HERE / name), input_names=["input"],
                          output_names=["output"], opset_version=17, dynamo=False)
        onnx.checker.check_model(onnx.load(str(HERE / name)))
        print(name, [n.op_type for n in onnx.load(str(HERE / name)).graph.node])
    (HERE / "VERSIONS.txt").write_text(
        f"torch {torch.__version__}\nonnx {onnx.__version__}\npython {sys.version.split()[0]}\n"
        f"platform {platform.machine()}\nexporter torch.onnx.export(dynamo=False, "
        f"opset_version=17)\n")


if __name__ == "__main__":
    main()
