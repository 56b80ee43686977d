"""The Ray runner: the same stage objects as the local runner, each inside a Ray actor.

    driver: decode ──> DetectActor pool ──> AlignActor ──> SwapActor(s) ──> BlendActor pool ──> EncodeActor
                        (parallel)           (in order)     (GPU each)      (parallel)           (in order)

- The driver decodes and submits each batch of frames through the whole chain at once, passing
  object refs from actor to actor; frames never come back to the driver.
- Order: Ray runs the tasks that one caller submits to one actor in submission order, waiting for
  each task's inputs, so AlignActor and EncodeActor see batches in frame order even when the
  pools finish them out of order. EncodeActor has no retries, so its order always holds; after an
  AlignActor restart its retried batches may run out of order, which costs only the landmark
  smoothing around the restart (align restarts its tracks when frame indices jump).
- Back-pressure: at most `max_in_flight` batches are between decode and the end of encode; the
  driver waits for the oldest before it decodes more, so memory does not grow with the video.
- Faults: stage actors restart when their process dies and Ray re-runs their unfinished tasks
  (max_restarts / max_task_retries), so no frame is lost or written twice. EncodeActor holds the
  open output file and is not restarted: if it dies the run fails and its temporary file is
  removed; the output name is never written to.
- Actor classes are named after their stage, so `ps`/`top` show `ray::DetectActor` and so on.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections import deque
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.fused import fuse_chain
from pipeline.local_runner import RunStats, StageStats, batches
from stages.encode import EncodeSettings, EncodeStage
from stages.errors import ConfigError, SwapstreamError

RETRIES = 3
FUSE_CPUS = 4  # --fuse auto: fuse align+swap+blend on clusters this small
FUSE_MODES = ("auto", "on", "off")
NO_FRAME = np.zeros((0, 0, 3), np.uint8)  # stands in for a frame that stays in the object store
# One OpenMP thread per actor: the pools are the parallelism, and every actor's own full-size
# thread pool on the same cores costs more than it gives (measured: +20% fps on 2 cores).
ACTOR_ENV = {"OMP_NUM_THREADS": "1"}
QUIET_ENV = {"GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}


class StageWorker:
    """Generic adapter: builds one stage with `factory` in the actor's process and runs it.

    Frames travel once: the driver puts each batch's frames in the object store, every stage
    gets them by reference (zero-copy, read-only) and returns its packets without them, except
    the last stage before the sink (`keep_frames`), whose frames are the ones to encode.
    """

    def __init__(self, factory, keep_frames: bool = False) -> None:
        # A user's error in set-up (unknown engine, no GPU for --device cuda, bad codec) is kept
        # and raised from the first call: an error in an actor's constructor reaches the driver
        # only as text, an error in a method as itself, so the CLI can print its one line.
        self.error: SwapstreamError | None = None
        try:
            self.stage = factory()
            self.stage.setup()
        except SwapstreamError as e:
            self.error = e
        self.keep_frames = keep_frames
        self.busy = 0.0
        self.frames = 0

    def process(self, batch: list, frames: list | None = None) -> list:
        t = time.perf_counter()
        if frames is not None:
            for p, f in zip(batch, frames, strict=True):
                p.frame = f
        out = self.stage.process(batch)
        if not self.keep_frames:
            for p in out:
                p.frame = NO_FRAME
        self.busy += time.perf_counter() - t
        self.frames += len(out)
        return out

    def flush(self) -> list:
        return self.stage.flush()

    def stats(self) -> dict:
        # a FusedStage also says how its time split between the stages inside it
        return {"busy_s": self.busy, "frames": self.frames, "pid": os.getpid(),
                "parts": dict(getattr(self.stage, "busy", None) or {})}

    def pid(self) -> int:
        """The worker's process id, once its stage is set up (raises the set-up error if any)."""
        if self.error is not None:
            raise self.error
        return os.getpid()


class SinkWorker(StageWorker):
    """The encode end: returns only a frame count, so no frame travels back to the driver."""

    def process(self, batch: list, frames: list | None = None) -> int:  # type: ignore[override]
        return len(super().process(batch, frames))

    def temp_path(self) -> str | None:
        self.pid()  # raises the set-up error, if any
        return str(self.stage.encode.temp_path) if self.stage.encode.temp_path else None

    def abort(self) -> None:
        self.stage.abort()

    def counts(self) -> dict:
        return self.stage.counts()


