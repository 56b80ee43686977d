"""One training step: both identities through one forward, losses, a guarded optimizer step, and
(optionally) the GAN's discriminator step. Plain PyTorch; the same code runs single-process and in
every Ray Train worker (where `net` is wrapped in DistributedDataParallel).

Why one forward for both identities: DDP expects each parameter to be used at most once per
forward/backward pair and every parameter to be used in each step. PairNet runs the shared
encoder once on A and B together, then decoder a on A's half and decoder b on B's half, so every
parameter takes part exactly once per step, with no `find_unused_parameters` overhead. With the
identity loss on (PairNet(swap=True)), A's latent also goes through decoder b, with decoder b's
weights detached for that pass: no parameter is used a second time, and the identity term trains
the encoder only (see PairNet).

NaN guard: after backward the gradient norm is checked. DDP averages gradients across workers,
so a NaN anywhere reaches every worker and all of them skip the same step together. A skipped
step changes no weight and no optimizer state and is reported as "skipped" = 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from swapstream.engines.model import SwapModel
from swapstream.training.faceloss import FaceLossNet, identity_distance
from swapstream.training.gan import discriminator_loss, generator_loss
from swapstream.training.losses import LossConfig, LossNets, swap_losses

IDS = ("a", "b")


class Batch(NamedTuple):
    warped: torch.Tensor  # (N, 3, S, S) float32 in [0, 1], the network's input
    target: torch.Tensor  # (N, 3, S, S) float32 in [0, 1]
    mask: torch.Tensor  # (N, 1-3, S, S) float32 in [0, 1]: face hull (, eyes + mouth (, occluders))


class PairNet(nn.Module):
    """Wraps a SwapModel: forward(x_a, x_b) -> (pred_a, pred_b), each (N, 4, S, S) in [0, 1];
    with swap=True -> (pred_a, pred_b, swapped), swapped (N_a, 4, S, S) being A's inputs drawn by
    B's decoder (for the identity loss).

    The encoder sees A and B as one batch (one pass, one set of kernel launches on a GPU). The
    swap runs decoder b with its weights detached, so gradients through it reach the encoder
    only: decoder b keeps learning from B's faces alone and draws faces as it draws B's, while
    the encoder learns latents of A that it draws as B. Measured (bench_losses, 400 steps): with
    decoder b's weights trained by the identity term too, the swap pulled 2.6x closer to B by
    turning into a red, over-wrinkled caricature of B (what fools the recogniser), not a sharper B.
    """

    def __init__(self, model: SwapModel, ids: tuple[str, str] = IDS, swap: bool = False) -> None:
        super().__init__()
        self.model, self.ids, self.swap = model, ids, swap

    def forward(self, x_a: torch.Tensor, x_b: torch.Tensor) -> tuple[torch.Tensor, ...]:
        z = self.model.encoder(torch.cat([x_a, x_b]))
        z_a, z_b = z[:x_a.shape[0]], z[x_a.shape[0]:]
        dec_a, dec_b = self.model.decoders[self.ids[0]], self.model.decoders[self.ids[1]]
        if not self.swap:
            return dec_a(z_a), dec_b(z_b)
        frozen = {k: v.detach() for k, v in dec_b.named_parameters()}  # not a use of the parameters
        return dec_a(z_a), dec_b(z_b), torch.func.functional_call(dec_b, frozen, (z_a,))


@dataclass
class IdentityPull:
    """The identity term: A's face drawn by B's decoder (pasted into A's target by A's face hull,
    as the blend pastes it at conversion), embedded by dlib's recogniser and pulled toward B's
    mean embedding; it trains the encoder only (PairNet). reference: (128,) float32 unit, on the
    training device."""

    net: FaceLossNet
    reference: torch.Tensor
    weight: float


@dataclass
class Gan:
    """The optional adversarial part: a patch discriminator, its optimizer and the weight of the
    generator's adversarial term. `disc` may be DDP-wrapped; `raw` is the bare module."""

    disc: nn.Module
    raw: nn.Module
    opt: torch.optim.Optimizer
    weight: float


