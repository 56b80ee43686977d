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
- Placement comes from what each stage declares (swapstream.stages.base.Needs), not from its name: a GPU
  stage gets one actor per GPU, an ordered stage one actor, a poolable stage a pool of
  `cpu_share` x the CPUs (or the size the user gave). On small CPU-only clusters the stages from
  the first ordered one on share one actor (`fuse`).
- Back-pressure: at most `max_in_flight` batches are between decode and the end of encode. Under
  the `block` policy the driver waits for the oldest before it decodes more, so memory does not
  grow with the video; under `newest` it drops the batch it cannot place and counts it.
- Faults: stage actors restart when their process dies and Ray re-runs their unfinished tasks
  (max_restarts / max_task_retries), so no frame is lost or written twice. The sink actor holds
  the open output and is not restarted: if it dies the run fails; the sink (or, if its process
  is gone, whoever made it) removes its partial output; the output name is never written to.
- Actor classes are named after their stage, so `ps`/`top` show `ray::DetectActor` and so on.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from swapstream.core.errors import ConfigError, SwapstreamError
from swapstream.core.video import Planes
from swapstream.pipeline.chain import Chain, Link
from swapstream.pipeline.runners.backpressure import Continuity, check_policy
from swapstream.pipeline.runners.base import Report, Runner, cascade, one_sink
from swapstream.pipeline.runners.fused import fuse_chain
from swapstream.pipeline.runners.local import batches
from swapstream.pipeline.stats import RunStats, StageStats
from swapstream.stages.base import Source
from swapstream.training.cluster import init_ray

RETRIES = 3
FUSE_MODES = ("auto", "on", "off")  # --fuse: align, swap and blend in one actor (see should_fuse)
FUSE_CPUS = 4  # --fuse auto: fuse align+swap+blend on clusters this small
NO_FRAME = np.zeros((0, 0, 3), np.uint8)  # stands in for a frame that stays in the object store


class StageWorker:
    """Generic adapter: builds one stage with `factory` in the actor's process and runs it.

    Frames travel once: the driver puts each batch's frames in the object store, every stage
    gets them by reference (zero-copy, read-only) and returns its packets without them, except
    the last stage before the sink (`keep_frames`), whose frames are the ones to encode.
    """

    def __init__(self, factory, keep_frames: bool = False, threads: int = 0) -> None:
        # A user's error in set-up (unknown engine, no GPU for --device cuda, bad codec) is kept
        # and raised from the first call: an error in an actor's constructor reaches the driver
        # only as text, an error in a method as itself, so the CLI can print its one line.
        self.error: SwapstreamError | None = None
        try:
            self.stage = factory()
            if threads:
                self.stage.limit_threads(threads)
            self.stage.setup()
        except SwapstreamError as e:
            self.error = e
        self.keep_frames = keep_frames
        self.busy = 0.0
        self.frames = 0
        self.faces = 0

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
        self.faces += sum(len(p.faces) for p in out)
        return out

    def flush(self) -> list:
        return self.stage.flush()

    def stats(self) -> dict:
        # a FusedStage also says how its time split between the stages inside it
        return {"busy_s": self.busy, "frames": self.frames, "faces": self.faces, "pid": os.getpid(),
                "parts": dict(getattr(self.stage, "busy", None) or {})}

    def pid(self) -> int:
        """The worker's process id, once its stage is set up (raises the set-up error if any)."""
        if self.error is not None:
            raise self.error
        return os.getpid()


class SinkWorker(StageWorker):
    """The sink end: returns only a frame count, so no frame travels back to the driver.

    The decoded frames an encoder may write as they are (FramePacket.source) come beside each
    submitted batch, as core.video.Planes keyed by frame index, and are kept until their packet
    arrives (a stage that holds frames back delivers them batches later): the encoder then writes
    the same pixels as in the local runner."""

    def __init__(self, factory, keep_frames: bool = False, threads: int = 0) -> None:
        super().__init__(factory, keep_frames, threads)
        self.sources: dict[int, Planes] = {}

    def process(self, batch: list, frames: list | None = None,  # type: ignore[override]
                sources: list | None = None) -> int:
        self.sources.update(sources or ())
        for p in batch:
            planes = self.sources.pop(p.index, None)
            p.source = planes.frame() if planes is not None else None
        return len(super().process(batch, frames))

    def abort(self) -> None:
        if self.error is None:
            self.stage.abort()

    def close(self) -> None:
        if self.error is None:
            self.stage.close()

    def report(self) -> dict:
        return self.stage.report()


@dataclass
class RayOptions:
    """How a chain runs on Ray. address: the cluster (None: RAY_ADDRESS, else a local Ray);
    pool_sizes: actors per stage name where the user chose (0 or absent: from the stage's needs);
    fuse: auto | on | off; max_in_flight: batches between source and sink (0: from the pools);
    policy: block | newest (see swapstream.pipeline.runners.backpressure)."""

    address: str | None = None
    verbose: bool = False
    batch_size: int = 8
    fuse: str = "auto"
    pool_sizes: dict[str, int] = field(default_factory=dict)
    max_in_flight: int = 0
    policy: str = "block"


