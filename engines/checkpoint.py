"""Checkpoint directories: `model.safetensors` (weights only, never pickle) + `model.json`.

model.json holds: format, preset, model (architecture), identities, step, training config,
sha256 of model.safetensors. An optional `optimizer.safetensors` holds Adam state for --resume.
Saves are atomic: everything is written into a sibling temporary directory which then replaces
the checkpoint by rename, so a crash leaves either the old checkpoint or the new one, never half.
Other files in the directory (training previews) are carried over into the new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from swapstream.core.errors import ModelError

if TYPE_CHECKING:  # torch and the model load with the weights: reading model.json needs neither
    import torch

    from swapstream.engines.model import SwapModel

FORMAT = "swapstream-checkpoint-1"
PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")  # pickle protocol 2+ / torch.save zip


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (on CPU, eval mode) and its metadata."""

    model: SwapModel
    preset: str
    step: int = 0
    training: dict = field(default_factory=dict)
    optimizer: dict[str, torch.Tensor] | None = None
    sha256: str = ""  # of model.safetensors, as model.json records it (engine cache keys use it)

    @property
    def identities(self) -> list[str]:
        return self.model.identities


def sha256_file(path: Path) -> str:
    """sha256 hex of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def recover_checkpoint(path: str | Path) -> None:
    """Finish what a save killed between its two renames left: the old checkpoint moved aside and
    none in place. Puts the old one back; removes leftovers of saves that never completed."""
    path = Path(path)
    olds = sorted(path.parent.glob(f".{path.name}.old-*"))
    if not path.exists() and olds:
        os.replace(olds.pop(), path)
    for stale in olds:
        shutil.rmtree(stale, ignore_errors=True)


def _sweep_temps(path: Path) -> None:
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def save_checkpoint(path: str | Path, model: SwapModel, preset: str, step: int = 0,
                    training: dict | None = None,
                    optimizer: dict[str, torch.Tensor] | None = None) -> Path:
    """Write a checkpoint directory atomically; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_checkpoint(path)
    _sweep_temps(path)  # from saves that were killed while writing
    from safetensors.torch import save_file

    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(weights, tmp / "model.safetensors")
        if optimizer:
            save_file({k: v.detach().cpu().contiguous() for k, v in optimizer.items()},
                      tmp / "optimizer.safetensors")
        meta = {"format": FORMAT, "preset": preset, "model": model.cfg.to_dict(),
                "identities": model.identities, "step": int(step), "training": training or {},
                "sha256": sha256_file(tmp / "model.safetensors")}
        (tmp / "model.json").write_text(json.dumps(meta, indent=2))
        _swap_in(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _swap_in(tmp: Path, path: Path) -> None:
    """Make the complete directory `tmp` the checkpoint at `path`: fsync, carry over the other
    files of the old one (training previews, notes), then two renames (see recover_checkpoint)."""
    if path.is_dir():
        for f in path.iterdir():
            if f.is_file() and not (tmp / f.name).exists() and f.name != "optimizer.safetensors":
                shutil.copy2(f, tmp / f.name)
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
    os.replace(tmp, path)
    _fsync_dir(path.parent)  # the renames themselves survive a power cut
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def install_checkpoint(src: str | Path, path: str | Path) -> Path:
    """Copy the checkpoint directory `src` (checked first) to `path`, atomically."""
    src, path = Path(src), Path(path)
    verify_checkpoint(src)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_checkpoint(path)
    _sweep_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        for f in src.iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)
        _swap_in(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_meta(path: str | Path) -> dict:
    """model.json of a checkpoint, checked; raises ModelError naming the problem and the fix."""
    path = Path(path)
    recover_checkpoint(path)
    if not path.exists():
        raise ModelError(f"model not found: {path}. Train one with `swapstream train --a FACESET "
                         f"--b FACESET -o {path}` or pass the right --model path")
    if path.is_file():
        with open(path, "rb") as f:
            head = f.read(4)
        kind = "a pickle/torch.save file" if head.startswith(PICKLE_MAGIC) else "a file"
        raise ModelError(f"model {path} is {kind}, not a swapstream checkpoint directory "
                         f"(model.safetensors + model.json); pickled models are never loaded. "
                         f"Pass the directory written by `swapstream train`")
    meta_file = path / "model.json"
    if not meta_file.exists() or not (path / "model.safetensors").exists():
        raise ModelError(f"{path} is not a swapstream checkpoint: it needs model.json and "
                         f"model.safetensors. Pass the directory written by `swapstream train`")
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"{meta_file} is corrupt ({e}); restore it or retrain the model") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"{meta_file} is not a {FORMAT} file; pass a checkpoint written by "
                         f"`swapstream train`")
    expected = {"preset": str, "model": dict, "identities": list, "sha256": str, "step": int}
    bad = [k for k, t in expected.items() if not isinstance(meta.get(k), t)]
    if bad or not all(isinstance(i, str) for i in meta["identities"]) or "size" not in meta["model"]:
        raise ModelError(f"{meta_file} lacks or mangles {', '.join(bad) or 'identities/model.size'}; "
                         f"restore the checkpoint from a backup or retrain")
    return meta


def verify_checkpoint(path: str | Path) -> dict:
    """read_meta plus the weights: safetensors, not pickle, and matching the recorded hash.
    Cheap next to loading (one read of the file), so runners check before they start workers."""
    path = Path(path)
    meta = read_meta(path)
    weights_file = path / "model.safetensors"
    with open(weights_file, "rb") as f:
        if f.read(4).startswith(PICKLE_MAGIC):
            raise ModelError(f"{weights_file} is a pickle, not safetensors; pickled weights are "
                             f"never loaded. Retrain, or convert the weights to safetensors")
    if sha256_file(weights_file) != meta.get("sha256"):
        raise ModelError(f"{weights_file} does not match the hash in model.json (truncated or "
                         f"corrupt); restore the checkpoint from a backup or retrain")
    return meta


def load_checkpoint(path: str | Path, expect_preset: str | None = None,
                    with_optimizer: bool = False) -> Checkpoint:
    """Load and verify a checkpoint (hash, preset, tensor shapes). Model is on CPU in eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from swapstream.engines.model import ModelConfig, SwapModel

    path = Path(path)
    meta = verify_checkpoint(path)
    weights_file = path / "model.safetensors"
    preset = meta["preset"]
    if expect_preset is not None and preset != expect_preset:
        raise ModelError(f"checkpoint {path} is preset {preset!r}, not {expect_preset!r}; pass "
                         f"--preset {preset} or a new output directory")
    try:
        cfg = ModelConfig.from_dict(meta["model"])
        model = SwapModel(cfg, meta["identities"])
        state = load_file(weights_file)
        model.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError, KeyError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"checkpoint {path} does not load into preset {preset!r} ({first}); "
                         f"it is corrupt or from another version: retrain it") from None
    model.eval()
    opt = None
    opt_file = path / "optimizer.safetensors"
    if with_optimizer and opt_file.exists():
        try:
            opt = load_file(opt_file)
        except SafetensorError as e:
            raise ModelError(f"{opt_file} is corrupt ({e}); delete it to resume with a fresh "
                             f"optimizer") from None
    return Checkpoint(model, preset, int(meta.get("step", 0)), meta.get("training", {}), opt, meta["sha256"])