@dataclass
class Stepper:
    """Everything a step touches. amp_dtype: autocast dtype (bf16 or fp16, CUDA) or None (fp32);
    scaler: a GradScaler with fp16 only. clip: gradient-norm clip (inf: report only)."""

    net: nn.Module
    opt: torch.optim.Optimizer
    loss_cfg: LossConfig
    amp_dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None
    gan: Gan | None = None
    clip: float = math.inf
    channels_last: bool = False
    ids: tuple[str, str] = IDS
    nets: LossNets = field(default_factory=LossNets)  # the perceptual term's frozen network
    identity: IdentityPull | None = None  # needs a PairNet(swap=True)



def _params(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for g in opt.param_groups for p in g["params"]]


def _prep(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _apply(opt: torch.optim.Optimizer, params: list[torch.Tensor], loss: torch.Tensor,
           scaler: torch.amp.GradScaler | None, clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward and a guarded optimizer step. Returns (gradient norm, applied 0./1.) as tensors."""
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
    else:
        loss.backward()
    if math.isinf(clip):
        norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    else:
        norm = torch.nn.utils.clip_grad_norm_(params, clip)  # the norm before clipping
    ok = torch.isfinite(norm)
    if scaler is not None:
        scaler.step(opt)  # skips by itself when unscale_ found inf/nan
        scaler.update()
    elif bool(ok):
        opt.step()
    return norm, ok.float()


def train_step(s: Stepper, batch_a: Batch, batch_b: Batch) -> dict[str, float]:
    """One optimisation step on a batch of each identity; returns the loss terms as floats.

    Keys: "loss" (generator total), "loss_a", "loss_b", "a/face", "a/ssim", ..., "grad_norm",
    "skipped" (1.0 when the step was not applied: a NaN/inf loss or gradient), with the identity
    term "swap/identity" (cosine distance of the swapped faces to B, 0 to 2), and with the GAN
    "gan/g" (generator adversarial term), "gan/d" (discriminator loss).
    """
    s.net.train()
    s.opt.zero_grad(set_to_none=True)
    dev = batch_a.warped.device.type
    x_a, x_b = _prep(batch_a.warped, s.channels_last), _prep(batch_b.warped, s.channels_last)
    with torch.autocast(dev, s.amp_dtype or torch.float32, enabled=s.amp_dtype is not None):
        preds = s.net(x_a, x_b)
    terms: dict[str, torch.Tensor] = {}
    for ident, pred, batch in zip(s.ids, preds[:2], (batch_a, batch_b)):
        losses = swap_losses(pred, batch.target, batch.mask, s.loss_cfg, s.nets)  # float32
        terms[f"loss_{ident}"] = losses.pop("total")
        terms.update({f"{ident}/{k}": v for k, v in losses.items()})
    total = terms[f"loss_{s.ids[0]}"] + terms[f"loss_{s.ids[1]}"]
    if s.identity is not None:
        with torch.autocast(dev, enabled=False):  # float32, as the other terms
            hull = batch_a.mask[:, :1].float()  # (N, 1, S, S)
            pasted = hull * preds[2][:, :3].float() + (1 - hull) * batch_a.target.float()
            terms["swap/identity"] = identity_distance(s.identity.net, pasted, s.identity.reference)
        total = total + s.identity.weight * terms["swap/identity"]
    fake = None
    if s.gan is not None:
        fake = torch.cat([p[:, :3] for p in preds[:2]]).float()
        terms["gan/g"] = generator_loss(s.gan.raw, fake)  # freezes the discriminator itself
        total = total + s.gan.weight * terms["gan/g"]
    terms["loss"] = total
    norm, applied = _apply(s.opt, _params(s.opt), total, s.scaler, s.clip)
    terms["grad_norm"], terms["skipped"] = norm, 1 - applied
    if s.gan is not None and fake is not None:
        s.gan.opt.zero_grad(set_to_none=True)
        real = torch.cat([batch_a.target, batch_b.target]).float()
        d_loss = discriminator_loss(s.gan.disc, real, fake.detach())
        _apply(s.gan.opt, _params(s.gan.opt), d_loss, None, s.clip)
        terms["gan/d"] = d_loss
    values = torch.stack([v.detach().float().reshape(()) for v in terms.values()]).tolist()  # one sync
    return dict(zip(terms, values))
