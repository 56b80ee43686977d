"""The training loop: plain PyTorch, top to bottom, the same in one process and in each Ray Train
worker (swapstream.training.job). What differs between the two is behind a Session
(swapstream.training.session).

One shared encoder, decoders "a" and "b"; each step reconstructs a warped batch of A with decoder
a and of B with decoder b (swapstream.training.step). cfg.out is the checkpoint directory
(model.safetensors, model.json, optimizer.safetensors, history.jsonl) and also holds
preview.png and loss_curve.png. Running again with the same cfg.out resumes.

`run` reads top to bottom: set-up (_build: model, optimiser, data; _start: generator and logs), then
the steps, each followed by its bookkeeping (_check_step, _log_step), preview (_preview) and
checkpoint (_write_checkpoint), and the result (_result). The session.* calls in it are the Ray
Train ones (trivial in one process).
"""

from __future__ import annotations

import math
import time
import warnings
from collections import deque
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from swapstream.core.errors import TrainingError
from swapstream.core.faceset import Faceset, load_faceset
from swapstream.engines.checkpoint import save_checkpoint
from swapstream.engines.model import SwapModel, preset
from swapstream.training.augment import AugmentConfig, TrainingFaces
from swapstream.training.checkpointing import PREVIEW, check_out, load_resume
from swapstream.training.config import TrainConfig, TrainResult
from swapstream.training.coverage import coverage
from swapstream.training.faceloss import FaceLossNet
from swapstream.training.gan import PatchDiscriminator
from swapstream.training.logs import CURVE, TrainLog, plot_history, read_history, write_history
from swapstream.training.losses import LossNets
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
from swapstream.training.step import IDS, Batch, Gan, IdentityPull, PairNet, Stepper, train_step

PREVIEW_ROWS = 4
MAX_NAN_STREAK = 25  # this many skipped steps in a row: training has diverged, stop
REFERENCE_FACES = 64  # B's faces (spread over the set) whose mean embedding the identity term pulls to


@dataclass
class _Parts:
    """What is trained: the model, its optimiser (and grad scaler), the optional GAN, the step and
    the two identities' training faces."""

    model: SwapModel
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    gan: Gan | None
    stepper: Stepper
    data: list[TrainingFaces]
    aug: AugmentConfig
    saved_state: dict[str, torch.Tensor]  # the checkpoint's optimizer.safetensors ({} when new)


@dataclass
class _Run:
    """The loop's state on one worker, kept between steps."""

    start: int  # the step this run (re)started from
    gen: torch.Generator  # draws the batches and their augmentation
    log: TrainLog  # history.jsonl rows (rank 0) and TensorBoard
    meta: dict  # model.json's record of the training
    preview_faces: list[torch.Tensor]  # the fixed faces of the preview grid
    step: int = 0
    saved: int = 0  # the last step checkpointed
    nan_streak: int = 0  # skipped steps in a row
    skipped: int = 0  # skipped steps in all
    preview: np.ndarray | None = None  # the last preview grid (rank 0)
    preview_path: Path | None = None  # where it was published
    history: deque = field(default_factory=lambda: deque(maxlen=10_000))  # per-step losses
    t0: float = 0.0  # when the steps began
    tick: float = 0.0  # when the last step ended

    def __post_init__(self) -> None:
        self.step = self.saved = self.start


def run(cfg: TrainConfig, session, progress: bool = True) -> TrainResult:
    """The loop, for one worker (rank) of `session`; see the module docstring."""
    where = session.restore()  # the checkpoint to continue (None: a new model)
    ckpt = load_resume(cfg, where)
    facesets = [load_faceset(cfg.a), load_faceset(cfg.b)]
    torch.manual_seed(cfg.seed)  # the same initial weights on every worker
    parts = _build(cfg, ckpt, facesets, session)
    r = _start(cfg, session, parts, facesets, ckpt.step if ckpt else 0, where)
    session.progress(r.step, r.log.rows[-1] if r.log.rows else {})  # the driver sees (re)starts at once
    bar = tqdm(total=cfg.steps, initial=r.step, disable=not (progress and session.rank == 0), unit="step",
               dynamic_ncols=True)
    r.t0 = r.tick = time.perf_counter()
    try:
        while r.step < cfg.steps:
            batch_a = Batch(*parts.data[0].sample(cfg.batch_size, r.gen))
            batch_b = Batch(*parts.data[1].sample(cfg.batch_size, r.gen))
            losses = train_step(parts.stepper, batch_a, batch_b)
            r.step += 1
            _check_step(r, losses, bar)  # raises TrainingError once training has diverged
            row = _log_step(cfg, session, r, losses, bar)
            if row is not None:
                session.progress(r.step, row)
            out_of_time = cfg.max_seconds is not None and r.tick - r.t0 >= cfg.max_seconds
            last = r.step == cfg.steps or (cfg.max_seconds is not None and session.any(out_of_time))
            if session.rank == 0 and (r.step % cfg.preview_every == 0 or last):
                _preview(parts, r, session.publish_dir)
            if r.step % cfg.save_every == 0 or last:
                rngs = session.gather(r.gen.get_state().cpu())  # every rank's generator
                session.save(r.step, partial(_write_checkpoint, cfg=cfg, parts=parts, r=r, rngs=rngs),
                             {"loss_a": losses["loss_a"], "loss_b": losses["loss_b"]})
                r.saved = r.step
            if last:
                break
    except KeyboardInterrupt:
        if r.step > r.saved and session.world == 1:  # keep what was learnt; rerunning continues
            rngs = [r.gen.get_state().cpu()]
            session.save(r.step, partial(_write_checkpoint, cfg=cfg, parts=parts, r=r, rngs=rngs), {})
        raise
    finally:
        bar.close()
        r.log.close()
    return _result(cfg, session, r)


