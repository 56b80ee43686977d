"""The training loop: plain PyTorch, top to bottom, the same in one process and in each Ray Train
worker (swapstream.training.job). What differs between the two is behind a Session (swapstream.training.session).

One shared encoder, decoders "a" and "b"; each step reconstructs a warped batch of A with decoder
a and of B with decoder b (swapstream.training.step). cfg.out is the checkpoint directory
(model.safetensors, model.json, optimizer.safetensors, history.jsonl) and also holds
preview.png and loss_curve.png. Running again with the same cfg.out resumes.
"""

from __future__ import annotations

import math
import time
import warnings
from collections import deque
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from swapstream.core.errors import ConfigError, ModelError, TrainingError
from swapstream.core.faceset import load_faceset
from swapstream.core.paths import check_writable_dir
from swapstream.engines.checkpoint import load_checkpoint, read_meta, recover_checkpoint, save_checkpoint
from swapstream.engines.model import SwapModel, preset
from swapstream.training.augment import AugmentConfig, TrainingFaces
from swapstream.training.gan import PatchDiscriminator
from swapstream.training.logs import CURVE, HISTORY, TrainLog, plot_history, read_history, write_history
from swapstream.training.losses import LossConfig
from swapstream.training.preview import preview_grid, save_png
from swapstream.training.session import LocalSession
from swapstream.training.state import (
    load_module_tensors,
    load_optimizer_tensors,
    module_tensors,
    optimizer_tensors,
    rng_state,
    rng_tensors,
)
from swapstream.training.step import IDS, Batch, Gan, PairNet, Stepper, train_step

