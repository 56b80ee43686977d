"""dlib's ResNet face recogniser, read from the weights file that ships in the
`face-recognition-models` package and run in torch.

The network (dlib's dnn_face_recognition_ex.cpp, "anet_type"): a 150x150 RGB face chip ->
conv 7x7/2 (32) -> max pool 3x3/2 -> 3 residual blocks of 32 -> [down + 3] of 64 -> [down + 2]
of 128 -> [down + 2] of 256 -> one down block of 256 -> global average -> 128 outputs, no bias.
Every convolution is followed by a per-channel affine (a frozen batch norm). Trained by Davis King
with a metric loss (margin 0.04, distance threshold 0.6) on ~3 million faces; 99.38 % on LFW.
The weights file is CC0 (public domain).

Why not dlib itself: the `dlib-bin` wheel is built without BLAS and takes ~60 ms a face on this
project's 2-core reference machine; the same weights in torch take a few ms, batch, and run on a
GPU. `tests/engines/test_faceid.py` checks that both give the same descriptor.

The file format is dlib's serialisation: integers as a length byte (high bit: sign) and
little-endian bytes, strings as an integer length and the characters, floats as mantissa and
exponent integers, tensors as version 2, four dimensions and raw little-endian float32. A network
is written from the loss layer down (each layer's version), then from the input layer up (each
layer's name, fields, three state characters and three empty tensors).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from swapstream.core.errors import ModelError

WEIGHTS = "dlib_face_recognition_resnet_model_v1.dat"

# (filters, blocks, first block downsamples) of the five levels, input side first
LEVELS = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))


def weights_path() -> Path:
    """The recogniser's weights inside the installed `face-recognition-models` package (its
    __init__ needs pkg_resources, so it is found, not imported). ModelError when absent."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the face-recognition weights are not installed; "
                         "pip install face-recognition-models (a dependency of swapstream)")
    path = Path(spec.submodule_search_locations[0]) / "models" / WEIGHTS
    if not path.is_file():
        raise ModelError(f"{path} is missing; reinstall: pip install --force-reinstall "
                         f"face-recognition-models")
    return path