def train(cfg: TrainConfig, progress: bool = True) -> TrainResult:
    """Train in this process (or continue the checkpoint in cfg.out); see the module docstring."""
    cfg.validate()
    check_out(Path(cfg.out), cfg.resume)
    result = run(cfg, LocalSession(cfg.out, cfg.device), progress)
    plot_history(read_history(cfg.out), Path(cfg.out) / CURVE)
    return result


# --- set-up ---------------------------------------------------------------------------------------


def _build(cfg: TrainConfig, ckpt, facesets: list[Faceset], session) -> _Parts:
    """The model (new from the seed the caller set, or the checkpoint's), its training faces, its
    optimiser (restored when resuming), the optional GAN and the step, in this order (the order
    of the random draws)."""
    device = session.device
    model = ckpt.model if ckpt else SwapModel(preset(cfg.preset), list(IDS))
    channels_last = cfg.channels_last if cfg.channels_last is not None else device.type == "cuda"
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format).train()
    aug = AugmentConfig(warp=cfg.warp, occluders=cfg.occluders)
    data = [TrainingFaces(fs, model.cfg.size, cfg.coverage, device, aug, cfg.face) for fs in facesets]
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas)
    amp_dtype, scaler = _amp(cfg, device)
    saved_state = _restore_optimizer(cfg, ckpt, opt, scaler)
    gan = _gan(cfg, model.cfg.size, saved_state, session) if cfg.gan_weight > 0 else None
    nets, identity = face_losses(cfg, model.cfg.size, data, device)
    # DistributedDataParallel across the workers
    net = session.wrap(PairNet(model, swap=identity is not None))
    if cfg.compile:
        net = torch.compile(net)
    stepper = Stepper(net, opt, cfg.loss_config(), amp_dtype, scaler, gan,
                      cfg.clip if cfg.clip > 0 else math.inf, channels_last, nets=nets, identity=identity)
    return _Parts(model, opt, scaler, gan, stepper, data, aug, saved_state)


def face_losses(cfg: TrainConfig, size: int, data: list[TrainingFaces],
                 device: torch.device) -> tuple[LossNets, IdentityPull | None]:
    """dlib's recogniser, frozen, on the training device, once per run, when the perceptual or the
    identity term is on; for the identity term, B's mean embedding over REFERENCE_FACES of its
    unaugmented crops (the same crops, hence the same blur, as the swapped faces it is compared
    with)."""
    if cfg.perceptual_weight <= 0 and cfg.identity_weight <= 0:
        return LossNets(), None
    face = FaceLossNet(size, cfg.coverage, device, face=cfg.face)
    identity = None
    if cfg.identity_weight > 0:
        identity = IdentityPull(face, face.reference(data[1].fixed(REFERENCE_FACES)), cfg.identity_weight)
    return LossNets(face if cfg.perceptual_weight > 0 else None), identity


