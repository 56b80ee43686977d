"""dlib's face recogniser as a frozen loss network: perceptual features and identity embeddings
of training crops (swapstream.engines.faceid: FaceNet, weights from `face-recognition-models`).

One FaceLossNet is built per training run, on the training device, when a perceptual or identity
loss weight is above 0; its network never trains (requires_grad off, eval mode), so gradients
reach the prediction only.

Geometry, from the crop's own landmark template, never guessed: a training crop is S px with the
stable-landmark square spanning S * coverage px (core.geometry.template_in_crop); dlib's chip is
150 px, cut by engines.identity.chip_matrix from five of those landmarks. chip_matrix applied to
the template gives the similarity crop px -> chip px: scale 2.12 and a 3.7 degree tilt for 64 px
at coverage 0.7 (1.06 for 128 px), the chip's 150 px spanning the crop and a few px below it.

- identity (`embed`): the crop warped into the whole 150 px chip with that similarity (tilt and
  padding included, as face_chip cuts a frame for the recogniser), through the whole network, 128
  numbers of length 1. The descriptor is a global average of a 2x2 map: it is only comparable to
  dlib's when the chip is dlib's, so no smaller chip here.
- perceptual (`features`): the crop resized by the same scale, and only the crop (the chip's
  padding and tilt add nothing to a per-location comparison), through the stem and the first
  PERCEPTUAL_LEVELS residual levels. The scale is what matters: the filters were trained on faces
  of the chip's size, and the stem (7x7 / 2) and max pool take 4x off at once, so at the crop's
  own 64 px the first level would see the face at half dlib's size on a 14 px grid, below the
  detail the loss is meant to restore; at the chip's scale it sees it as trained, on a 32 px grid
  (half the crop's). The input is round(S * scale) px: 136 for 64 px at coverage 0.7 (not 150:
  the same face-to-receptive-field ratio without the padding), and 136 for 128 px crops too,
  which are shrunk slightly instead of upsampled.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from swapstream.core.geometry import template_in_crop
from swapstream.engines.faceid import LEVELS, load_facenet
from swapstream.engines.identity import CHIP, chip_matrix

PERCEPTUAL_LEVELS = 2  # residual levels whose outputs are compared (32 and 64 channels)


def _to_norm(n: int) -> np.ndarray:
    """3x3: pixel coordinate (centres at integers) -> grid_sample's normalised coordinate
    (align_corners=False)."""
    return np.array([[2 / n, 0, 1 / n - 1], [0, 2 / n, 1 / n - 1], [0, 0, 1]])


def crop_to_chip(size: int, coverage: float, face: str = "face") -> np.ndarray:
    """(2, 3) float64 similarity: crop px -> 150 px chip px, for crops of this size, coverage and
    face type (core.geometry.FACE_TYPES)."""
    return chip_matrix(template_in_crop(size, coverage, face))


def chip_scale(size: int, coverage: float, face: str = "face") -> float:
    """How much larger the face is in dlib's chip than in the crop (2.12 for 64 px at 0.7)."""
    m = crop_to_chip(size, coverage, face)
    return float(np.hypot(m[0, 0], m[1, 0]))


class FaceLossNet:
    """The frozen recogniser and the crop geometry of one training run.

    size, coverage, face: the training crops' (model size, TrainConfig.coverage and .face). All
    inputs are (N, 3, S, S) float32 RGB in [0, 1] on `device`.
    """

    def __init__(self, size: int, coverage: float, device: torch.device | str = "cpu",
                 face: str = "face", levels: int = PERCEPTUAL_LEVELS) -> None:
        self.size, self.device = size, torch.device(device)
        with torch.random.fork_rng(devices=[]):  # its random init (overwritten) draws nothing of the run's
            net = load_facenet().to(self.device).eval()
        net.requires_grad_(False)
        self.net = net
        # blocks up to the end of level `levels`, and where each level ends
        ends = np.cumsum([count for _, count, _ in LEVELS])
        self.taps = [int(e) for e in ends[:levels]]
        self.side = round(size * chip_scale(size, coverage, face))  # perceptual input side, px
        m = np.vstack([crop_to_chip(size, coverage, face), [0, 0, 1]])
        theta = _to_norm(size) @ np.linalg.inv(m) @ np.linalg.inv(_to_norm(CHIP))  # chip -> crop
        self.theta = torch.tensor(theta[:2], dtype=torch.float32, device=self.device)  # (2, 3)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> the stem's (N, 32, H', W') after its max pool."""
        net = self.net
        x = (x * 255 - net.mean[None, :, None, None]) / 256.0
        x = net.stem(x) * net.stem_scale[:, None, None] + net.stem_shift[:, None, None]
        return F.max_pool2d(F.relu(x), 3, 2)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Crops -> the outputs of the first residual levels: [(N, 32, 32, 32), (N, 64, 16, 16)]
        for 64 px crops at coverage 0.7 (input resized to self.side)."""
        x = F.interpolate(x, size=(self.side, self.side), mode="bilinear", align_corners=False,
                          antialias=x.shape[-1] > self.side)
        x = self._stem(x)
        out, start = [], 0
        for end in self.taps:
            x = self.net.blocks[start:end](x)
            out.append(x)
            start = end
        return out

    def chips(self, x: torch.Tensor) -> torch.Tensor:
        """Crops -> (N, 3, 150, 150) dlib chips in [0, 1] (border pixels repeated below the crop)."""
        grid = F.affine_grid(self.theta.expand(x.shape[0], 2, 3), [x.shape[0], 3, CHIP, CHIP],
                             align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Crops -> (N, 128) float32 unit-length dlib embeddings."""
        return F.normalize(self.net(self.chips(x) * 255), dim=1)

    @torch.no_grad()
    def reference(self, faces: torch.Tensor, batch: int = 32) -> torch.Tensor:
        """(N, 3, S, S) crops of one person -> (128,) their mean embedding, length 1."""
        e = torch.cat([self.embed(faces[i:i + batch]) for i in range(0, len(faces), batch)])
        return F.normalize(e.mean(0), dim=0)


def perceptual_distance(net: FaceLossNet, pred: torch.Tensor, target: torch.Tensor,
                        weights: torch.Tensor) -> torch.Tensor:
    """pred, target (N, 3, S, S) in [0, 1]; weights (N, 1, S, S) >= 0 -> scalar float32.

    Per level: the mean absolute feature difference (over channels, then over positions weighted
    by `weights` averaged down to the level's grid), relative to the target features' weighted mean
    magnitude (a constant: no gradient), so each level counts alike; the levels' mean. 0 when pred
    equals target; grows as the prediction loses the target's detail.
    """
    with torch.no_grad():
        ft = net.features(target)
    fp = net.features(pred)
    total = pred.new_zeros(())
    for p, t in zip(fp, ft):
        w = F.adaptive_avg_pool2d(weights, p.shape[-2:])  # (N, 1, h, w)
        norm = (t.abs().mean(1, keepdim=True) * w).sum() / w.sum()
        total = total + ((p - t).abs().mean(1, keepdim=True) * w).sum() / (w.sum() * norm.clamp_min(1e-6))
    return total / len(fp)


def identity_distance(net: FaceLossNet, swapped: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """swapped (N, 3, S, S) in [0, 1]; reference (128,) unit -> scalar: mean cosine distance
    1 - cos of their embeddings to the reference, 0 (same direction) to 2."""
    return (1 - net.embed(swapped) @ reference).mean()
