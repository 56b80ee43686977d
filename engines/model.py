"""The 2017 deepfakes autoencoder: one shared encoder, one decoder per identity.

Input: (N, 3, S, S) float32 RGB in [0, 1]. Each decoder outputs (N, 4, S, S): RGB through a
sigmoid (channels 0-2, in [0, 1]) and a mask logit turned into [0, 1] by a sigmoid (channel 3).
Larger presets keep the shape and add residual blocks after each decoder upscale, as the 2018-2020
successors did (DeepFaceLab's SAEHD, faceswap's dfl-sae and villain).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from swapstream.core.errors import ConfigError


@dataclass(frozen=True)
class ModelConfig:
    """Architecture. size / 2**len(enc_channels) must be 4 (the dense bottleneck is 4x4).
    res_blocks: residual blocks after each decoder upscale (0: the 2017 decoder)."""

    size: int
    enc_channels: tuple[int, ...]
    latent: int
    dense_channels: int
    upscale_channels: int
    dec_channels: tuple[int, ...]
    res_blocks: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        if not self.res_blocks:  # model.json of the 2017-shaped presets stays as older versions wrote it
            del d["res_blocks"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return cls(**{**d, "enc_channels": tuple(d["enc_channels"]),
                      "dec_channels": tuple(d["dec_channels"])})


PRESETS: dict[str, ModelConfig] = {
    # The 2017 architecture exactly: conv 128-256-512-1024, dense 1024, dense 4x4x1024, upscale 512;
    # decoder upscale 256-128-64, conv 5x5 out.
    "original64": ModelConfig(64, (128, 256, 512, 1024), 1024, 1024, 512, (256, 128, 64)),
    # Same shape, 1/4 of the channels and a narrow bottleneck: minutes on a 2-core CPU.
    "lite64": ModelConfig(64, (32, 64, 128, 256), 256, 256, 128, (64, 32, 16)),
    # 128 px for GPUs: one more stride-2 conv and one more decoder upscale.
    "hd128": ModelConfig(128, (128, 256, 512, 1024, 1024), 1024, 1024, 512, (512, 256, 128, 64)),
    # 256 px for GPUs: six stride-2 convs, narrow where the maps are large; a 512 latent; a residual
    # block after each of the five decoder upscales. 113.5M parameters (encoder 69.5M, each
    # decoder 22.0M).
    "hd256": ModelConfig(256, (64, 128, 256, 512, 768, 1024), 512, 1024, 512, (512, 256, 128, 64, 32),
                         res_blocks=1),
}


def preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def _conv(cin: int, cout: int) -> nn.Module:
    """5x5 stride-2 conv + LeakyReLU(0.1): halves H and W ('same' padding, as in Keras)."""
    return nn.Sequential(nn.Conv2d(cin, cout, 5, stride=2, padding=2), nn.LeakyReLU(0.1))


class Upscale(nn.Module):
    """3x3 conv to 4*cout channels + LeakyReLU(0.1) + pixel shuffle: doubles H and W."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout * 4, 3, padding=1)
        self.act = nn.LeakyReLU(0.1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.act(self.conv(x)))


class ResBlock(nn.Module):
    """x + conv3x3(LeakyReLU(0.2)(conv3x3(x))), then LeakyReLU(0.2): (N, C, H, W) -> same shape."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.conv2(self.act(self.conv1(x))))


class Encoder(nn.Module):
    """(N, 3, S, S) -> (N, upscale_channels, 8, 8)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        chans = (3, *cfg.enc_channels)
        self.convs = nn.Sequential(*[_conv(a, b) for a, b in zip(chans, chans[1:])])
        flat = cfg.enc_channels[-1] * 4 * 4
        self.dense1 = nn.Linear(flat, cfg.latent)
        self.dense2 = nn.Linear(cfg.latent, 4 * 4 * cfg.dense_channels)
        self.dense_channels = cfg.dense_channels
        self.up = Upscale(cfg.dense_channels, cfg.upscale_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(x)  # (N, C, 4, 4)
        x = self.dense2(self.dense1(x.flatten(1)))
        x = x.view(-1, self.dense_channels, 4, 4)
        return self.up(x)  # (N, upscale_channels, 8, 8)


class Decoder(nn.Module):
    """(N, upscale_channels, 8, 8) -> (N, 4, S, S): RGB in [0, 1] and mask in [0, 1]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        chans = (cfg.upscale_channels, *cfg.dec_channels)
        self.ups = nn.Sequential(*[Upscale(a, b) for a, b in zip(chans, chans[1:])])
        # a module only when there are blocks: the 2017 presets keep their state_dict keys
        self.res = nn.ModuleList(nn.Sequential(*[ResBlock(c) for _ in range(cfg.res_blocks)])
                                 for c in cfg.dec_channels) if cfg.res_blocks else None
        self.out = nn.Conv2d(cfg.dec_channels[-1], 4, 5, padding=2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.res is None:
            x = self.ups(z)
        else:
            x = z
            for up, res in zip(self.ups, self.res):
                x = res(up(x))  # (N, c, 2H, 2W)
        return torch.sigmoid(self.out(x))


class SwapModel(nn.Module):
    """Shared encoder + one decoder per identity name."""

    def __init__(self, cfg: ModelConfig, identities: list[str]) -> None:
        super().__init__()
        if 2 ** len(cfg.enc_channels) * 4 != cfg.size:
            raise ConfigError(f"model size {cfg.size} needs {cfg.size // 4}x downsampling, "
                              f"but {len(cfg.enc_channels)} encoder convs give {2 ** len(cfg.enc_channels)}x")
        if len(cfg.dec_channels) != len(cfg.enc_channels) - 1:
            raise ConfigError("dec_channels must have one entry fewer than enc_channels")
        if cfg.res_blocks < 0:
            raise ConfigError(f"res_blocks = {cfg.res_blocks} must be 0 or more")
        self.cfg = cfg
        self.identities = list(identities)
        self.encoder = Encoder(cfg)
        self.decoders = nn.ModuleDict({name: Decoder(cfg) for name in identities})

    def forward(self, x: torch.Tensor, identity: str) -> torch.Tensor:
        """x: (N, 3, S, S) float in [0, 1] -> (N, 4, S, S) float in [0, 1]."""
        return self.decoders[identity](self.encoder(x))
