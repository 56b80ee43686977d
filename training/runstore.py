"""Where Ray Train keeps a training run's checkpoints, and what it has registered there.

    <storage>/<run name>/checkpoint_<time>/             one complete swapstream checkpoint each
    <storage>/<run name>/checkpoint_manager_snapshot.json   Ray's list of the registered ones

storage is --storage (a shared folder, or s3:// etc. on a cluster), else "<-o>.train" beside -o.
The run name is -o's name plus a hash of its full path, so two models never share a run.
A folder Ray was still copying when it was killed is not in the snapshot and never counts.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from swapstream.core.errors import ModelError
from swapstream.engines.checkpoint import read_meta

SNAPSHOT = "checkpoint_manager_snapshot.json"


def is_remote(storage: str) -> bool:
    return "://" in storage


def storage_of(out: str | Path, storage: str | None) -> str:
    """--storage made absolute when it is a local folder, else "<-o>.train" beside -o."""
    if storage:
        return storage if is_remote(storage) else str(Path(storage).resolve())
    return str(Path(out).resolve()) + ".train"


def run_name(out: str | Path) -> str:
    out = Path(out).resolve()
    return f"{out.name}-{hashlib.sha1(str(out).encode()).hexdigest()[:8]}"


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """The checkpoint folders in a run's folder (registered or not), oldest first."""
    return sorted(d for d in run_dir.glob("checkpoint_*") if d.is_dir())


def _registered(run_dir: Path) -> tuple[list[str], str | None] | None:
    snap = run_dir / SNAPSHOT
    if not snap.is_file():
        return None
    try:
        data = json.loads(snap.read_text())
        names = [r["checkpoint_dir_name"] for r in data["checkpoint_results"]]
        latest = (data.get("latest_checkpoint_result") or {}).get("checkpoint_dir_name")
    except (ValueError, KeyError, TypeError):
        return None  # a format we do not know
    return names, latest or (names[-1] if names else None)


@dataclass
class Registered:
    path: Path
    meta: dict  # its model.json

    @property
    def step(self) -> int:
        return int(self.meta["step"])


def latest_registered(storage: str, name: str) -> Registered | None:
    """The newest checkpoint Ray registered for this run (local storage only; None otherwise)."""
    if is_remote(storage):
        return None
    reg = _registered(Path(storage, name))
    if reg is None or reg[1] is None:
        return None
    path = Path(storage, name, reg[1])
    try:
        return Registered(path, read_meta(path))
    except ModelError:
        return None


def prune(storage: str, name: str) -> None:
    """Delete checkpoint folders Ray no longer lists (left behind when a failure restarted the
    run, or half-copied when a process was killed), so storage holds the last --keep only."""
    if is_remote(storage):
        return
    run_dir = Path(storage, name)
    reg = _registered(run_dir)
    if reg is None:
        return
    for d in checkpoint_dirs(run_dir):
        if d.name not in reg[0]:
            shutil.rmtree(d, ignore_errors=True)
