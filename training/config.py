"""What `swapstream train` is asked to do (TrainConfig) and what it reports back (TrainResult); the
same for the loop in one process (swapstream.training.loop) and the Ray Train job
(swapstream.training.job).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from swapstream.core.errors import ConfigError
from swapstream.core.geometry import FACE_TYPES
from swapstream.engines.model import preset
from swapstream.training.losses import LossConfig

AMP_MODES = ("auto", "bf16", "fp16", "off")


@dataclass
class TrainConfig:
    a: str  # faceset directory of identity "a"
    b: str  # faceset directory of identity "b"
    out: str  # checkpoint directory
    preset: str = "lite64"
    steps: int = 1000  # total steps, counted across resumes
    batch_size: int = 16  # per identity, per worker
    lr: float = 5e-5
    betas: tuple[float, float] = (0.5, 0.999)
    coverage: float = 0.7  # share of the crop side spanned by the stable-landmark square
    face: str = "face"  # what the crop frames: "face" | "whole" (forehead too; core.geometry.FACE_TYPES)
    save_every: int = 250
    preview_every: int = 250
    log_every: int = 10  # history.jsonl / TensorBoard row every N steps
    mask_weight: float = 0.5
    ssim_weight: float = 2.0  # DSSIM term next to MAE ("face", weight 1); 2 measured best
    face_boost: float = 3.0  # extra weight of pixels inside the face hull
    feature_boost: float = 2.0  # extra weight of eyes and mouth
    mask_loss: str = "l1"  # "l1" or "bce"
    gan_weight: float = 0.0  # > 0: train a patch discriminator; its adversarial term's weight
    gan_lr: float = 1e-4
    # dlib's face recogniser as a frozen loss network (training/faceloss.py); 0 turns each off
    perceptual_weight: float = 0.0  # its early features on reconstructions vs targets
    identity_weight: float = 0.0  # its embedding of A's face drawn by B's decoder, pulled to B's
    warp: bool = True  # the 2017 random warp of the input
    occluders: float = 0.3  # share of input faces with a pasted occluder, cut from the mask target
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"  # CUDA: auto = bf16 where supported, else fp16 + grad scaler; CPU: fp32
    channels_last: bool | None = None  # None: on for CUDA
    compile: bool = False  # torch.compile the forward
    clip: float = 0.0  # gradient-norm clip; 0: none (the norm is still checked for NaN)
    resume: bool = False  # require a checkpoint to continue (one in cfg.out is used anyway)
    max_seconds: float | None = None  # stop (and save) after this much training time
    tensorboard: str | None = None  # event file directory (None: none)
    # Ray Train job (swapstream.training.job)
    workers: int = 1
    gpu: bool = False
    address: str | None = None
    storage: str | None = None  # Ray checkpoints; None: "<out>.train" beside -o
    keep: int = 3  # Ray checkpoints kept
    max_failures: int = 3  # worker failures survived (restart from the last checkpoint)
    cpus_per_worker: int = 0  # 0: the machine's CPUs shared out

    def validate(self) -> None:
        preset(self.preset)  # ConfigError listing the presets
        if self.max_failures < 0:
            raise ConfigError(f"max_failures = {self.max_failures} must be 0 or more")
        for name in ("steps", "batch_size", "save_every", "preview_every", "log_every", "workers", "keep"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} = {getattr(self, name)} must be at least 1")
        if not 0 <= self.occluders <= 1:
            raise ConfigError(f"occluders = {self.occluders} must be a share, 0-1 (0 turns them off)")
        if not 0 < self.coverage <= 1:
            raise ConfigError(f"coverage = {self.coverage} must be in (0, 1]; 0.7 is a good start")
        if self.face not in FACE_TYPES:
            raise ConfigError(f"face {self.face!r} is not one of {', '.join(FACE_TYPES)}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ConfigError(f"max_seconds = {self.max_seconds} must be positive")
        if not self.lr > 0:
            raise ConfigError(f"lr = {self.lr} must be positive; try 5e-5")
        if self.mask_loss not in ("l1", "bce"):
            raise ConfigError(f"mask_loss {self.mask_loss!r} is not one of 'l1', 'bce'")
        if self.amp not in AMP_MODES:
            raise ConfigError(f"amp {self.amp!r} is not one of {', '.join(AMP_MODES)}")
        for name in ("gan_weight", "ssim_weight", "mask_weight", "face_boost", "feature_boost", "clip",
                     "perceptual_weight", "identity_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} = {getattr(self, name)} must not be negative")

    def loss_config(self) -> LossConfig:
        extra = {"perceptual": self.perceptual_weight} if self.perceptual_weight > 0 else {}
        return LossConfig({"face": 1.0, "ssim": self.ssim_weight, "mask": self.mask_weight, **extra},
                          face_boost=self.face_boost, feature_boost=self.feature_boost,
                          mask_loss=self.mask_loss)


@dataclass
class TrainResult:
    step: int
    history: list[dict[str, float]] = field(default_factory=list)  # per step of this run (last 10k)
    checkpoint: Path | None = None
    preview: Path | None = None
    seconds_per_step: float = 0.0
    samples_per_s: float = 0.0  # both identities, all workers
    skipped: int = 0  # steps not applied (NaN/inf loss or gradient)
