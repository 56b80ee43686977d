"""The checkpoint directory (-o) before training starts: whether we may write there, and whether the
checkpoint found there (or in a Ray run) can be continued by the config at hand.

A checkpoint is model.safetensors, model.json, optimizer.safetensors and history.jsonl
(swapstream.engines.checkpoint); preview.png and loss_curve.png are written beside them.
"""

from __future__ import annotations

from pathlib import Path

from swapstream.core.errors import ConfigError, ModelError
from swapstream.core.paths import check_writable_dir
from swapstream.engines.checkpoint import load_checkpoint, read_meta, recover_checkpoint
from swapstream.training.config import TrainConfig
from swapstream.training.logs import CURVE, HISTORY
from swapstream.training.step import IDS

PREVIEW = "preview.png"


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
    old_face = meta.get("training", {}).get("face", "face")  # checkpoints from before --face
    if old_face != cfg.face:
        raise ConfigError(f"checkpoint {where} was trained with --face {old_face}, not {cfg.face}; "
                          f"pass --face {old_face} to resume it")
    if meta["step"] >= cfg.steps:
        raise ConfigError(f"checkpoint {where} is at step {meta['step']} already; pass --steps above "
                          f"{meta['step']} to train further")


def load_resume(cfg: TrainConfig, where: Path | None):
    """The checkpoint in `where` (model and optimizer state) once cfg may continue it; None: none."""
    if where is None:
        return None
    check_resume(cfg, read_meta(where), cfg.out)
    return load_checkpoint(where, expect_preset=cfg.preset, with_optimizer=True)
