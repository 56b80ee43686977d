"""`swapstream train` as a Ray Train job: the same loop (swapstream.training.loop.run) in N workers.

    driver (this process)                     Ray Train workers (TorchTrainer, DDP over gloo/NCCL)
    checks facesets and -o, starts Ray  ──>   rank 0..N-1: run(cfg, RaySession)
    shows the progress bar              <──   rank 0: progress every log_every steps (an actor)
    copies the final checkpoint to -o   <──   all ranks: ray.train.report(checkpoint) every save_every

- Checkpoints: Ray keeps the last `keep` under `<storage>/<run name>/checkpoint_*` (see
  swapstream.training.runstore); storage is `<-o>.train` beside -o by default, or `--storage` (a shared
  folder or s3:// on a cluster).
  Each is a complete swapstream checkpoint written atomically by rank 0 before Ray adopts it.
- Faults: a worker that dies (or its node) restarts the whole worker group from the last
  checkpoint, up to `max_failures` times; the step counter continues from that checkpoint.
- Resume: rerunning the same command continues from the newer of the run in storage and the
  checkpoint in -o (whose files are then sent to the workers, which may be on other machines).
- A user's error in a worker (SwapstreamError) is not retried: the driver stops the job and
  prints it.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import asdict
from pathlib import Path

from swapstream.core.errors import ConfigError, SwapstreamError, TrainingError
from swapstream.core.faceset import SIDECAR
from swapstream.engines.checkpoint import install_checkpoint, read_meta
from swapstream.training.checkpointing import check_out, check_resume
from swapstream.training.config import TrainConfig, TrainResult
from swapstream.training.logs import CURVE, plot_history, read_history
from swapstream.training.loop import run
from swapstream.training.progress import Progress, fit_with_bar
from swapstream.training.runstore import is_remote, latest_registered, prune, run_name, storage_of

SEED_FILES = ("model.safetensors", "model.json", "optimizer.safetensors", "history.jsonl")


def _worker(config: dict) -> None:
    """The function every Ray Train worker runs."""
    import ray
    import torch

    from swapstream.training.session import RaySession

    torch.set_num_threads(config["threads"])
    cfg = TrainConfig(**{**config["cfg"], "betas": tuple(config["cfg"]["betas"])})
    seed = ray.get(config["seed"]) if config["seed"] is not None else None
    session = RaySession(cfg.out, cfg.gpu, seed, config["seed_step"], config["driver_node"],
                         config["progress"])
    try:
        run(cfg, session, progress=False)
    except SwapstreamError as e:  # the same on every retry: tell the driver, which stops the job
        ray.get_actor(config["progress"]).fail.remote(type(e).__name__, str(e))
        raise
    finally:
        session.close()


def _check_facesets(cfg: TrainConfig) -> None:
    for path in (cfg.a, cfg.b):
        if not (Path(path) / SIDECAR).is_file():
            from swapstream.core.faceset import load_faceset

            load_faceset(path)  # raises the FacesetError that says what is wrong and how to fix it


def _check_storage(cfg: TrainConfig, explicit: bool) -> None:
    """On a cluster of several nodes (or one that may grow), checkpoints need storage every node
    reaches: refuse the local default there."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cluster = len(nodes) > 1 or bool(cfg.address or os.environ.get("RAY_ADDRESS"))
    if cluster and not explicit and not is_remote(cfg.storage):
        raise ConfigError(f"on a Ray cluster the checkpoints need storage every node can reach; pass "
                          f"--storage s3://BUCKET/PATH (or a folder all nodes share), not the local "
                          f"default {cfg.storage}")


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


def _resolved(cfg: TrainConfig) -> TrainConfig:
    """Paths made absolute: Ray Train workers run in their own working directory."""
    def absolute(p: str | None) -> str | None:
        return str(Path(p).resolve()) if p else p

    return TrainConfig(**{**asdict(cfg), "a": absolute(cfg.a), "b": absolute(cfg.b),
                          "out": absolute(cfg.out), "tensorboard": absolute(cfg.tensorboard),
                          "storage": storage_of(cfg.out, cfg.storage)})


def _resources(cfg: TrainConfig, started: bool) -> tuple[float, int]:
    """(CPUs to reserve per worker, torch threads per worker); raises on requests that can never
    be placed (they would wait forever)."""
    import ray

    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0))
    if cfg.gpu and started and gpus < cfg.workers:  # this machine cannot grow; a cluster may
        raise ConfigError(f"--workers {cfg.workers} --gpu needs {cfg.workers} GPUs and this machine "
                          f"has {gpus}; use --workers {gpus}" if gpus else
                          "--gpu given but this machine has no GPU that Ray can use; drop --gpu to "
                          "train on CPUs, or join a cluster with GPUs (--address)")
    if cfg.cpus_per_worker:
        cpus = float(cfg.cpus_per_worker)
    elif started and not cfg.gpu:  # this machine: share its cores out, fractions allowed
        cpus = round(res.get("CPU", 1) / cfg.workers, 2)
    else:
        cpus = 2.0 if cfg.gpu else 1.0
    return cpus, max(1, int(cpus))


