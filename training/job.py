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
import threading
import time
import uuid
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from swapstream.core.errors import ConfigError, SwapstreamError, TrainingError
from swapstream.core.faceset import SIDECAR
from swapstream.engines.checkpoint import install_checkpoint, read_meta
from swapstream.training.logs import CURVE, plot_history, read_history
from swapstream.training.loop import TrainConfig, TrainResult, check_out, check_resume, run
from swapstream.training.runstore import is_remote, latest_registered, prune, run_name, storage_of

SEED_FILES = ("model.safetensors", "model.json", "optimizer.safetensors", "history.jsonl")


class Progress:
    """A tiny actor rank 0 reports to; the driver polls it for its progress bar."""

    def __init__(self) -> None:
        self.step, self.row, self.pid = 0, {}, None
        self.error: tuple[str, str] | None = None

    def update(self, step: int, row: dict, pid: int) -> None:
        self.step, self.row, self.pid = step, row, pid

    def fail(self, kind: str, message: str) -> None:
        """A worker hit a user's error (SwapstreamError): retrying cannot help, the driver stops."""
        self.error = self.error or (kind, message)

    def get(self) -> tuple[int, dict, int | None, tuple[str, str] | None]:
        return self.step, self.row, self.pid, self.error


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
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from swapstream.training.cluster import init_ray

    cfg.validate()
    explicit_storage = cfg.storage is not None
    cfg = _resolved(cfg)
    out, storage, name = Path(cfg.out), cfg.storage, run_name(cfg.out)
    has_out = check_out(out, resume=False)
    _check_facesets(cfg)
    run_ckpt = latest_registered(storage, name)
    out_meta = read_meta(out) if has_out else None
    if cfg.resume and not (out_meta or run_ckpt):
        raise ConfigError(f"--resume given but neither {out} nor {storage} holds a checkpoint; drop "
                          f"--resume to start a new model there")
    # continue from the newer of -o and the run in storage (-o may have been trained further
    # with --runner local); the checks a worker would make, made here, where they stop at once
    use_out = out_meta is not None and (run_ckpt is None or out_meta["step"] > run_ckpt.step)
    if use_out:
        check_resume(cfg, out_meta, out)
    elif run_ckpt is not None:
        check_resume(cfg, run_ckpt.meta, run_ckpt.path)
    started = init_ray(cfg.address, verbose)
    t0 = time.perf_counter()
    try:
        _check_storage(cfg, explicit_storage)
        per_worker, threads = _resources(cfg, started)
        seed = None
        if use_out:  # the workers may be on other machines: send them -o's files
            seed = ray.put({f: (out / f).read_bytes() for f in SEED_FILES if (out / f).exists()})
        bar_name = f"swapstream-train-{uuid.uuid4().hex}"
        bar_actor = ray.remote(Progress).options(num_cpus=0, name=bar_name).remote()
        config = {"cfg": asdict(cfg), "seed": seed, "seed_step": out_meta["step"] if use_out else None,
                  "threads": threads, "driver_node": ray.get_runtime_context().get_node_id(),
                  "progress": bar_name}
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
    rows = read_history(out)
    plot_history(rows, out / CURVE)
    meta = read_meta(out)
    start = out_meta["step"] if use_out else (run_ckpt.step if run_ckpt else 0)
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
    last_pid, last_row_step = None, -1
    try:
        while th.is_alive():
            th.join(0.5)
            try:
                step, row, pid, error = ray.get(bar_actor.get.remote(), timeout=5)
            except Exception:
                continue
            if error is not None:
                raise _error_from(*error)
            if pid is not None and last_pid is not None and pid != last_pid:
                bar.write(f"a training worker failed; the job restarted from its last checkpoint "
                          f"(step {step}) and goes on")
            if row.get("skipped") and step != last_row_step:
                bar.write(f"{row['skipped']} step(s) up to step {step} had a NaN/inf loss or gradient "
                          f"and were skipped")
            if pid is not None:
                last_pid, last_row_step = pid, step
                bar.n = step
                bar.set_postfix(loss_a=f"{row.get('loss_a', 0):.4f}", loss_b=f"{row.get('loss_b', 0):.4f}",
                                samples_s=f"{row.get('samples_per_s', 0):.0f}", refresh=False)
                bar.refresh()
    finally:
        bar.close()
    if "error" in box:
        raise box["error"]
    return box["result"]


def _error_from(kind: str, message: str) -> SwapstreamError:
    """Rebuild a worker's SwapstreamError (by class name) for the one-line CLI message."""
    from swapstream.core import errors

    cls = getattr(errors, kind, SwapstreamError)
    if not (isinstance(cls, type) and issubclass(cls, SwapstreamError)):
        cls = SwapstreamError
    return cls(message)
