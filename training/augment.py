"""Batched training augmentation in torch, on the training device: random affine + random warp.

Geometry. A faceset image is F px square with the stable-landmark square spanning F * fcov px
(faceset.FACESET_COVERAGE); the training crop is S px square with that square spanning
S * coverage px, the same crop the align stage cuts at conversion. The map from faceset px to crop
px, p_m = (p_f - F/2) * S*coverage / (F*fcov) + S/2, is fitted from the two templates so it stays
consistent with `alignment_matrix`. Pixel centres sit at integer coordinates (OpenCV's and the
landmarks' convention); grid_sample runs with align_corners=False, whose normalised coordinates
(-1..1 across the image's extent) do not depend on the source resolution, so faces can be
pre-shrunk once (anti-aliased) without moving anything.

The random affine (rotation, scale, shift, flip) moves input, target and masks alike; the random
warp (the 2017 trick: a jittered 5x5 grid of control points, smoothly upsampled) moves the input
only, so the network must learn to undo it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from swapstream.core.faceset import Faceset, feature_masks, hull_masks
from swapstream.core.geometry import face_type, template_in_crop, umeyama
from swapstream.training.occluders import random_occluder


@dataclass(frozen=True)
class AugmentConfig:
    rotation: float = 10.0  # degrees, uniform in [-rotation, rotation]
    scale: float = 0.05  # zoom factor uniform in [1 - scale, 1 + scale]
    shift: float = 0.05  # share of the crop side, uniform in [-shift, shift] on each axis
    flip: float = 0.5  # probability of a horizontal flip
    warp: bool = True
    warp_points: int = 5  # control grid is warp_points x warp_points over the crop
    # Jitter std as a share of the crop side. The 2017 code jitters by 5 px a grid spanning the
    # 160 px that become the 64 px crop: 5/160 of the side, ~2 px at 64.
    warp_std: float = 5 / 160
    # Share of the faces given an occluder over the input (training.occluders), whose region is
    # taken out of the target mask: the decoder's mask learns to leave occluders out.
    occluders: float = 0.0

    @classmethod
    def off(cls) -> AugmentConfig:
        """No augmentation at all: input == target == the plain aligned crop."""
        return cls(rotation=0.0, scale=0.0, shift=0.0, flip=0.0, warp=False)


def _to_norm(n: int) -> np.ndarray:
    """3x3: pixel coordinate (centres at integers) -> align_corners=False normalised coordinate."""
    return np.array([[2 / n, 0, 1 / n - 1], [0, 2 / n, 1 / n - 1], [0, 0, 1]])


def crop_to_faceset(size: int, coverage: float, faceset_size: int, faceset_coverage: float,
                    face: str = "face") -> np.ndarray:
    """(3, 3) float64: normalised crop coordinates -> normalised faceset coordinates (the crop of
    face type `face`, core.geometry.FACE_TYPES; facesets are aligned as "face")."""
    m = umeyama(template_in_crop(faceset_size, faceset_coverage), template_in_crop(size, coverage, face))
    faceset_to_crop = np.vstack([m, [0, 0, 1]])  # pixels -> pixels
    return _to_norm(faceset_size) @ np.linalg.inv(faceset_to_crop) @ np.linalg.inv(_to_norm(size))


def working_size(size: int, coverage: float, faceset_size: int, faceset_coverage: float,
                 face: str = "face") -> int:
    """Side to pre-shrink faceset images to so the crop samples them at about 1:1."""
    ratio = size * coverage * face_type(face)[0] / (faceset_size * faceset_coverage)
    return min(faceset_size, math.ceil(faceset_size * ratio))


def prepare_faces(images: np.ndarray, masks: np.ndarray, side: int, device: torch.device | str = "cpu",
                  chunk: int = 256) -> torch.Tensor:
    """images (N, F, F, 3) uint8 + masks (N, F, F) or (N, F, F, C) uint8 -> (N, 3 + C, side, side)
    uint8 on device (C = 1 for a single mask).

    Shrinks with anti-aliasing once, so each training step only resamples small images.
    """
    if masks.ndim == 3:
        masks = masks[..., None]  # (N, F, F, 1)
    out = []
    for i in range(0, len(images), chunk):
        x = torch.from_numpy(np.concatenate([images[i:i + chunk], masks[i:i + chunk]], -1))
        x = x.to(device).permute(0, 3, 1, 2).float()  # (n, 3 + C, F, F) in [0, 255]
        if x.shape[-1] != side:
            x = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def _uniform(n: int, r: float, g: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return (torch.rand(n, generator=g, device=device, dtype=torch.float64) * 2 - 1) * r


def random_affine(n: int, cfg: AugmentConfig, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """(n, 3, 3) float64: normalised output crop coordinates -> normalised unaugmented crop ones."""
    device = torch.device(device)
    angle = _uniform(n, math.radians(cfg.rotation), generator, device)
    zoom = 1 + _uniform(n, cfg.scale, generator, device)
    shift = torch.stack([_uniform(n, 2 * cfg.shift, generator, device) for _ in range(2)], -1)  # (n, 2)
    flip = torch.rand(n, generator=generator, device=device, dtype=torch.float64) < cfg.flip
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom  # zooming in samples a smaller area
    sx = torch.where(flip, -1.0, 1.0).to(torch.float64)
    t = torch.zeros(n, 3, 3, dtype=torch.float64, device=device)
    t[:, 0, 0], t[:, 0, 1], t[:, 0, 2] = cos * sx, -sin, shift[:, 0]
    t[:, 1, 0], t[:, 1, 1], t[:, 1, 2] = sin * sx, cos, shift[:, 1]
    t[:, 2, 2] = 1
    return t


def random_flow(n: int, size: int, cfg: AugmentConfig, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """(n, size, size, 2) float32 smooth displacement field, in normalised crop coordinates."""
    k = cfg.warp_points
    jitter = torch.randn(n, 2, k, k, generator=generator, device=device) * (2 * cfg.warp_std)
    # The 2017 target follows the jittered grid's best-fit similarity; removing the mean keeps the
    # warp from also shifting the whole face against its target.
    jitter = jitter - jitter.mean(dim=(2, 3), keepdim=True)
    flow = F.interpolate(jitter, size=(size, size), mode="bicubic", align_corners=True)
    return flow.permute(0, 2, 3, 1)  # (n, S, S, 2)


def augment(faces: torch.Tensor, size: int, coverage: float, cfg: AugmentConfig | None = None,
            generator: torch.Generator | None = None, faceset_size: int = 256,
            faceset_coverage: float = 0.5,
            face: str = "face") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Augment a batch of faceset faces into training crops.

    faces: (N, 3 + C, H, W) uint8 - RGB + C masks (0..255) of faceset images at any resolution
    (see prepare_faces): C = 2 for TrainingFaces (face hull, eyes + mouth), C = 1 for a hull only.
    faceset_size/coverage describe the geometry they were aligned with.
    Returns warped_input (N, 3, S, S), target (N, 3, S, S), target_mask (N, C, S, S), float32 in
    [0, 1] on faces.device; the masks go through the same affine as the target. Random draws:
    affine first, then warp, so the same generator state gives the same target with the warp on
    or off.
    """
    cfg = cfg or AugmentConfig()
    n, c, dev = faces.shape[0], faces.shape[1], faces.device
    base = torch.as_tensor(crop_to_faceset(size, coverage, faceset_size, faceset_coverage, face), device=dev)
    theta = (base @ random_affine(n, cfg, generator, dev))[:, :2].float()  # (N, 2, 3)
    x = faces.float().div_(255)  # (N, 3 + C, H, W)
    grid = F.affine_grid(theta, [n, c, size, size], align_corners=False)  # (N, S, S, 2)
    target = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if not cfg.warp:
        rgb = target[:, :3]
        return rgb, rgb.clone(), target[:, 3:]
    ident = torch.eye(2, 3, device=dev).expand(n, 2, 3)
    v = F.affine_grid(ident, [n, c, size, size], align_corners=False)  # output crop coordinates
    v = v + random_flow(n, size, cfg, generator, dev)
    warped_grid = torch.einsum("nij,nhwj->nhwi", theta[:, :, :2], v) + theta[:, None, None, :, 2]
    warped = F.grid_sample(x[:, :3], warped_grid, mode="bilinear", padding_mode="border",
                           align_corners=False)
    return warped, target[:, :3], target[:, 3:]


