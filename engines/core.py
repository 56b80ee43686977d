"""What every swap engine shares that needs no torch: the identity and shape checks, warm-up,
building each direction once, and the numpy boundary of engines whose runtime takes numpy arrays
(ONNX Runtime). swapstream.engines.base.SwapEngine adds the checkpoint as a torch model and torch's boundary;
swapstream.engines.onnx_cached runs cached ONNX files without importing torch at all.

    crops (N, S, S, 3) uint8 RGB
      -> x (n, 3, S, S) float32 in [0, 1], contiguous                (numpy boundary)
      -> y (n, 4, S, S) float in [0, 1]: RGB + mask                  (the direction's forward)
      -> faces (N, S, S, 3) uint8 RGB, masks (N, S, S) float32 in [0, 1]
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from swapstream.core.errors import ModelError

Forward = Callable  # (n, 3, S, S) in [0, 1] -> (n, 4, S, S) in [0, 1]; torch tensors or numpy arrays


class SwapCore:
    """Set by the engine: identities (the model's decoders), size (crop side S), batch_size (the
    largest batch one forward call gets); build(identity) -> forward."""

    name = "core"
    identities: list[str]
    size: int
    batch_size: int
    _forward: dict[str, Forward]

    def build(self, identity: str) -> Forward:
        raise NotImplementedError

    def forward(self, identity: str) -> Forward:
        """The built forward of a direction (built on first use)."""
        if identity not in self._forward:
            self._forward[identity] = self.build(identity)
        return self._forward[identity]

    def warmup(self, identity: str, batches: tuple[int, ...] = (1,)) -> None:
        """Build a direction and run it once per batch size, so that no later call pays for
        compiling or allocating (live: before the first frame)."""
        s = self.size
        for n in batches:
            self.swap(np.zeros((n, s, s, 3), np.uint8), identity)

    def check(self, crops: np.ndarray, to_identity: str) -> None:
        """ModelError for an identity the model lacks; ValueError for crops of the wrong shape."""
        if to_identity not in self.identities:
            raise ModelError(f"the model has no decoder {to_identity!r}; it was trained on "
                             f"{', '.join(self.identities)}: choose a direction between those")
        if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (self.size, self.size, 3):
            raise ValueError(f"crops must be (N, {self.size}, {self.size}, 3) uint8, got "
                             f"{crops.dtype}{list(crops.shape)}")

    def swap(self, crops: np.ndarray, to_identity: str) -> tuple[np.ndarray, np.ndarray]:
        """(N, S, S, 3) uint8 RGB -> faces (N, S, S, 3) uint8 RGB, masks (N, S, S) float32 in
        [0, 1], in batches of at most batch_size (a forward taking numpy arrays)."""
        self.check(crops, to_identity)
        s = self.size
        if len(crops) == 0:
            return np.zeros((0, s, s, 3), np.uint8), np.zeros((0, s, s), np.float32)
        return self._swap_numpy(self.forward(to_identity), crops)

    def _swap_numpy(self, fn, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """swap() for a numpy forward: (n, 3, S, S) float32 in [0, 1] -> (n, 4, S, S) float."""
        faces, masks = [], []
        for i in range(0, len(crops), self.batch_size):
            x = crops[i:i + self.batch_size].transpose(0, 3, 1, 2).astype(np.float32)  # contiguous copy
            x *= np.float32(1 / 255)
            y = np.asarray(fn(x), np.float32)  # (n, 4, S, S)
            faces.append(np.clip(np.rint(y[:, :3] * 255), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1))
            masks.append(np.clip(y[:, 3], 0, 1))
        return np.ascontiguousarray(np.concatenate(faces)), np.concatenate(masks)
