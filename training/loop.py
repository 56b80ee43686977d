"""The single-process training loop: plain PyTorch, top to bottom.

One shared encoder, decoders "a" and "b"; each step reconstructs a warped batch of A with decoder
a and of B with decoder b. cfg.out is the checkpoint directory (model.safetensors, model.json,
optimizer.safetensors) and also holds preview.png.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from tqdm import tqdm

from engines.checkpoint import load_checkpoint, recover_checkpoint, save_checkpoint
from engines.eager import resolve_device
from engines.model import SwapModel, preset
from stages.errors import ConfigError, ModelError
from training.augment import AugmentConfig, TrainingFaces
from training.faceset import load_faceset
from training.losses import LossConfig, swap_losses
from training.paths import check_writable_dir
from training.preview import preview_grid, save_png

IDS = ("a", "b")
PREVIEW = "preview.png"
PREVIEW_ROWS = 4


@dataclass
class TrainConfig:
    a: str  # faceset directory of identity "a"
    b: str  # faceset directory of identity "b"
    out: str  # checkpoint directory
    preset: str = "lite64"
    steps: int = 1000  # total steps, counted across --resume
    batch_size: int = 16  # per identity
    lr: float = 5e-5
    betas: tuple[float, float] = (0.5, 0.999)
    coverage: float = 0.7  # share of the crop side spanned by the stable-landmark square
    save_every: int = 250
    preview_every: int = 250
    mask_weight: float = 0.5
    face_boost: float = 3.0  # extra weight of pixels inside the face hull in the RGB loss
    mask_loss: str = "l1"  # "l1" or "bce"
    warp: bool = True  # the 2017 random warp of the input
    seed: int = 0
    device: str = "auto"
    resume: bool = False
    max_seconds: float | None = None  # stop (and save) after this much training time

    def validate(self) -> None:
        preset(self.preset)  # ConfigError listing the presets
        for name in ("steps", "batch_size", "save_every", "preview_every"):
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

    def loss_config(self) -> LossConfig:
        return LossConfig({"face": 1.0, "mask": self.mask_weight}, self.face_boost, self.mask_loss)


class Batch(NamedTuple):
    warped: torch.Tensor  # (N, 3, S, S) float32 in [0, 1], the network's input
    target: torch.Tensor  # (N, 3, S, S) float32 in [0, 1]
    mask: torch.Tensor  # (N, 1, S, S) float32 in [0, 1], face hull


@dataclass
class TrainResult:
    step: int
    history: list[dict[str, float]] = field(default_factory=list)  # one dict per step of this run
    checkpoint: Path | None = None
    preview: Path | None = None
    seconds_per_step: float = 0.0


def train_step(model: SwapModel, opt: torch.optim.Optimizer, batch_a: Batch, batch_b: Batch,
               loss_cfg: LossConfig | None = None, scaler: torch.amp.GradScaler | None = None,
               ids: tuple[str, str] = IDS) -> dict[str, float]:
    """One optimisation step on a batch of each identity; returns the loss terms as floats.

    Keys: "loss" (sum), "loss_a", "loss_b" (per-identity totals), "a/face", "a/mask", ... .
    With a scaler (CUDA), the forward runs under fp16 autocast and the loss is scaled.
    """
    model.train()
    opt.zero_grad(set_to_none=True)
    terms: dict[str, torch.Tensor] = {}
    with torch.autocast(batch_a.warped.device.type, torch.float16, enabled=scaler is not None):
        for ident, batch in zip(ids, (batch_a, batch_b)):
            pred = model(batch.warped, ident)  # (N, 4, S, S)
            losses = swap_losses(pred, batch.target, batch.mask, loss_cfg)
            terms[f"loss_{ident}"] = losses.pop("total")
            terms.update({f"{ident}/{k}": v for k, v in losses.items()})
    total = terms[f"loss_{ids[0]}"] + terms[f"loss_{ids[1]}"]
    if scaler is not None:
        scaler.scale(total).backward()
        scaler.step(opt)
        scaler.update()
    else:
        total.backward()
        opt.step()
    terms["loss"] = total
    values = torch.stack([v.detach().float() for v in terms.values()]).tolist()  # one sync
    return dict(zip(terms, values))


def optimizer_tensors(opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None = None
                      ) -> dict[str, torch.Tensor]:
    """Optimizer (and grad scaler) state flattened to {"state.<param>.<key>": tensor} for safetensors.

    Hyper-parameters (param_groups) are not stored: they come from the TrainConfig on resume.
    """
    out = {}
    for idx, st in opt.state_dict()["state"].items():
        for key, v in st.items():
            out[f"state.{idx}.{key}"] = v if torch.is_tensor(v) else torch.tensor(v)
    if scaler is not None and scaler.is_enabled():
        out.update({f"scaler.{k}": torch.tensor(v) for k, v in scaler.state_dict().items()})
    return out


def load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                           scaler: torch.amp.GradScaler | None = None) -> None:
    """Inverse of optimizer_tensors: restores the state into opt (and scaler, if both have one)."""
    current = opt.state_dict()
    n_params = sum(len(g["params"]) for g in current["param_groups"])
    state: dict[int, dict[str, torch.Tensor]] = {}
    scaler_state = {}
    for name, v in tensors.items():
        kind, _, rest = name.partition(".")
        if kind == "scaler":
            scaler_state[rest] = v
            continue
        idx, _, key = rest.partition(".")
        if kind != "state" or not idx.isdigit() or int(idx) >= n_params:
            raise ModelError(f"optimizer state entry {name!r} does not fit this model; delete "
                             f"optimizer.safetensors to resume with a fresh optimizer")
        state.setdefault(int(idx), {})[key] = v
    opt.load_state_dict({"state": state, "param_groups": current["param_groups"]})
    if scaler is not None and scaler.is_enabled() and scaler_state:
        types = scaler.state_dict()
        scaler.load_state_dict({k: type(types[k])(v.item()) for k, v in scaler_state.items() if k in types})


def _check_out(out: Path, resume: bool) -> bool:
    """Raises on an output directory we must not write to; returns whether it holds a checkpoint."""
    check_writable_dir(out)
    recover_checkpoint(out)  # a save cut off between its two renames
    has_ckpt = (out / "model.json").exists()
    if has_ckpt and not resume:
        raise ConfigError(f"{out} already holds a checkpoint; pass --resume to continue training "
                          f"it, or choose a new -o directory")
    if resume and not has_ckpt:
        raise ConfigError(f"--resume given but {out} holds no checkpoint; drop --resume to start "
                          f"a new model there")
    # Saving replaces the whole directory, so never adopt one that holds anything else.
    foreign = []
    if out.is_dir() and not has_ckpt:
        foreign = [p.name for p in out.iterdir() if not p.name.startswith(".") and p.name != PREVIEW]
    if foreign:
        raise ConfigError(f"output {out} is not empty and not a checkpoint (it holds "
                          f"{foreign[0]!r}); choose a new -o directory")
    return has_ckpt


def train(cfg: TrainConfig, progress: bool = True) -> TrainResult:
    """Train (or with cfg.resume, continue) a two-identity model; see the module docstring."""
    cfg.validate()
    out = Path(cfg.out)
    _check_out(out, cfg.resume)
    device = resolve_device(cfg.device)
    start, ckpt = 0, None
    if cfg.resume:
        ckpt = load_checkpoint(out, expect_preset=cfg.preset, with_optimizer=True)
        if ckpt.identities != list(IDS):
            raise ModelError(f"checkpoint {out} has decoders {ckpt.identities}, not {list(IDS)}; "
                             f"choose a new -o directory")
        old_cov = ckpt.training.get("coverage", cfg.coverage)
        if old_cov != cfg.coverage:
            raise ConfigError(f"checkpoint {out} was trained at coverage {old_cov}, not "
                              f"{cfg.coverage}; pass --coverage {old_cov} to resume it")
        start = ckpt.step
        if start >= cfg.steps:
            raise ConfigError(f"checkpoint {out} is at step {start} already; pass --steps above "
                              f"{start} to train further")
    facesets = [load_faceset(cfg.a), load_faceset(cfg.b)]

    torch.manual_seed(cfg.seed)
    model = ckpt.model if ckpt else SwapModel(preset(cfg.preset), list(IDS))
    model.to(device).train()
    size = model.cfg.size
    aug = AugmentConfig(warp=cfg.warp)
    data = [TrainingFaces(fs, size, cfg.coverage, device, aug) for fs in facesets]
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" else None
    if ckpt is not None:
        if ckpt.optimizer:
            load_optimizer_tensors(opt, ckpt.optimizer, scaler)
        else:
            warnings.warn(f"{out} has no optimizer.safetensors; resuming with a fresh optimizer",
                          stacklevel=2)
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed * 1_000_003 + start)  # a resumed run draws fresh batches
    loss_cfg = cfg.loss_config()
    preview_faces = [d.fixed(PREVIEW_ROWS) for d in data]
    meta = {**asdict(cfg), "a": str(Path(cfg.a).resolve()), "b": str(Path(cfg.b).resolve()),
            "out": str(out.resolve()), "faceset_size": facesets[0].size,
            "faceset_coverage": facesets[0].coverage, "faces": [len(fs) for fs in facesets],
            "augment": asdict(aug), "loss": asdict(loss_cfg)}

    result = TrainResult(step=start)
    step = saved = start

    def save() -> None:  # keeps preview.png: saves carry the directory's other files over
        save_checkpoint(out, model, cfg.preset, step, meta, optimizer_tensors(opt, scaler))

    bar = tqdm(total=cfg.steps, initial=start, disable=not progress, unit="step", dynamic_ncols=True)
    t0 = time.perf_counter()
    try:
        while step < cfg.steps:
            batch_a = Batch(*data[0].sample(cfg.batch_size, gen))
            batch_b = Batch(*data[1].sample(cfg.batch_size, gen))
            losses = train_step(model, opt, batch_a, batch_b, loss_cfg, scaler)
            step += 1
            result.history.append(losses)
            bar.update(1)
            bar.set_postfix(loss_a=f"{losses['loss_a']:.4f}", loss_b=f"{losses['loss_b']:.4f}")
            out_of_time = cfg.max_seconds is not None and time.perf_counter() - t0 >= cfg.max_seconds
            last = step == cfg.steps or out_of_time
            if step % cfg.preview_every == 0 or last:
                grid = preview_grid(model, *preview_faces, ids=IDS, scale=max(1, 128 // size))
                result.preview = save_png(out / PREVIEW, grid)
            if step % cfg.save_every == 0 or last:
                save()
                saved = step
            if out_of_time:
                break
    except KeyboardInterrupt:
        if step > saved:  # keep what was learnt; --resume continues from here
            save()
        raise
    finally:
        bar.close()
    result.step = step
    result.checkpoint = out
    result.seconds_per_step = (time.perf_counter() - t0) / max(1, step - start)
    return result