class _Reader:
    """Reads dlib's serialisation format from bytes."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def int(self) -> int:
        head = self.data[self.pos]
        n = head & 0x0F
        value = int.from_bytes(self.data[self.pos + 1:self.pos + 1 + n], "little")
        self.pos += 1 + n
        return -value if head & 0x80 else value

    def str(self) -> str:
        n = self.int()
        s = self.data[self.pos:self.pos + n].decode("latin-1")
        self.pos += n
        return s

    def float(self) -> float:
        mantissa = self.int()
        return mantissa * 2.0 ** self.int()

    def tensor(self) -> np.ndarray:
        """A tensor: (num_samples, k, rows, cols) float32."""
        version = self.int()
        if version != 2:
            raise ValueError(f"tensor format version {version} at byte {self.pos}")
        dims = [self.int() for _ in range(4)]
        n = int(np.prod(dims))
        a = np.frombuffer(self.data, "<f4", n, self.pos).reshape(dims)
        self.pos += 4 * n
        return a

    def alias(self) -> tuple[int, ...]:
        self.int()  # version
        return tuple(self.int() for _ in range(4))

    def state(self) -> None:
        """The three state characters and three empty tensors after every layer."""
        self.pos += 3
        for _ in range(3):
            self.tensor()


def read_dlib_layers(path: str | Path) -> tuple[np.ndarray, list[tuple[str, dict]]]:
    """Parse a dlib anet_type file: ((3,) float32 mean RGB of the input layer, the layers input
    side first as (name, fields)); con_4 fields: weight (N, C, kh, kw), bias (N,), stride, pad;
    affine_: gamma (C,), beta (C,); max_pool_2 / avg_pool_2: size, stride, pad; fc_2: weight
    (out, in). ValueError on anything else."""
    r = _Reader(Path(path).read_bytes())
    r.int()
    if r.str() != "loss_metric_2":
        raise ValueError("not a dlib metric-learning network")
    r.float(), r.float()  # margin, distance threshold
    while True:  # each layer's format version, loss side first; the input layer's add_layer is 3
        if r.int() == 3:
            break
    if r.str() != "input_rgb_image_sized":
        raise ValueError("unexpected input layer")
    mean = np.array([r.float(), r.float(), r.float()], np.float32)
    r.int(), r.int()  # chip rows, cols
    layers: list[tuple[str, dict]] = []
    while r.pos < len(r.data):
        name = r.str()
        f: dict = {}
        if name == "con_4":
            params = r.tensor().ravel()
            n, kh, kw, sy, sx, py, px = (r.int() for _ in range(7))
            shape, _ = r.alias(), r.alias()
            for _ in range(4):
                r.float()
            w = params[:int(np.prod(shape))].reshape(shape)
            f = {"weight": w, "bias": params[w.size:w.size + n], "stride": (sy, sx), "pad": (py, px)}
        elif name == "affine_":
            params = r.tensor().ravel()
            r.alias(), r.alias(), r.int()
            c = params.size // 2
            f = {"gamma": params[:c], "beta": params[c:]}
        elif name in ("max_pool_2", "avg_pool_2"):
            kh, kw, sy, sx, py, px = (r.int() for _ in range(6))
            f = {"size": (kh, kw), "stride": (sy, sx), "pad": (py, px)}
        elif name == "fc_2":
            outputs, inputs = r.int(), r.int()
            params = r.tensor().reshape(-1, outputs)  # (inputs [+ 1 bias row], outputs)
            f = {"weight": params[:inputs].T}
            layers.append((name, f))
            break  # the loss layer's own state follows
        elif name not in ("relu_", "add_prev_"):
            raise ValueError(f"unexpected layer {name!r}")
        r.state()
        if not layers:
            r.int()  # the layer on the input also keeps its sample expansion factor
        layers.append((name, f))
    return mean, layers


class _Block(nn.Module):
    """conv -> affine -> relu -> conv -> affine, plus the input (average-pooled when the block
    downsamples, zero-padded to the larger shape as dlib's add_prev does), then relu."""

    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(cin, cout, 3, 2 if down else 1, 0 if down else 1)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.scale1, self.shift1 = nn.Parameter(torch.ones(cout)), nn.Parameter(torch.zeros(cout))
        self.scale2, self.shift2 = nn.Parameter(torch.ones(cout)), nn.Parameter(torch.zeros(cout))

    @staticmethod
    def _affine(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        return x * scale[:, None, None] + shift[:, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self._affine(self.conv1(x), self.scale1, self.shift1))
        y = self._affine(self.conv2(y), self.scale2, self.shift2)
        skip = F.avg_pool2d(x, 2, 2) if self.down else x
        c, h, w = (max(a, b) for a, b in zip(y.shape[1:], skip.shape[1:]))
        y = F.pad(y, (0, w - y.shape[3], 0, h - y.shape[2], 0, c - y.shape[1]))
        skip = F.pad(skip, (0, w - skip.shape[3], 0, h - skip.shape[2], 0, c - skip.shape[1]))
        return F.relu(y + skip)


class FaceNet(nn.Module):
    """(N, 3, 150, 150) float32 RGB in [0, 255] -> (N, 128) float32 dlib face descriptors
    (not normalised; dlib's own length, ~1.4)."""

    def __init__(self, dim: int = 128) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(3))
        self.stem = nn.Conv2d(3, 32, 7, 2, 0)
        self.stem_scale, self.stem_shift = nn.Parameter(torch.ones(32)), nn.Parameter(torch.zeros(32))
        blocks, cin = [], 32
        for cout, count, down in LEVELS:
            for i in range(count):
                blocks.append(_Block(cin, cout, down and i == 0))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(256, dim, bias=False)  # dim: the descriptor's size (dlib's: 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean[None, :, None, None]) / 256.0
        x = self.stem(x) * self.stem_scale[:, None, None] + self.stem_shift[:, None, None]
        x = F.max_pool2d(F.relu(x), 3, 2)  # (N, 32, 35, 35)
        x = self.blocks(x)  # (N, 256, 2, 2)
        return self.fc(x.mean((2, 3)))


def load_facenet(path: str | Path | None = None) -> FaceNet:
    """FaceNet with dlib's weights (from the package unless `path`), in eval mode on the CPU.
    ModelError when the file is missing or not the recogniser."""
    path = Path(path) if path is not None else weights_path()
    try:
        mean, layers = read_dlib_layers(path)
    except (ValueError, IndexError, OSError) as e:
        raise ModelError(f"{path} is not dlib's face recogniser ({e}); reinstall "
                         f"face-recognition-models") from None
    convs = [f for n, f in layers if n == "con_4"]
    affines = [f for n, f in layers if n == "affine_"]
    fcs = [f for n, f in layers if n == "fc_2"]
    net = FaceNet(dim=int(fcs[0]["weight"].shape[0]) if fcs else 128)
    if len(convs) != 1 + 2 * len(net.blocks) or len(affines) != len(convs) or len(fcs) != 1:
        raise ModelError(f"{path} does not hold dlib's ResNet face recogniser; reinstall "
                         f"face-recognition-models")
    with torch.no_grad():
        net.mean.copy_(torch.from_numpy(mean))
        pairs = [(net.stem, net.stem_scale, net.stem_shift)]
        for b in net.blocks:
            pairs += [(b.conv1, b.scale1, b.shift1), (b.conv2, b.scale2, b.shift2)]
        for (conv, scale, shift), c, a in zip(pairs, convs, affines):
            conv.weight.copy_(torch.from_numpy(c["weight"].copy()))
            conv.bias.copy_(torch.from_numpy(c["bias"].copy()))
            scale.copy_(torch.from_numpy(a["gamma"].copy()))
            shift.copy_(torch.from_numpy(a["beta"].copy()))
        net.fc.weight.copy_(torch.from_numpy(np.ascontiguousarray(fcs[0]["weight"])))
    return net.eval()
