"""What every torch-built swap engine shares: the checkpoint as a torch model, the device and
precision, and torch's boundary (batching, the identity check and the numpy boundary come from
swapstream.engines.core). An engine implements only the tensor forward of one direction (the shared encoder
+ one identity's decoder), built on first use of that direction.

    crops (N, S, S, 3) uint8 RGB
      -> x (n, 3, S, S) float32 in [0, 1], contiguous, on the engine's device   (base)
      -> y (n, 4, S, S) float in [0, 1]: RGB + mask                            (engine.forward)
      -> faces (N, S, S, 3) uint8 RGB, masks (N, S, S) float32 in [0, 1]       (base)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from swapstream.core.errors import ConfigError
from swapstream.engines.checkpoint import load_checkpoint
from swapstream.engines.core import SwapCore
from swapstream.engines.device import DTYPES, resolve_device, resolve_precision

Forward = Callable[[torch.Tensor], torch.Tensor]


class Direction(nn.Module):
    """One swap direction as a module of its own (what compilers and exporters take):
    (n, 3, S, S) in [0, 1] of the module's dtype -> (n, 4, S, S) in [0, 1]."""

    def __init__(self, model: nn.Module, identity: str) -> None:
        super().__init__()
        self.encoder = model.encoder
        self.decoder = model.decoders[identity]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class SwapEngine(SwapCore):
    """Base of the engines. Subclasses set `name` and `precisions` (those it can run on each
    device class; the engines here take both from their SPEC in swapstream.engines.backends) and
    implement build(identity) -> forward.

    checkpoint: a checkpoint folder; device: auto | cpu | cuda[:N]; precision: auto | fp32 |
    fp16 | bf16 (auto: fp16 on CUDA, fp32 on CPU); batch_size: the largest batch one forward
    call gets (engines with a fixed batch range are built for 1..batch_size)."""

    name = "base"
    precisions: dict[str, tuple[str, ...]] = {"cpu": ("fp32",), "cuda": ("fp32", "fp16")}
    # forward takes and returns numpy arrays, and the conversions around it are done in numpy:
    # for runtimes other than torch (ONNX Runtime), whose threads would otherwise share the cores
    # with torch's OpenMP threads spinning after each conversion (measured: lite64 through ONNX
    # Runtime at half speed after a torch op in the same call)
    numpy_io = False

    def __init__(self, checkpoint: str | Path, device: str = "auto", batch_size: int = 32,
                 precision: str = "auto", **options) -> None:
        if options:
            raise ConfigError(f"engine {self.name!r} takes no option {', '.join(options)}")
        ckpt = load_checkpoint(checkpoint)
        self.model = ckpt.model.eval()
        self.sha256 = ckpt.sha256
        self.identities = ckpt.identities
        self.size = ckpt.model.cfg.size
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        kind = "cuda" if self.device.type == "cuda" else "cpu"
        if self.precision not in self.precisions.get(kind, ()):
            runs = ", ".join(self.precisions.get(kind, ())) or "nothing"
            raise ConfigError(f"engine {self.name!r} cannot run {self.precision} on {kind} (it runs "
                              f"{runs} there); pass --precision {self.precisions.get(kind, ('fp32',))[0]}")
        self.dtype = DTYPES[self.precision]
        if batch_size < 1:
            raise ConfigError(f"batch size {batch_size} must be at least 1")
        self.batch_size = batch_size
        self._forward: dict[str, Forward] = {}

    def __repr__(self) -> str:
        return f"{self.name} engine ({self.precision}, {self.device})"

    # -- what an engine implements -------------------------------------------------------------

    def build(self, identity: str) -> Forward:
        """The forward of one direction: (n, 3, S, S) float32 in [0, 1] on self.device ->
        (n, 4, S, S) float in [0, 1] (any float dtype, any device). numpy arrays in and out
        where numpy_io is set."""
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------------

    def direction(self, identity: str) -> Direction:
        """A fresh module for encoder + `identity`'s decoder, in eval mode on self.device (fp32)."""
        return Direction(self.model, identity).eval().to(self.device)

    @torch.inference_mode()
    def swap(self, crops: np.ndarray, to_identity: str) -> tuple[np.ndarray, np.ndarray]:
        """(N, S, S, 3) uint8 RGB -> faces (N, S, S, 3) uint8 RGB, masks (N, S, S) float32 in
        [0, 1], in batches of at most batch_size."""
        if self.numpy_io:
            return super().swap(crops, to_identity)
        self.check(crops, to_identity)
        s = self.size
        if len(crops) == 0:
            return np.zeros((0, s, s, 3), np.uint8), np.zeros((0, s, s), np.float32)
        fn = self.forward(to_identity)
        faces, masks = [], []
        for i in range(0, len(crops), self.batch_size):
            x = torch.from_numpy(crops[i:i + self.batch_size]).to(self.device)
            # contiguous NCHW: the permuted view is channels-last in memory, which sends every
            # convolution down a slower path on CPU (measured: 10.5 vs 5.5 ms a face, lite64)
            x = x.permute(0, 3, 1, 2).float().div_(255).contiguous()  # (n, 3, S, S) in [0, 1]
            y = fn(x).float()  # (n, 4, S, S)
            faces.append((y[:, :3] * 255).round_().clamp_(0, 255).byte().permute(0, 2, 3, 1).cpu())
            masks.append(y[:, 3].clamp(0, 1).cpu())
        return torch.cat(faces).numpy(), torch.cat(masks).numpy()