def occlude(warped: torch.Tensor, mask: torch.Tensor, share: float,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste a random occluder (training.occluders.random_occluder) over `share` of the inputs
    and take its region out of their face mask.

    warped (N, 3, S, S) and mask (N, C, S, S) float32 in [0, 1], as augment() gives them (C = 1
    or 2); returns new tensors (the inputs are not written to): the input with the occluders, and
    the mask as (N, 3, S, S): hull minus the occluders, eyes + mouth (zeros when C = 1), the
    occluders' alpha (zeros where none was pasted). The occluder sits at the same crop pixels in the
    input and the mask (the warp moves the input by ~2 px at most; the mask follows the target).
    The target is left clean: behind an occluder the decoder learns the face, and the mask learns
    that the occluder is not face.
    """
    n, _, side, _ = warped.shape
    dev = warped.device
    chosen = torch.rand(n, generator=generator, device=dev) < share
    features = mask[:, 1:2] if mask.shape[1] > 1 else torch.zeros_like(mask[:, :1])
    if not bool(chosen.any()):
        return warped, torch.cat([mask[:, :1], features, torch.zeros_like(features)], 1)
    seed = int(torch.randint(2**31 - 1, (1,), generator=generator, device=dev))
    rng = np.random.default_rng(seed)
    idx = torch.nonzero(chosen).flatten().tolist()
    others = warped[[(i + 1) % n for i in idx]].permute(0, 2, 3, 1).cpu().numpy()  # (k, S, S, 3)
    alpha = np.zeros((n, 1, side, side), np.float32)
    colour = np.zeros((n, 3, side, side), np.float32)
    for i, other in zip(idx, others):
        a, c = random_occluder(rng, side, other)
        alpha[i, 0], colour[i] = a, c.transpose(2, 0, 1)
    a = torch.from_numpy(alpha).to(dev)
    warped = torch.lerp(warped, torch.from_numpy(colour).to(dev), a)  # new tensors: inputs untouched
    mask = torch.cat([mask[:, :1] * (1 - a), features, a], 1)
    return warped, mask


class TrainingFaces:
    """One faceset made ready for training: faces + masks pre-shrunk, on the device.

    self.faces: (N, 5, side, side) uint8 - RGB, face hull mask, eyes + mouth mask (0 or 255 before
    the shrink). `sample` draws a random augmented batch; `fixed` gives unaugmented crops (for
    previews). Memory: N * 5 * side^2 bytes on the device (side ~90 px for 64 px crops at
    coverage 0.7).
    """

    def __init__(self, faceset: Faceset, size: int, coverage: float,
                 device: torch.device | str = "cpu", cfg: AugmentConfig | None = None,
                 face: str = "face") -> None:  # face: the crop's face type (core.geometry.FACE_TYPES)
        self.size, self.coverage, self.cfg = size, coverage, cfg or AugmentConfig()
        self.faceset_size, self.faceset_coverage = faceset.size, faceset.coverage
        self.face = face
        side = working_size(size, coverage, faceset.size, faceset.coverage, face)
        chunks = []
        for i in range(0, len(faceset.images), 256):  # full-size masks for a chunk at a time
            lm, f = faceset.landmarks[i:i + 256], faceset.size
            masks = np.stack([hull_masks(lm, f), feature_masks(lm, f)], -1)  # (n, F, F, 2)
            chunks.append(prepare_faces(faceset.images[i:i + 256], masks, side, device))
        self.faces = torch.cat(chunks)  # (N, 5, side, side) uint8

    def __len__(self) -> int:
        return self.faces.shape[0]

    def _crop(self, faces: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None):
        return augment(faces, self.size, self.coverage, cfg, generator, self.faceset_size,
                       self.faceset_coverage, self.face)

    def sample(self, batch_size: int, generator: torch.Generator | None = None):
        """(warped, target, mask) for batch_size random faces; see augment().

        warped, target (B, 3, S, S) and mask (B, 2, S, S) float32 in [0, 1]; mask[:, 0] is the face
        hull, mask[:, 1] the eyes + mouth. With occluders (cfg.occluders > 0) mask is (B, 3, S, S):
        the hull less the occluders pasted on the input, eyes + mouth, the occluders' alpha.
        """
        idx = torch.randint(len(self), (batch_size,), generator=generator, device=self.faces.device)
        warped, target, mask = self._crop(self.faces[idx], self.cfg, generator)
        if self.cfg.occluders > 0:
            warped, mask = occlude(warped, mask, self.cfg.occluders, generator)
        return warped, target, mask

    def fixed(self, n: int) -> torch.Tensor:
        """(min(n, N), 3, S, S) float32 unaugmented crops of faces spread over the set."""
        idx = torch.linspace(0, len(self) - 1, min(n, len(self))).round().long()
        return self._crop(self.faces[idx.to(self.faces.device)], AugmentConfig.off(), None)[1]
