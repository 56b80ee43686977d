"""Where a training loop runs: one process (LocalSession) or a Ray Train worker (RaySession).

The loop in `swapstream.training.loop` is plain PyTorch; the few things that differ between the two places
are here, so the Ray calls are few and easy to find:

    restore()       the checkpoint directory to resume from, or None
    wrap(module)    DistributedDataParallel across the workers (identity in one process)
    save(step, write, metrics)   write a checkpoint (rank 0) and hand it to Ray / the -o directory
    any(flag)       True on every worker if flag is True on any (a time budget ends everywhere at once)
    gather(obj)     [obj of rank 0, obj of rank 1, ...]
    progress(...)   the driver's progress bar
    publish_dir     where rank 0 keeps preview.png up to date (None: not visible from the
                    driver's machine; the driver copies the final checkpoint instead)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from swapstream.engines.checkpoint import read_meta
from swapstream.engines.device import resolve_device


class LocalSession:
    """Single process: checkpoints go straight to the -o directory (atomically)."""

    rank, world = 0, 1

    def __init__(self, out: str | Path, device: str = "auto") -> None:
        self.out = Path(out)
        self.device = resolve_device(device)
        self.publish_dir: Path | None = self.out

    def restore(self) -> Path | None:
        return self.out if (self.out / "model.json").exists() else None

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        return module

    def save(self, step: int, write: Callable[[Path], None], metrics: dict) -> None:
        write(self.out)

    def any(self, flag: bool) -> bool:
        return flag

    def gather(self, obj) -> list:
        return [obj]

    def progress(self, step: int, metrics: dict) -> None:
        pass

    def close(self) -> None:
        pass


class RaySession:
    """Inside a Ray Train worker (TorchTrainer). `seed` holds checkpoint files {name: bytes} (at
    step `seed_step`) to start from unless Ray holds a newer checkpoint of this run."""

    def __init__(self, out: str, use_gpu: bool, seed: dict | None, seed_step: int | None,
                 driver_node: str, progress_actor: str | None) -> None:
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device() if use_gpu else torch.device("cpu")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.seed, self.seed_step = seed, seed_step
        here = ray.get_runtime_context().get_node_id()
        # -o lives on the driver's machine: rank 0 keeps it current when it runs there too
        self.publish_dir = Path(out) if self.rank == 0 and here == driver_node else None
        self._bar = None
        if progress_actor and self.rank == 0:
            import ray

            self._bar = ray.get_actor(progress_actor)
        self._tmp = Path(tempfile.mkdtemp(prefix="swapstream-train-"))

    def restore(self) -> Path | None:
        import ray.train

        ckpt = ray.train.get_checkpoint()  # after a worker failure, or rerun of the same run
        if ckpt is not None:
            d = Path(ckpt.to_directory(str(self._tmp / "restore")))
            # the -o checkpoint the driver sent is newer only until this run saves past it
            if self.seed_step is None or read_meta(d)["step"] >= self.seed_step:
                return d
        if self.seed:
            d = self._tmp / "seed"
            d.mkdir(exist_ok=True)
            for name, data in self.seed.items():
                (d / name).write_bytes(data)
            return d
        return None

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        if self.world == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def save(self, step: int, write: Callable[[Path], None], metrics: dict) -> None:
        import ray.train

        d = Path(tempfile.mkdtemp(dir=self._tmp))
        try:
            ckpt = None
            if self.rank == 0:
                write(d / "checkpoint")
                ckpt = ray.train.Checkpoint.from_directory(str(d / "checkpoint"))
            ray.train.report({**metrics, "step": step}, checkpoint=ckpt)  # every rank reports
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def any(self, flag: bool) -> bool:
        if self.world == 1:
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())

    def gather(self, obj) -> list:
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def progress(self, step: int, metrics: dict) -> None:
        if self._bar is not None:
            self._bar.update.remote(step, metrics, os.getpid())

    def close(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)