def should_fuse(fuse: str, cpus: int, gpus: int) -> bool:
    """Whether align, swap and blend share one actor: "on", "off", or "auto" = on a machine of
    at most FUSE_CPUS CPUs and no GPU, where separate actors cost more than they give."""
    if fuse not in FUSE_MODES:
        raise ConfigError(f"fuse {fuse!r} is not one of {', '.join(FUSE_MODES)}")
    return fuse == "on" or (fuse == "auto" and cpus <= FUSE_CPUS and not gpus)


def _actor_class(name: str, base: type):
    import ray

    # A class per stage, so that the worker's process title says which stage it runs
    # (ray::DetectActor; a fused align+swap+hands+blend actor is ray::AlignSwapHandsBlendActor).
    title = "".join(part.capitalize() for part in name.split("+"))
    return ray.remote(type(f"{title}Actor", (base,), {}))


class _Pipeline:
    """The actors of one run and the bookkeeping of the batches in flight."""

    def __init__(self) -> None:
        self.pools: list[list] = []
        self.sink = None

    def pool_size(self, lk: Link, opts: RayOptions, cpus: int, gpus: int) -> int:
        if lk.needs.device == "gpu" and gpus:
            return gpus
        if lk.needs.ordered or not lk.needs.cpu_share:
            return 1
        return opts.pool_sizes.get(lk.name) or max(1, int(cpus * lk.needs.cpu_share))

    def build(self, chain: Chain, sink: Link, opts: RayOptions) -> None:
        """Start the actors and wait until all are ready. Interruptible: whatever was started
        is on `self` for the caller to clean up."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        gpus = int(ray.cluster_resources().get("GPU", 0))
        if should_fuse(opts.fuse, cpus, gpus):
            chain = fuse_chain(chain)  # detect pool, then one actor for the rest
        retry = {"max_restarts": RETRIES, "max_task_retries": RETRIES}
        self.names = [lk.name for lk in chain] + [sink.name]
        sizes = []
        # From a stage that holds frames back on, packets leave a stage with their frames: the
        # batch's frames are no longer the ones the packets belong to.
        self.holder = next((k for k, lk in enumerate(chain) if lk.needs.holds), len(chain))
        for k, lk in enumerate(chain):
            cls = _actor_class(lk.name, StageWorker)
            keep = k == len(chain) - 1 or k >= self.holder
            # Stage actors reserve no CPU: the OS shares the cores; the pool sizes decide how
            # much runs at once. A GPU stage holds a GPU where there is one.
            o = {**retry, "num_cpus": 0, **({"num_gpus": 1} if lk.needs.device == "gpu" and gpus else {})}
            sizes.append(n := self.pool_size(lk, opts, cpus, gpus))
            self.pools.append([cls.options(**o).remote(lk.factory, keep) for _ in range(n)])
        # The sink writes locally (a file, a device): it runs on the driver's node, with a
        # quarter of the CPUs for its codec threads (the pools have the rest).
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        sink_cls = _actor_class(sink.name, SinkWorker)
        self.sink = sink_cls.options(num_cpus=0, max_restarts=0, scheduling_strategy=here).remote(
            sink.factory, True, max(1, cpus // 4))
        self.pools.append([self.sink])
        ray.get([a.pid.remote() for pool in self.pools for a in pool])  # every worker is ready
        pooled = sum(n for lk, n in zip(chain, sizes) if lk.needs.poolable and n > 1)
        self.window = opts.max_in_flight or 2 * max(pooled, 1) + 2
        self.inflight: deque = deque()  # (frames, [ref per stage])
        self.queue_sum = [0.0] * len(self.pools)
        self.samples = 0

    def submit(self, batch_no: int, batch: list) -> None:
        import ray

        frames = ray.put([p.frame for p in batch])  # the one copy of these frames
        # the decoded frames, for the encoder alone (SinkWorker)
        sources = [(p.index, Planes.of(p.source)) for p in batch if p.source is not None]
        for p in batch:
            p.frame, p.source = NO_FRAME, None
        ref, refs = batch, []
        for k, pool in enumerate(self.pools):
            # the sink encodes the frames the last stage returns, and the stages after a holding
            # one get theirs with the packets; the others read the originals
            last = k == len(self.pools) - 1
            own = last or k > self.holder
            args = (ref, None if own else frames) + ((sources,) if last else ())
            ref = pool[batch_no % len(pool)].process.remote(*args)
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

    def oldest_done(self) -> bool:
        import ray

        ready, _ = ray.wait([self.inflight[0][1][-1]], timeout=0)
        return bool(ready)

    def collect_oldest(self) -> int:
        import ray

        n, refs = self.inflight.popleft()
        ray.get(refs[-1])
        return n

    def flush(self) -> int:
        """The end-of-stream cascade (runners.base.cascade) over every actor of every stage, then
        the sink's flush (its output completed)."""
        import ray

        done = 0

        def through(rest: list, start: int) -> None:  # held-back packets, as submit() sends them
            nonlocal done
            frames = None
            if start - 1 < self.holder:  # the stages up to the holder read frames beside packets
                frames = ray.put([p.frame for p in rest])
                for p in rest:
                    p.frame = NO_FRAME
            ref = rest
            for j in range(start, len(self.pools)):
                own = j == len(self.pools) - 1 or j > self.holder
                ref = self.pools[j][0].process.remote(ref, None if own else frames)
            done += ray.get(ref)

        cascade([(k, lambda a=actor: ray.get(a.flush.remote()))
                 for k, pool in enumerate(self.pools[:-1]) for actor in pool], through)
        ray.get(self.sink.flush.remote())
        return done

    def stats(self, run: RunStats) -> None:
        import ray

        for name, pool, q in zip(self.names, self.pools, self.queue_sum):
            per = ray.get([a.stats.remote() for a in pool])
            frames, queue = sum(p["frames"] for p in per), q / max(self.samples, 1)
            faces = 0 if pool is self.pools[-1] else sum(p.get("faces", 0) for p in per)  # not the sink's
            parts = {k: sum(p["parts"].get(k, 0.0) for p in per) for k in per[0]["parts"]}
            for part, busy in (parts or {name: sum(p["busy_s"] for p in per)}).items():
                run.stages.append(StageStats(part, frames, busy, queue, len(pool), faces))

    def kill(self) -> None:
        import ray

        actors = {a for pool in self.pools for a in pool} | ({self.sink} if self.sink else set())
        for actor in actors:
            ray.kill(actor, no_restart=True)