PREVIEW = "preview.png"
PREVIEW_ROWS = 4
MAX_NAN_STREAK = 25  # this many skipped steps in a row: training has diverged, stop
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
    warp: bool = True  # the 2017 random warp of the input
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
        if not 0 < self.coverage <= 1:
            raise ConfigError(f"coverage = {self.coverage} must be in (0, 1]; 0.7 is a good start")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ConfigError(f"max_seconds = {self.max_seconds} must be positive")
        if not self.lr > 0:
            raise ConfigError(f"lr = {self.lr} must be positive; try 5e-5")
        if self.mask_loss not in ("l1", "bce"):
            raise ConfigError(f"mask_loss {self.mask_loss!r} is not one of 'l1', 'bce'")
        if self.amp not in AMP_MODES:
            raise ConfigError(f"amp {self.amp!r} is not one of {', '.join(AMP_MODES)}")
        for name in ("gan_weight", "ssim_weight", "mask_weight", "face_boost", "feature_boost", "clip"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} = {getattr(self, name)} must not be negative")

    def loss_config(self) -> LossConfig:
        return LossConfig({"face": 1.0, "ssim": self.ssim_weight, "mask": self.mask_weight},
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


def check_out(out: Path, resume: bool) -> bool:
    """Raises on an output directory we must not write to; returns whether it holds a checkpoint."""
    check_writable_dir(out)
    recover_checkpoint(out)  # a save cut off between its two renames
    has_ckpt = (out / "model.json").exists()
    if resume and not has_ckpt:
        raise ConfigError(f"--resume given but {out} holds no checkpoint; drop --resume to start "
                          f"a new model there")
    # Saving replaces the whole directory, so never adopt one that holds anything else.
    foreign = []
    if out.is_dir() and not has_ckpt:
        ours = (PREVIEW, CURVE, HISTORY)  # written beside a first checkpoint that never completed
        foreign = [p.name for p in out.iterdir() if not p.name.startswith(".") and p.name not in ours]
    if foreign:
        raise ConfigError(f"output {out} is not empty and not a checkpoint (it holds "
                          f"{foreign[0]!r}); choose a new -o directory")
    return has_ckpt


def _amp(cfg: TrainConfig, device: torch.device) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    if device.type != "cuda" or cfg.amp == "off":
        return None, None
    if cfg.amp == "bf16" or (cfg.amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")


def check_resume(cfg: TrainConfig, meta: dict, where: str | Path) -> None:
    """Raises when the checkpoint with model.json `meta` (at `where`) cannot be continued by cfg."""
    if meta["preset"] != cfg.preset:
        raise ModelError(f"checkpoint {where} is preset {meta['preset']!r}, not {cfg.preset!r}; pass "
                         f"--preset {meta['preset']} or a new output directory")
    if meta["identities"] != list(IDS):
        raise ModelError(f"checkpoint {where} has decoders {meta['identities']}, not {list(IDS)}; "
                         f"choose a new -o directory")
    old_cov = meta.get("training", {}).get("coverage", cfg.coverage)
    if old_cov != cfg.coverage:
        raise ConfigError(f"checkpoint {where} was trained at coverage {old_cov}, not "
                          f"{cfg.coverage}; pass --coverage {old_cov} to resume it")
    if meta["step"] >= cfg.steps:
        raise ConfigError(f"checkpoint {where} is at step {meta['step']} already; pass --steps above "
                          f"{meta['step']} to train further")


def _load_resume(cfg: TrainConfig, where: Path | None):
    if where is None:
        return None
    check_resume(cfg, read_meta(where), cfg.out)
    return load_checkpoint(where, expect_preset=cfg.preset, with_optimizer=True)


def run(cfg: TrainConfig, session, progress: bool = True) -> TrainResult:
    """The loop, for one worker (rank) of `session`; see the module docstring."""
    device = session.device
    where = session.restore()
    ckpt = _load_resume(cfg, where)
    start = ckpt.step if ckpt else 0
    facesets = [load_faceset(cfg.a), load_faceset(cfg.b)]

    torch.manual_seed(cfg.seed)  # the same initial weights on every worker
    model = ckpt.model if ckpt else SwapModel(preset(cfg.preset), list(IDS))
    channels_last = cfg.channels_last if cfg.channels_last is not None else device.type == "cuda"
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format).train()
    size = model.cfg.size
    aug = AugmentConfig(warp=cfg.warp)
    data = [TrainingFaces(fs, size, cfg.coverage, device, aug) for fs in facesets]
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas)
    amp_dtype, scaler = _amp(cfg, device)
    saved_state = (ckpt.optimizer or {}) if ckpt else {}
    if ckpt is not None:
        if saved_state:
            load_optimizer_tensors(opt, saved_state, scaler)
        else:
            warnings.warn(f"{cfg.out} has no optimizer.safetensors; resuming with a fresh optimizer",
                          stacklevel=2)
    gan = None
    if cfg.gan_weight > 0:
        raw = PatchDiscriminator(size).to(device)
        d_opt = torch.optim.Adam(raw.parameters(), lr=cfg.gan_lr, betas=cfg.betas)
        if load_module_tensors(raw, saved_state, "disc"):
            load_optimizer_tensors(d_opt, saved_state, prefix="dstate")
        gan = Gan(session.wrap(raw), raw, d_opt, cfg.gan_weight)
    net = session.wrap(PairNet(model))
    if cfg.compile:
        net = torch.compile(net)
    stepper = Stepper(net, opt, cfg.loss_config(), amp_dtype, scaler, gan,
                      cfg.clip if cfg.clip > 0 else math.inf, channels_last)

    gen = torch.Generator(device=device)
    state = rng_state(saved_state, session.rank, session.world)
    if state is not None and state.numel() == gen.get_state().numel():  # same device type
        gen.set_state(state)
    else:  # fresh, or another number of workers than the checkpoint's: new draws per worker
        gen.manual_seed(cfg.seed * 1_000_003 + start * 7919 + session.rank)
    preview_faces = [d.fixed(PREVIEW_ROWS) for d in data]
    meta = {**asdict(cfg), "a": str(Path(cfg.a).resolve()), "b": str(Path(cfg.b).resolve()),
            "out": str(Path(cfg.out).resolve()), "faceset_size": facesets[0].size,
            "faceset_coverage": facesets[0].coverage, "faces": [len(fs) for fs in facesets],
            "augment": asdict(aug), "loss": asdict(stepper.loss_cfg), "workers": session.world}
    lead = session.rank == 0
    log = TrainLog(cfg.log_every, read_history(where), cfg.tensorboard if lead else None)
    result = TrainResult(step=start)
    history: deque = deque(maxlen=10_000)
    step = saved = start
    preview_img = None

    def write(path: Path, rngs: list[torch.Tensor]) -> None:  # rank 0: the whole checkpoint, atomically
        tensors = {**optimizer_tensors(opt, scaler), **rng_tensors(rngs)}
        if gan is not None:
            tensors |= module_tensors(gan.raw, "disc") | optimizer_tensors(gan.opt, prefix="dstate")
        save_checkpoint(path, model, cfg.preset, step, meta, tensors)
        write_history(path, log.rows)
        if preview_img is not None and not (path / PREVIEW).exists():
            save_png(path / PREVIEW, preview_img)

    session.progress(start, log.rows[-1] if log.rows else {})  # the driver sees (re)starts at once
    bar = tqdm(total=cfg.steps, initial=start, disable=not (progress and lead), unit="step",
               dynamic_ncols=True)
    t0 = tick = time.perf_counter()
    nan_streak = 0
    try:
        while step < cfg.steps:
            batch_a = Batch(*data[0].sample(cfg.batch_size, gen))
            batch_b = Batch(*data[1].sample(cfg.batch_size, gen))
            losses = train_step(stepper, batch_a, batch_b)
            step += 1
            history.append(losses)
            nan_streak = nan_streak + 1 if losses["skipped"] else 0
            result.skipped += int(losses["skipped"])
            if losses["skipped"]:
                bar.write(f"step {step}: loss or gradient is not finite (loss {losses['loss']:.4g}); "
                          f"the step was skipped")
            if nan_streak >= MAX_NAN_STREAK:
                raise TrainingError(f"{nan_streak} steps in a row gave a NaN/inf loss: training has "
                                    f"diverged. Lower --lr, or resume from the last checkpoint "
                                    f"(step {saved}) with a smaller --lr")
            now = time.perf_counter()
            row = log.step(step, losses, now - tick, 2 * cfg.batch_size * session.world) if lead else None
            tick = now
            bar.update(1)
            if row is not None:
                bar.set_postfix(loss_a=f"{row['loss_a']:.4f}", loss_b=f"{row['loss_b']:.4f}",
                                samples_s=f"{row['samples_per_s']:.0f}")
                session.progress(step, row)
            out_of_time = cfg.max_seconds is not None and now - t0 >= cfg.max_seconds
            last = step == cfg.steps or (cfg.max_seconds is not None and session.any(out_of_time))
            if lead and (step % cfg.preview_every == 0 or last):
                preview_img = preview_grid(model, *preview_faces, ids=IDS, scale=max(1, 128 // size))
                log.image("preview", preview_img, step)
                if session.publish_dir is not None:
                    result.preview = save_png(session.publish_dir / PREVIEW, preview_img)
            if step % cfg.save_every == 0 or last:
                rngs = session.gather(gen.get_state().cpu())  # every rank's generator
                session.save(step, partial(write, rngs=rngs),
                             {"loss_a": losses["loss_a"], "loss_b": losses["loss_b"]})
                saved = step
            if last:
                break
    except KeyboardInterrupt:
        if step > saved and session.world == 1:  # keep what was learnt; rerunning continues
            session.save(step, partial(write, rngs=[gen.get_state().cpu()]), {})
        raise
    finally:
        bar.close()
        log.close()
    result.step = step
    result.history = list(history)
    result.checkpoint = Path(cfg.out)
    result.seconds_per_step = (time.perf_counter() - t0) / max(1, step - start)
    result.samples_per_s = 2 * cfg.batch_size * session.world / max(result.seconds_per_step, 1e-9)
    return result


def train(cfg: TrainConfig, progress: bool = True) -> TrainResult:
    """Train in this process (or continue the checkpoint in cfg.out); see the module docstring."""
    cfg.validate()
    check_out(Path(cfg.out), cfg.resume)
    result = run(cfg, LocalSession(cfg.out, cfg.device), progress)
    plot_history(read_history(cfg.out), Path(cfg.out) / CURVE)
    return result