def train_job(cfg: TrainConfig, progress: bool = True, verbose: bool = False) -> TrainResult:
    """Run training as a Ray Train job; returns the result once -o holds the final checkpoint."""
    import ray
    import ray.train.torch  # noqa: F401  (without Ray Train, fail before any check)

    from swapstream.training.cluster import init_ray

    cfg.validate()
    explicit_storage = cfg.storage is not None
    cfg = _resolved(cfg)
    out, storage, name = Path(cfg.out), cfg.storage, run_name(cfg.out)
    seed_step, start = _resume_point(cfg, out, storage, name)
    started = init_ray(cfg.address, verbose)
    t0 = time.perf_counter()
    try:
        _check_storage(cfg, explicit_storage)
        trainer, bar_actor = _trainer(cfg, started, name, seed_step)
        result = fit_with_bar(trainer, bar_actor, cfg.steps, progress)
        if result.error is not None:
            raise _first_error(result.error)
        if result.checkpoint is None:
            raise TrainingError(f"the job ended without a checkpoint; see the Ray logs under {storage}")
        with result.checkpoint.as_directory() as d:
            install_checkpoint(d, out)
        prune(storage, name)
    except KeyboardInterrupt:
        _keep_newest(storage, name, out)  # Ctrl-C: -o gets the newest checkpoint Ray holds
        raise
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
    return _job_result(out, start, t0)


def _resume_point(cfg: TrainConfig, out: Path, storage: str, name: str) -> tuple[int | None, int]:
    """(the step of the -o checkpoint the workers are to continue, None when they continue the run
    in storage or start afresh; the step training starts from). Makes the checks a worker would
    make here, where they stop at once."""
    has_out = check_out(out, resume=False)
    _check_facesets(cfg)
    run_ckpt = latest_registered(storage, name)
    out_meta = read_meta(out) if has_out else None
    if cfg.resume and not (out_meta or run_ckpt):
        raise ConfigError(f"--resume given but neither {out} nor {storage} holds a checkpoint; drop "
                          f"--resume to start a new model there")
    # continue from the newer of -o and the run in storage (-o may have been trained further
    # with --runner local)
    use_out = out_meta is not None and (run_ckpt is None or out_meta["step"] > run_ckpt.step)
    if use_out:
        check_resume(cfg, out_meta, out)
        return out_meta["step"], out_meta["step"]
    if run_ckpt is not None:
        check_resume(cfg, run_ckpt.meta, run_ckpt.path)
        return None, run_ckpt.step
    return None, 0


def _trainer(cfg: TrainConfig, started: bool, name: str, seed_step: int | None):
    """(the job's TorchTrainer, the Progress actor its rank 0 reports to). seed_step not None: the
    workers start from the files of -o (at that step)."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    per_worker, threads = _resources(cfg, started)
    seed = None
    if seed_step is not None:  # the workers may be on other machines: send them -o's files
        out = Path(cfg.out)
        seed = ray.put({f: (out / f).read_bytes() for f in SEED_FILES if (out / f).exists()})
    bar_name = f"swapstream-train-{uuid.uuid4().hex}"
    bar_actor = ray.remote(Progress).options(num_cpus=0, name=bar_name).remote()
    config = {"cfg": asdict(cfg), "seed": seed, "seed_step": seed_step,
              "threads": threads, "driver_node": ray.get_runtime_context().get_node_id(),
              "progress": bar_name}
    trainer = TorchTrainer(
        _worker, train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.gpu,
                                     resources_per_worker={"CPU": per_worker}),
        run_config=RunConfig(name=name, storage_path=cfg.storage,
                             failure_config=FailureConfig(max_failures=cfg.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep)))
    return trainer, bar_actor


def _job_result(out: Path, start: int, t0: float) -> TrainResult:
    """The result, read back from the final checkpoint in -o (which draws loss_curve.png too)."""
    rows = read_history(out)
    plot_history(rows, out / CURVE)
    meta = read_meta(out)
    res = TrainResult(step=meta["step"], history=rows, checkpoint=out,
                      preview=out / "preview.png" if (out / "preview.png").exists() else None)
    res.seconds_per_step = (time.perf_counter() - t0) / max(1, meta["step"] - start)
    res.samples_per_s = rows[-1].get("samples_per_s", 0.0) if rows else 0.0
    res.skipped = sum(int(r.get("skipped", 0)) for r in rows if r["step"] > start)
    return res


def _keep_newest(storage: str, name: str, out: Path) -> None:
    newest = latest_registered(storage, name)
    if newest is None:
        return
    have = read_meta(out)["step"] if (out / "model.json").exists() else -1
    if newest.step > have:
        install_checkpoint(newest.path, out)
