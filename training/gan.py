"""Optional adversarial term: a small patch discriminator (pix2pix's PatchGAN) and LSGAN losses.

The discriminator scores overlapping patches of a face crop as real (target) or fake (decoder
output); the generator's adversarial term pushes the decoder towards sharper, real-looking
texture that the pixel losses (MAE, DSSIM) blur away. It has its own optimizer and weight, set by
the training loop; it is off unless asked for (the pixel losses alone train stably from step 0,
and the adversarial term helps only once faces are recognisable).

Losses are least squares (LSGAN, Mao et al. 2017): real patches -> 1, fake -> 0, and the
generator wants its patches at 1. Unlike the log loss they keep a useful gradient when the
discriminator wins easily, and they are bounded near the targets, so a tiny CPU test run and a long
GPU run behave alike. All losses are float32 scalars, computed outside autocast.

DistributedDataParallel: discriminator_loss runs ONE forward on real and fake together (DDP
expects one forward per backward, and spectral norm's power iteration then sees each step once).
generator_loss must not put gradients on the discriminator: it runs the network under `frozen`,
which turns requires_grad off and switches to eval mode (spectral norm then reuses its stored
estimate instead of updating it); pass it the unwrapped module (`ddp.module`), so no DDP hooks
fire for a forward whose backward reduces nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

PATCH_GRID = 8  # the output is about PATCH_GRID x PATCH_GRID patch scores for any crop size


class PatchDiscriminator(nn.Module):
    """(N, 3, S, S) float in [0, 1] -> (N, 1, h, w) float32 patch logits, h = w ~ S / 2^k ~ 8.

    Strided 4x4 convs (width, 2*width, ... capped at 8*width channels), LeakyReLU(0.2), spectral
    norm on every conv (keeps the discriminator 1-Lipschitz-ish without batch statistics, which
    would mix real and fake in the joint forward), and a 3x3 conv to one logit per patch. At 64 px:
    3 downsamplings, 8x8 patches with a 38 px receptive field each.
    """

    def __init__(self, size: int, width: int = 64) -> None:
        super().__init__()
        if size < 16 or width < 1:
            raise ValueError(f"PatchDiscriminator needs size >= 16 and width >= 1, got {size}, {width}")
        self.size = size
        downs = max(1, round(math.log2(size / PATCH_GRID)))
        layers: list[nn.Module] = []
        c_in = 3
        for i in range(downs):
            c_out = width * min(2**i, 8)
            layers += [spectral_norm(nn.Conv2d(c_in, c_out, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
            c_in = c_out
        layers.append(spectral_norm(nn.Conv2d(c_in, 1, 3, 1, 1)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2 - 1)  # centred input, as the decoder's sigmoid output is not


@contextmanager
def frozen(disc: nn.Module) -> Iterator[nn.Module]:
    """Within the block: disc in eval mode with requires_grad off on its parameters; restored after."""
    was_training = disc.training
    flags = [p.requires_grad for p in disc.parameters()]
    disc.eval()
    for p in disc.parameters():
        p.requires_grad_(False)
    try:
        yield disc
    finally:
        for p, f in zip(disc.parameters(), flags):
            p.requires_grad_(f)
        disc.train(was_training)


def discriminator_loss(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """LSGAN discriminator loss, float32 scalar: 0.5 * (mean (D(real) - 1)^2 + mean D(fake)^2).

    real, fake: (N, 3, S, S) in [0, 1] (target and decoder RGB); fake is detached here, so the
    backward reaches only the discriminator. disc may be wrapped in DDP: it is called once.
    """
    n = real.shape[0]
    logits = disc(torch.cat([real, fake.detach()]))  # (2N, 1, h, w)
    with torch.autocast(logits.device.type, enabled=False):
        logits = logits.float()
        return 0.5 * (F.mse_loss(logits[:n], torch.ones_like(logits[:n]))
                      + F.mse_loss(logits[n:], torch.zeros_like(logits[n:])))


def generator_loss(disc: nn.Module, fake: torch.Tensor) -> torch.Tensor:
    """LSGAN adversarial term for the generator, float32 scalar: mean (D(fake) - 1)^2.

    fake: (N, 3, S, S) decoder RGB in [0, 1], with its graph: the gradient flows back to the
    decoder and encoder. disc runs under `frozen`, so its parameters get no gradient; pass the
    unwrapped discriminator (not its DDP wrapper).
    """
    with frozen(disc):
        logits = disc(fake)  # (N, 1, h, w)
    with torch.autocast(logits.device.type, enabled=False):
        logits = logits.float()
        return F.mse_loss(logits, torch.ones_like(logits))