def should_fuse(fuse: str, cpus: int, gpus: int) -> bool:
    """Whether align, swap and blend share one actor: "on", "off", or "auto" = on a machine of
    at most FUSE_CPUS CPUs and no GPU, where separate actors cost more than they give."""
    if fuse not in FUSE_MODES:
        raise ConfigError(f"fuse {fuse!r} is not one of {', '.join(FUSE_MODES)}")
    return fuse == "on" or (fuse == "auto" and cpus <= FUSE_CPUS and not gpus)


def _actor_class(name: str, base: type):
    import ray

    # A class per stage, so that the worker's process title says which stage it runs
    # (ray::DetectActor; a fused align+swap+blend actor is ray::AlignSwapBlendActor).
    title = "".join(part.capitalize() for part in name.split("+"))
    return ray.remote(type(f"{title}Actor", (base,), {}))


def _make_sink(settings: EncodeSettings, info) -> object:
    from pipeline.convert import CountingSink

    return CountingSink(EncodeStage(settings, info))


def init_ray(address: str | None, verbose: bool, frame_bytes: int = 0, batch_size: int = 8) -> bool:
    """Join the cluster at `address` (or RAY_ADDRESS), else start a local Ray; True if started.

    A local Ray gets an object store sized for the frames in flight (48 batches' worth, between
    512 MiB and Ray's default of 30% of RAM): the store touches fresh pages until it is full, so
    an oversized one looks like memory growing with the length of the video.
    """
    import ray

    if ray.is_initialized():
        return False
    store = None
    if not (address or os.environ.get("RAY_ADDRESS")) and frame_bytes:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        store = int(min(max(48 * batch_size * frame_bytes, 512 << 20), 0.3 * ram))
    try:
        ray.init(address=address or None, include_dashboard=False, log_to_driver=verbose,
                 logging_level=logging.INFO if verbose else logging.ERROR, object_store_memory=store,
                 runtime_env={"env_vars": {**ACTOR_ENV, **({} if verbose else QUIET_ENV)}})
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = address or os.environ.get("RAY_ADDRESS")
        if not where:
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"cannot join the Ray cluster at {where} ({first}); check --address / "
                          f"RAY_ADDRESS, or leave both unset to run a local Ray") from None
    return True


