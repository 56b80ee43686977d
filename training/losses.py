"""Training losses: named terms in a dict, summed with weights into "total".

A term is a function (pred, target, mask, cfg) -> scalar tensor registered in TERMS; its weight
comes from LossConfig.weights. Adding SSIM or a GAN term later is one function and one weight.
Everything is computed in float32, outside autocast (fp16 BCE is not allowed under autocast and
means of many small errors lose precision in fp16).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from stages.errors import ConfigError


@dataclass(frozen=True)
class LossConfig:
    # weight of each term in "total"; a term with weight 0 is still computed and reported
    weights: dict[str, float] = field(default_factory=lambda: {"face": 1.0, "mask": 0.5})
    face_boost: float = 3.0  # pixels inside the hull mask count (1 + face_boost) times
    mask_loss: str = "l1"  # "l1" or "bce"


def face_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    """Mean absolute RGB error, weighted more inside the face hull (normalised by the weights)."""
    w = 1 + cfg.face_boost * mask  # (N, 1, S, S)
    err = (pred[:, :3] - target).abs().mean(1, keepdim=True)  # (N, 1, S, S)
    return (err * w).sum() / w.sum()


def mask_term(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    """Predicted mask (channel 3, already a sigmoid) against the landmark hull mask."""
    m = pred[:, 3:]
    if cfg.mask_loss == "l1":
        return (m - mask).abs().mean()
    if cfg.mask_loss == "bce":
        return F.binary_cross_entropy(m.clamp(1e-6, 1 - 1e-6), mask)
    raise ConfigError(f"mask_loss {cfg.mask_loss!r} is not one of 'l1', 'bce'")


Term = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, LossConfig], torch.Tensor]
TERMS: dict[str, Term] = {"face": face_l1, "mask": mask_term}


def swap_losses(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                cfg: LossConfig | None = None) -> dict[str, torch.Tensor]:
    """pred (N, 4, S, S) decoder output in [0, 1]; target (N, 3, S, S) and mask (N, 1, S, S) in [0, 1].

    Returns {term: scalar, ..., "total": weighted sum}, float32.
    """
    cfg = cfg or LossConfig()
    unknown = set(cfg.weights) - set(TERMS)
    if unknown:
        raise ConfigError(f"unknown loss term(s) {sorted(unknown)}; known: {', '.join(TERMS)}")
    with torch.autocast(pred.device.type, enabled=False):
        pred, target, mask = pred.float(), target.float(), mask.float()
        out = {name: TERMS[name](pred, target, mask, cfg) for name in cfg.weights}
        out["total"] = sum(cfg.weights[k] * v for k, v in out.items())
    return out
