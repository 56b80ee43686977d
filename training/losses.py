"""Training losses: named terms in a dict, summed with weights into "total".

A term is a function (pred, target, mask, cfg, nets) -> scalar tensor registered in TERMS; its
weight comes from LossConfig.weights. `nets` holds the frozen networks a term needs (built once per
training run; see LossNets). Terms:

  face  mean absolute RGB error (MAE), weighted per pixel (see pixel_weights)
  ssim  DSSIM = (1 - SSIM) / 2 on RGB, 11x11 gaussian window (sigma 1.5), same pixel weights
  mask  predicted mask (channel 3) against the face hull, l1 or bce (plus cross-entropy on
        pasted occluders' pixels, mask channel 2)
  perceptual  features of dlib's face recogniser (its first residual levels) on the prediction
        against the target, same pixel weights (training/faceloss.py); needs nets.face

Pixel weights: 1 outside the face, 1 + face_boost inside the hull, + feature_boost more on the
eyes and mouth when the batch carries that mask (mask channel 1). The weighted means are
normalised by the weights, so a term's scale does not depend on the boosts or the mask's area.
The adversarial term lives in training/gan.py: it needs its own network and optimizer. The
identity term is not a reconstruction term (it scores A's face drawn by B's decoder): train_step
computes it with training.faceloss.identity_distance.

Everything is computed in float32, outside autocast (fp16 BCE is not allowed under autocast and
means of many small errors lose precision in fp16; SSIM's variances cancel badly in fp16).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from swapstream.core.errors import ConfigError
from swapstream.training.faceloss import FaceLossNet, perceptual_distance

OCCLUDER_BOOST = 10.0  # mask loss: pixels under a pasted occluder count this much more (see mask_term)
SSIM_WINDOW = 11  # the window of Wang et al. 2004; at 64 px it spans about an eye's width
SSIM_SIGMA = 1.5
_C1, _C2 = 0.01**2, 0.03**2  # SSIM's stabilisers for a dynamic range of 1


@dataclass(frozen=True)
class LossConfig:
    # weight of each term in "total"; a term with weight 0 is still computed and reported
    weights: dict[str, float] = field(default_factory=lambda: {"face": 1.0, "ssim": 2.0, "mask": 0.5})
    face_boost: float = 3.0  # pixels inside the hull mask count (1 + face_boost) times
    mask_loss: str = "l1"  # "l1" or "bce"
    feature_boost: float = 2.0  # eyes + mouth pixels count feature_boost more (mask channel 1)


@dataclass(frozen=True)
class LossNets:
    """Frozen networks some terms need, built once per training run on its device.
    face: dlib's recogniser with the crop geometry (perceptual term; None when no term needs it)."""

    face: FaceLossNet | None = None


def pixel_weights(mask: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    """mask (N, 1 or 2, S, S) in [0, 1] -> (N, 1, S, S) float32 weights, at least 1."""
    w = 1 + cfg.face_boost * mask[:, :1]
    if mask.shape[1] > 1:
        w = w + cfg.feature_boost * mask[:, 1:2]
    return w


def face_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, cfg: LossConfig,
            nets: LossNets) -> torch.Tensor:
    """Mean absolute RGB error, weighted by pixel_weights (normalised by the weights)."""
    w = pixel_weights(mask, cfg)  # (N, 1, S, S)
    err = (pred[:, :3] - target).abs().mean(1, keepdim=True)  # (N, 1, S, S)
    return (err * w).sum() / w.sum()


def _window_size(side: int) -> int:
    """SSIM_WINDOW, or the largest odd size that fits a smaller image."""
    return min(SSIM_WINDOW, side - 1 + side % 2)