class _Pipeline:
    """The actors of one conversion and the bookkeeping of the batches in flight."""

    def __init__(self) -> None:
        self.pools: list[list] = []
        self.sink = None
        self.temp_path: str | None = None

    def build(self, chain, settings: EncodeSettings, info, cfg) -> None:
        """Start the actors and wait until all are ready. Interruptible: whatever was started
        is on `self` for the caller to clean up."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        gpus = int(ray.cluster_resources().get("GPU", 0))
        if should_fuse(cfg.fuse, cpus, gpus):
            chain = fuse_chain(chain, 1)  # detect pool, then one actor for the rest
        sizes = {"detect": cfg.detect_actors or max(1, cpus // 2),
                 "blend": cfg.blend_actors or max(1, cpus // 4),
                 "swap": max(1, gpus), "align": 1}
        opts = {"max_restarts": RETRIES, "max_task_retries": RETRIES}
        self.names = [name for name, _ in chain] + ["encode"]
        for k, (name, factory) in enumerate(chain):
            cls = _actor_class(name, StageWorker)
            keep = k == len(chain) - 1
            if "swap" in name.split("+") and gpus:
                o = {**opts, "num_gpus": 1, "num_cpus": 0}
            else:
                # Stage actors reserve no CPU: the OS shares the cores; the pool sizes decide
                # how much runs at once.
                o = {**opts, "num_cpus": 0}
            self.pools.append([cls.options(**o).remote(factory, keep)
                               for _ in range(sizes.get(name, 1))])
        # The encoder writes a local file: it runs on the driver's node.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        if not settings.threads:  # leave the other cores to the pools
            settings = dataclasses.replace(settings, threads=max(1, cpus // 4))
        sink_cls = _actor_class("encode", SinkWorker)
        self.sink = sink_cls.options(num_cpus=0, max_restarts=0, scheduling_strategy=here).remote(
            partial(_make_sink, settings, info), True)
        self.pools.append([self.sink])
        self.temp_path = ray.get(self.sink.temp_path.remote())
        ray.get([a.pid.remote() for pool in self.pools for a in pool])  # every worker is ready
        self.window = cfg.max_in_flight or 2 * (sizes["detect"] + sizes["blend"]) + 2
        self.inflight: deque = deque()  # (frames, [ref per stage])
        self.queue_sum = [0.0] * len(self.pools)
        self.samples = 0

    def submit(self, batch_no: int, batch: list) -> None:
        import ray

        frames = ray.put([p.frame for p in batch])  # the one copy of these frames
        for p in batch:
            p.frame = NO_FRAME
        ref, refs = batch, []
        for k, pool in enumerate(self.pools):
            # the sink encodes the frames the last stage returns; the others read the originals
            ref = pool[batch_no % len(pool)].process.remote(ref, None if k == len(self.pools) - 1 else frames)
            refs.append(ref)
        self.inflight.append((len(batch), refs))

    def sample_queues(self) -> None:
        """Count, per stage, the batches waiting for it (its input ready, its output not)."""
        import ray

        refs = [r for _, rs in self.inflight for r in rs]
        ready = set(ray.wait(refs, num_returns=len(refs), timeout=0)[0]) if refs else set()
        for _, rs in self.inflight:
            for k, r in enumerate(rs):
                if r not in ready:
                    self.queue_sum[k] += 1
                    break
        self.samples += 1

    def collect_oldest(self) -> int:
        import ray

        n, refs = self.inflight.popleft()
        ray.get(refs[-1])
        return n

    def flush(self) -> int:
        """Flush every stage in order, pushing what each returns through the stages after it."""
        import ray

        done = 0
        for k, pool in enumerate(self.pools[:-1]):
            for actor in pool:
                rest = ray.get(actor.flush.remote())
                if rest:  # held-back packets: through the later stages, as submit() sends them
                    frames = ray.put([p.frame for p in rest])
                    for p in rest:
                        p.frame = NO_FRAME
                    ref, later = rest, self.pools[k + 1:]
                    for j, pool_j in enumerate(later):
                        ref = pool_j[0].process.remote(ref, None if j == len(later) - 1 else frames)
                    done += ray.get(ref)
        ray.get(self.sink.flush.remote())
        return done

    def stats(self, run: RunStats) -> dict:
        import ray

        for name, pool, q in zip(self.names, self.pools, self.queue_sum):
            per = ray.get([a.stats.remote() for a in pool])
            frames, queue = sum(p["frames"] for p in per), q / max(self.samples, 1)
            parts = {k: sum(p["parts"].get(k, 0.0) for p in per) for k in per[0]["parts"]}
            for part, busy in (parts or {name: sum(p["busy_s"] for p in per)}).items():
                run.stages.append(StageStats(part, frames, busy, queue, len(pool)))
        return ray.get(self.sink.counts.remote())

    def kill(self) -> None:
        import ray

        actors = {a for pool in self.pools for a in pool} | ({self.sink} if self.sink else set())
        for actor in actors:
            ray.kill(actor, no_restart=True)


def run_ray(chain, frames, settings: EncodeSettings, info, cfg, progress: bool,
            desc: str) -> tuple[RunStats, dict]:
    """Run the conversion on Ray; returns the run's statistics and the face counts."""
    import ray

    started = init_ray(cfg.address, cfg.verbose, info.width * info.height * 3, cfg.batch_size)
    pipe = _Pipeline()
    bar = tqdm(total=info.frames, unit="frame", desc=desc, disable=not progress, dynamic_ncols=True)
    run = RunStats()
    t0 = time.perf_counter()
    try:
        pipe.build(chain, settings, info, cfg)
        run.startup_s = time.perf_counter() - t0
        for i, batch in enumerate(batches(frames, cfg.batch_size)):
            pipe.submit(i, batch)
            pipe.sample_queues()
            while len(pipe.inflight) >= pipe.window:
                bar.update(n := pipe.collect_oldest())
                run.frames += n
        while pipe.inflight:
            bar.update(n := pipe.collect_oldest())
            run.frames += n
        run.frames += pipe.flush()
        run.seconds = time.perf_counter() - t0
        counts = pipe.stats(run)
    except BaseException as err:
        if pipe.sink is not None:
            try:
                ray.get(pipe.sink.abort.remote(), timeout=10)
            except Exception:  # the encoder itself may be what died
                pass
            if pipe.temp_path:
                Path(pipe.temp_path).unlink(missing_ok=True)
        cause = getattr(err, "cause", None)
        if isinstance(err, ray.exceptions.RayTaskError) and isinstance(cause, SwapstreamError):
            raise cause from None  # a user's problem found in an actor: one line, as locally
        raise
    finally:
        bar.close()
        pipe.kill()
        if started:
            ray.shutdown()
    return run, counts