def _amp(cfg: TrainConfig, device: torch.device) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    if device.type != "cuda" or cfg.amp == "off":
        return None, None
    if cfg.amp == "bf16" or (cfg.amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")


def _restore_optimizer(cfg: TrainConfig, ckpt, opt: torch.optim.Optimizer,
                       scaler: torch.amp.GradScaler | None) -> dict[str, torch.Tensor]:
    """Loads the checkpoint's optimiser (and grad scaler) state into opt; returns all the tensors of
    its optimizer.safetensors ({} for a new model, or a checkpoint without one)."""
    saved_state = (ckpt.optimizer or {}) if ckpt else {}
    if ckpt is not None:
        if saved_state:
            load_optimizer_tensors(opt, saved_state, scaler)
        else:  # stacklevel: the warning names the caller of run
            warnings.warn(f"{cfg.out} has no optimizer.safetensors; resuming with a fresh optimizer",
                          stacklevel=4)
    return saved_state


def _gan(cfg: TrainConfig, size: int, saved_state: dict[str, torch.Tensor], session) -> Gan:
    """The patch discriminator and its optimiser, restored from saved_state when it holds them."""
    raw = PatchDiscriminator(size).to(session.device)
    d_opt = torch.optim.Adam(raw.parameters(), lr=cfg.gan_lr, betas=cfg.betas)
    if load_module_tensors(raw, saved_state, "disc"):
        load_optimizer_tensors(d_opt, saved_state, prefix="dstate")
    return Gan(session.wrap(raw), raw, d_opt, cfg.gan_weight)


def _start(cfg: TrainConfig, session, parts: _Parts, facesets: list[Faceset], start: int,
           where: Path | None) -> _Run:
    """The loop's state at step `start`: this rank's generator, the preview faces, the record for
    model.json and the log (continuing the history in `where`)."""
    gen = torch.Generator(device=session.device)
    state = rng_state(parts.saved_state, session.rank, session.world)
    if state is not None and state.numel() == gen.get_state().numel():  # same device type
        gen.set_state(state)
    else:  # fresh, or another number of workers than the checkpoint's: new draws per worker
        gen.manual_seed(cfg.seed * 1_000_003 + start * 7919 + session.rank)
    preview_faces = [d.fixed(PREVIEW_ROWS) for d in parts.data]
    meta = {**asdict(cfg), "a": str(Path(cfg.a).resolve()), "b": str(Path(cfg.b).resolve()),
            "out": str(Path(cfg.out).resolve()), "faceset_size": facesets[0].size,
            "faceset_coverage": facesets[0].coverage, "faces": [len(fs) for fs in facesets],
            "expression": {i: asdict(coverage(fs.landmarks)) for i, fs in zip(IDS, facesets)},
            "augment": asdict(parts.aug), "loss": asdict(parts.stepper.loss_cfg), "workers": session.world}
    log = TrainLog(cfg.log_every, read_history(where), cfg.tensorboard if session.rank == 0 else None)
    return _Run(start, gen, log, meta, preview_faces)


# --- each step ------------------------------------------------------------------------------------


def _check_step(r: _Run, losses: dict[str, float], bar: tqdm) -> None:
    """Keeps the step's losses and counts it when it was skipped (NaN/inf loss or gradient); too
    many skipped in a row raise TrainingError."""
    r.history.append(losses)
    r.nan_streak = r.nan_streak + 1 if losses["skipped"] else 0
    r.skipped += int(losses["skipped"])
    if losses["skipped"]:
        bar.write(f"step {r.step}: loss or gradient is not finite (loss {losses['loss']:.4g}); "
                  f"the step was skipped")
    if r.nan_streak >= MAX_NAN_STREAK:
        raise TrainingError(f"{r.nan_streak} steps in a row gave a NaN/inf loss: training has "
                            f"diverged. Lower --lr, or resume from the last checkpoint "
                            f"(step {r.saved}) with a smaller --lr")


def _log_step(cfg: TrainConfig, session, r: _Run, losses: dict[str, float], bar: tqdm) -> dict | None:
    """Adds the step to the log (rank 0) and the progress bar; returns the log's row when an
    interval closed (None otherwise, and on other ranks)."""
    now = time.perf_counter()
    row = None
    if session.rank == 0:
        row = r.log.step(r.step, losses, now - r.tick, 2 * cfg.batch_size * session.world)
    r.tick = now
    bar.update(1)
    if row is not None:
        bar.set_postfix(loss_a=f"{row['loss_a']:.4f}", loss_b=f"{row['loss_b']:.4f}",
                        samples_s=f"{row['samples_per_s']:.0f}")
    return row


def _preview(parts: _Parts, r: _Run, publish_dir: Path | None) -> None:
    """Rank 0: the preview grid, to TensorBoard and (when the driver can see it) publish_dir."""
    scale = max(1, 128 // parts.model.cfg.size)
    r.preview = preview_grid(parts.model, *r.preview_faces, ids=IDS, scale=scale)
    r.log.image("preview", r.preview, r.step)
    if publish_dir is not None:
        r.preview_path = save_png(publish_dir / PREVIEW, r.preview)


def _write_checkpoint(path: Path, *, cfg: TrainConfig, parts: _Parts, r: _Run,
                      rngs: list[torch.Tensor]) -> None:
    """session.save's callback (rank 0): the whole checkpoint at r.step into `path`, atomically:
    model, optimisers, every rank's generator state, the history and the last preview."""
    tensors = {**optimizer_tensors(parts.opt, parts.scaler), **rng_tensors(rngs)}
    if parts.gan is not None:
        tensors |= module_tensors(parts.gan.raw, "disc") | optimizer_tensors(parts.gan.opt, prefix="dstate")
    save_checkpoint(path, parts.model, cfg.preset, r.step, r.meta, tensors)
    write_history(path, r.log.rows)
    if r.preview is not None and not (path / PREVIEW).exists():
        save_png(path / PREVIEW, r.preview)


def _result(cfg: TrainConfig, session, r: _Run) -> TrainResult:
    seconds_per_step = (time.perf_counter() - r.t0) / max(1, r.step - r.start)
    return TrainResult(step=r.step, history=list(r.history), checkpoint=Path(cfg.out), preview=r.preview_path,
                       seconds_per_step=seconds_per_step,
                       samples_per_s=2 * cfg.batch_size * session.world / max(seconds_per_step, 1e-9),
                       skipped=r.skipped)