def _gaussian_window(channels: int, size: int, device: torch.device) -> torch.Tensor:
    """(channels, 1, size, size) float32 normalised gaussian, for a depthwise conv2d."""
    x = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-x**2 / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def dssim_map(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x, y (N, C, S, S) float32 in [0, 1] -> (N, 1, S - W + 1, S - W + 1) DSSIM in [0, 1].

    (1 - SSIM) / 2 per window position ('valid' windows, no padding), averaged over channels;
    0 where x and y agree. Map pixel (i, j) is the window centred on image pixel (i + W//2, j + W//2).
    W is SSIM_WINDOW, smaller only for images smaller than that.
    """
    c = x.shape[1]
    win = _gaussian_window(c, _window_size(min(x.shape[-2:])), x.device)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, win, groups=c)  # (N, C, S - W + 1, S - W + 1)

    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    ssim = ((2 * mx * my + _C1) * (2 * cov + _C2)) / ((mx * mx + my * my + _C1) * (vx + vy + _C2))
    return ((1 - ssim) / 2).mean(1, keepdim=True)


def ssim_term(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, cfg: LossConfig,
              nets: LossNets) -> torch.Tensor:
    """DSSIM of the RGB prediction, weighted by pixel_weights at each window's centre."""
    d = dssim_map(pred[:, :3], target)  # (N, 1, h, h)
    r = _window_size(min(target.shape[-2:])) // 2
    w = pixel_weights(mask, cfg)[..., r:r + d.shape[-2], r:r + d.shape[-1]]  # (N, 1, h, h)
    return (d * w).sum() / w.sum()


def mask_term(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, cfg: LossConfig,
              nets: LossNets) -> torch.Tensor:
    """Predicted mask (channel 3, already a sigmoid) against the landmark hull mask (mask[:, :1]),
    l1 or bce (cfg.mask_loss).

    Where occluders were pasted (mask[:, 2:3], training.augment.occlude; the hull channel is then
    the hull less the occluders) the loss is cross-entropy whatever mask_loss says, each pixel
    weighted 1 + OCCLUDER_BOOST x the occluder's alpha: an L1 through a sigmoid saturated at 1 over
    the face has almost no gradient (p(1 - p)), so the mask would never learn to drop to 0 under
    an occluder; cross-entropy's gradient on the logit is p - target."""
    m, hull = pred[:, 3:], mask[:, :1]
    if mask.shape[1] >= 3:
        w = 1 + OCCLUDER_BOOST * mask[:, 2:3]
        return (F.binary_cross_entropy(m.clamp(1e-6, 1 - 1e-6), hull, reduction="none") * w).sum() / w.sum()
    if cfg.mask_loss == "l1":
        return (m - hull).abs().mean()
    if cfg.mask_loss == "bce":
        return F.binary_cross_entropy(m.clamp(1e-6, 1 - 1e-6), hull)
    raise ConfigError(f"mask_loss {cfg.mask_loss!r} is not one of 'l1', 'bce'")


def perceptual_term(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, cfg: LossConfig,
                    nets: LossNets) -> torch.Tensor:
    """Relative L1 distance of the recogniser's early features (training.faceloss.perceptual_distance),
    weighted by pixel_weights; 0 for pred == target, larger the more detail pred lacks."""
    if nets.face is None:
        raise ValueError("the perceptual term needs LossNets(face=FaceLossNet(...))")
    return perceptual_distance(nets.face, pred[:, :3], target, pixel_weights(mask, cfg))


Term = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, LossConfig, LossNets], torch.Tensor]
TERMS: dict[str, Term] = {"face": face_l1, "ssim": ssim_term, "mask": mask_term,
                          "perceptual": perceptual_term}


def swap_losses(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                cfg: LossConfig | None = None, nets: LossNets | None = None) -> dict[str, torch.Tensor]:
    """pred (N, 4, S, S) decoder output in [0, 1] (RGB + mask); target (N, 3, S, S) in [0, 1];
    mask (N, 1 or 2, S, S) in [0, 1]: face hull, then (optional) eyes + mouth; nets: the frozen
    networks of the terms that need one (LossNets()).

    Returns {term: scalar, ..., "total": weighted sum}, float32.
    """
    cfg, nets = cfg or LossConfig(), nets or LossNets()
    unknown = set(cfg.weights) - set(TERMS)
    if unknown:
        raise ConfigError(f"unknown loss term(s) {sorted(unknown)}; known: {', '.join(TERMS)}")
    bad = {k: v for k, v in cfg.weights.items() if not (math.isfinite(v) and v >= 0)}
    if bad:
        raise ConfigError(f"loss weight(s) {bad} must be finite and >= 0; 0 turns a term off")
    with torch.autocast(pred.device.type, enabled=False):
        pred, target, mask = pred.float(), target.float(), mask.float()
        out = {name: TERMS[name](pred, target, mask, cfg, nets) for name in cfg.weights}
        out["total"] = sum(cfg.weights[k] * v for k, v in out.items())
    return out
