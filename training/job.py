"""`swapstream train` as a Ray Train job: the same loop (training.loop.run) in N workers.

    driver (this process)                     Ray Train workers (TorchTrainer, DDP over gloo/NCCL)
    checks facesets and -o, starts Ray  ──>   rank 0..N-1: run(cfg, RaySession)
    shows the progress bar              <──   rank 0: progress every log_every steps (an actor)
    copies the final checkpoint to -o   <──   all ranks: ray.train.report(checkpoint) every save_every

- Checkpoints: Ray keeps the last `keep` under `<storage>/<name of -o>/checkpoint_*`; storage is
  `<-o>.train` beside -o by default, or `--storage` (a shared folder or s3:// on a cluster).
  Each is a complete swapstream checkpoint written atomically by rank 0 before Ray adopts it.
- Faults: a worker that dies (or its node) restarts the whole worker group from the last
  checkpoint, up to `max_failures` times; the step counter continues from that checkpoint.
- Resume: rerunning the same command finds the run in storage and continues it; failing that, a
  checkpoint already in -o is sent to the workers to continue from.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from engines.checkpoint import install_checkpoint, read_meta
from stages.errors import ConfigError, SwapstreamError, TrainingError
from training.faceset import SIDECAR
from training.logs import CURVE, plot_history, read_history
from training.loop import TrainConfig, TrainResult, check_out, run

SEED_FILES = ("model.safetensors", "model.json", "optimizer.safetensors", "history.jsonl")


class Progress:
    """A tiny actor rank 0 reports to; the driver polls it for its progress bar."""

    def __init__(self) -> None:
        self.step, self.row, self.pid = 0, {}, None

    def update(self, step: int, row: dict, pid: int) -> None:
        self.step, self.row, self.pid = step, row, pid

    def get(self) -> tuple[int, dict, int | None]:
        return self.step, self.row, self.pid


def _worker(config: dict) -> None:
    """The function every Ray Train worker runs."""
    import ray
    import torch

    from training.session import RaySession

    torch.set_num_threads(config["threads"])
    cfg = TrainConfig(**{**config["cfg"], "betas": tuple(config["cfg"]["betas"])})
    seed = ray.get(config["seed"]) if config["seed"] is not None else None
    session = RaySession(cfg.out, cfg.gpu, seed, config["driver_node"], config["progress"])
    try:
        run(cfg, session, progress=False)
    finally:
        session.close()


def storage_of(cfg: TrainConfig) -> str:
    """Where Ray keeps this run's checkpoints: --storage, else "<-o>.train" beside -o."""
    return cfg.storage or str(Path(cfg.out).resolve()) + ".train"


def _has_run(storage: str, name: str) -> bool:
    if "://" in storage:  # remote storage: Ray finds (or not) the run itself
        return False
    return bool(checkpoint_dirs(Path(storage, name)))


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """The checkpoint folders Ray wrote for a run, oldest first."""
    return sorted(d for d in run_dir.glob("checkpoint_*") if d.is_dir())


def _prune(storage: str, name: str) -> None:
    """Delete checkpoint folders Ray no longer lists (left behind when a failure restarted the
    run), so storage holds the last `keep` only. Local storage only."""
    import json
    import shutil

    run_dir = Path(storage, name)
    snap = run_dir / "checkpoint_manager_snapshot.json"
    if "://" in storage or not snap.is_file():
        return
    try:
        listed = {r["checkpoint_dir_name"] for r in json.loads(snap.read_text())["checkpoint_results"]}
    except (ValueError, KeyError, TypeError):
        return  # a format we do not know: leave everything
    for d in checkpoint_dirs(run_dir):
        if d.name not in listed:
            shutil.rmtree(d, ignore_errors=True)


def _check_facesets(cfg: TrainConfig) -> None:
    for path in (cfg.a, cfg.b):
        if not (Path(path) / SIDECAR).is_file():
            from training.faceset import load_faceset

            load_faceset(path)  # raises the FacesetError that says what is wrong and how to fix it