class RayRunner(Runner):
    """The stages as Ray actors (see the module docstring). opts: pipeline.runners.ray.RayOptions
    (its policy is the one run() is given); frame_bytes: one frame's size, for sizing a local
    Ray's object store; total, desc: the progress bar's."""

    def __init__(self, opts: RayOptions | None = None, progress: bool = True, total: int | None = None,
                 desc: str = "convert", frame_bytes: int = 0) -> None:
        self.opts = opts or RayOptions()
        self.progress, self.total, self.desc, self.frame_bytes = progress, total, desc, frame_bytes

    def run(self, chain: Chain, source: Source, sinks: Sequence[Link], policy: str = "block") -> Report:
        """Run `chain` on Ray into the sinks (built together in one actor, on this node). On an
        error the sinks abort their output."""
        opts = dataclasses.replace(self.opts, policy=check_policy(policy))
        stats, report = _run(chain, source.packets(), one_sink(sinks), opts, self.progress, self.total,
                             self.desc, self.frame_bytes)
        return Report(stats, report)


def _run(chain: Chain, packets: Iterable, sink: Link, opts: RayOptions, progress: bool = True,
         total: int | None = None, desc: str = "convert", frame_bytes: int = 0) -> tuple[RunStats, dict]:
    """Run `chain` on Ray from `packets` into the sink `sink` builds (in its own actor); returns the
    run's statistics and the sink's report. On an error the sink aborts its output."""
    import ray

    check_policy(opts.policy)
    started = init_ray(opts.address, opts.verbose, frame_bytes, opts.batch_size)
    pipe = _Pipeline()
    bar = tqdm(total=total, unit="frame", desc=desc, disable=not progress, dynamic_ncols=True)
    run = RunStats()
    t0 = time.perf_counter()
    try:
        pipe.build(chain, sink, opts)
        run.startup_s = time.perf_counter() - t0
        cont = Continuity()
        for i, batch in enumerate(batches(packets, opts.batch_size)):
            if opts.policy == "newest":
                while pipe.inflight and pipe.oldest_done():
                    bar.update(n := pipe.collect_oldest())
                    run.frames += n
                if len(pipe.inflight) >= pipe.window:
                    run.dropped += len(batch)  # no room: this batch would be stale by the time
                    continue
                for p in batch:
                    cont.admit(p)  # the next batch in continues the last one in
            pipe.submit(i, batch)
            pipe.sample_queues()
            while opts.policy == "block" and len(pipe.inflight) >= pipe.window:
                bar.update(n := pipe.collect_oldest())
                run.frames += n
        while pipe.inflight:
            bar.update(n := pipe.collect_oldest())
            run.frames += n
        pipe.flush()  # frames held back by a stage were counted when their batch went in
        run.seconds = time.perf_counter() - t0
        pipe.stats(run)
        report = ray.get(pipe.sink.report.remote())
        ray.get(pipe.sink.close.remote())
    except BaseException as err:
        if pipe.sink is not None:
            try:
                ray.get(pipe.sink.abort.remote(), timeout=10)
            except Exception:  # the sink itself may be what died: its maker cleans up
                pass
        cause = getattr(err, "cause", None)
        if isinstance(err, ray.exceptions.RayTaskError) and isinstance(cause, SwapstreamError):
            raise cause from None  # a user's problem found in an actor: one line, as locally
        raise
    finally:
        bar.close()
        pipe.kill()
        if started:
            ray.shutdown()
    return run, report