def _check_cluster(cfg: TrainConfig, storage: str) -> None:
    """What a cluster must offer: GPUs for --gpu (or an autoscaler that can add them), and storage
    every node reaches when there is more than one node."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    autoscaling = bool(cfg.address or os.environ.get("RAY_ADDRESS"))  # a launched cluster may grow
    if cfg.gpu and not ray.cluster_resources().get("GPU") and not autoscaling:
        raise ConfigError("--gpu given but this machine has no GPU that Ray can use; drop --gpu to "
                          "train on CPUs, or join a cluster with GPUs (--address)")
    if cfg.storage is None and (len(nodes) > 1 or autoscaling) and "://" not in storage:
        raise ConfigError(f"on a Ray cluster the checkpoints need storage every node can reach; pass "
                          f"--storage s3://BUCKET/PATH (or a folder all nodes share), not the local "
                          f"default {storage}")


def _first_error(err: BaseException) -> BaseException:
    """The user's error inside Ray's wrappers (TrainingFailedError -> worker errors -> cause)."""
    seen, todo = set(), [err]
    while todo:
        e = todo.pop()
        if id(e) in seen or e is None:
            continue
        seen.add(id(e))
        if isinstance(e, SwapstreamError):
            return e
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
        todo += list(getattr(e, "worker_failures", {}).values() if isinstance(
            getattr(e, "worker_failures", None), dict) else [])
    return err


def train_job(cfg: TrainConfig, progress: bool = True, verbose: bool = False) -> TrainResult:
    """Run training as a Ray Train job; returns the result once -o holds the final checkpoint."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipeline.ray_runner import init_ray

    cfg.validate()
    out = Path(cfg.out).resolve()
    has_out = check_out(out, resume=False)
    _check_facesets(cfg)
    storage, name = storage_of(cfg), out.name
    has_run = _has_run(storage, name)
    if cfg.resume and not (has_out or has_run):
        raise ConfigError(f"--resume given but neither {out} nor {storage} holds a checkpoint; drop "
                          f"--resume to start a new model there")
    if has_out and not has_run and read_meta(out)["step"] >= cfg.steps:
        raise ConfigError(f"checkpoint {out} is at step {read_meta(out)['step']} already; pass "
                          f"--steps above it to train further")
    cfg = TrainConfig(**{**asdict(cfg), "out": str(out)})
    started = init_ray(cfg.address, verbose)
    t0 = time.perf_counter()
    try:
        seed = None
        if has_out and not has_run:  # continue the model in -o; workers may be on other machines
            seed = ray.put({f: (out / f).read_bytes() for f in SEED_FILES if (out / f).exists()})
        _check_cluster(cfg, storage)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        per_worker = cfg.cpus_per_worker or (2 if cfg.gpu else max(1, cpus // cfg.workers))
        bar_name = f"swapstream-train-{uuid.uuid4().hex}"
        bar_actor = ray.remote(Progress).options(num_cpus=0, name=bar_name).remote()
        config = {"cfg": asdict(cfg), "seed": seed, "threads": per_worker,
                  "driver_node": ray.get_runtime_context().get_node_id(), "progress": bar_name}
        trainer = TorchTrainer(
            _worker, train_loop_config=config,
            scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.gpu,
                                         resources_per_worker={"CPU": per_worker}),
            run_config=RunConfig(name=name, storage_path=storage,
                                 failure_config=FailureConfig(max_failures=cfg.max_failures),
                                 checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep)))
        result = _fit_with_bar(trainer, bar_actor, cfg, progress)
        if result.error is not None:
            raise _first_error(result.error)
        if result.checkpoint is None:
            raise TrainingError(f"the job ended without a checkpoint; see the Ray logs under {storage}")
        with result.checkpoint.as_directory() as d:
            install_checkpoint(d, out)
        _prune(storage, name)
    except SwapstreamError:
        raise
    except Exception as e:
        err = _first_error(e)
        if isinstance(err, SwapstreamError):
            raise err from None
        raise
    finally:
        if started:
            ray.shutdown()
    rows = read_history(out)
    plot_history(rows, out / CURVE)
    meta = read_meta(out)
    res = TrainResult(step=meta["step"], history=rows, checkpoint=out,
                      preview=out / "preview.png" if (out / "preview.png").exists() else None)
    res.seconds_per_step = (time.perf_counter() - t0) / max(1, meta["step"])
    res.samples_per_s = rows[-1].get("samples_per_s", 0.0) if rows else 0.0
    res.skipped = sum(int(r.get("skipped", 0)) for r in rows)
    return res


def _fit_with_bar(trainer, bar_actor, cfg: TrainConfig, progress: bool):
    """trainer.fit() in a thread while this thread draws the progress bar from rank 0's reports."""
    import ray

    box: dict = {}

    def fit() -> None:
        try:
            box["result"] = trainer.fit()
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e

    th = threading.Thread(target=fit, daemon=True)
    th.start()
    bar = tqdm(total=cfg.steps, unit="step", disable=not progress, dynamic_ncols=True)
    last_pid = None
    try:
        while th.is_alive():
            th.join(0.5)
            try:
                step, row, pid = ray.get(bar_actor.get.remote(), timeout=5)
            except Exception:
                continue
            if pid is not None and last_pid is not None and pid != last_pid:
                bar.write(f"a training worker failed; the job restarted from its last checkpoint "
                          f"(step {step}) and goes on")
            if pid is not None:
                last_pid = pid
                bar.n = step
                bar.set_postfix(loss_a=f"{row.get('loss_a', 0):.4f}", loss_b=f"{row.get('loss_b', 0):.4f}",
                                samples_s=f"{row.get('samples_per_s', 0):.0f}", refresh=False)
                bar.refresh()
    finally:
        bar.close()
    if "error" in box:
        raise box["error"]
    return box["result"]
