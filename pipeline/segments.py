"""Crash-safe segments for long videos: split at keyframes, convert each segment into its own
video-only file, record finished segments in a manifest, join them without re-encoding.

    plan_segments ──> run_segment, each segment ──> manifest.json ──> join_segments
    (keyframe scan)    (in this process, or a       (after each)      (remux video, then the
                        Ray task on any node)                          source's audio, once)

- A segment runs the same stage chain as `convert` (swapstream.pipeline.request.make_chain, local runner)
  over the frames start_pts <= pts < end_pts, and writes them with their absolute input pts, so
  the joined timestamps are the input's. Frame indices stay global (DecodeSettings.first_index).
  Before them it decodes its lead (segment_plan.CONTEXT frames, from the keyframe before them)
  and runs it through detect and align only, so face tracks and landmark smoothing arrive at the
  edge warmed up, close to their state in one whole run (the stage tables count the lead frames).
- Segment files are .mp4, not .mkv: Matroska stores milliseconds (1/30 s frames would be rounded)
  and leaves dts unset, while mp4 keeps the input's time base; the movie timescale is set to the
  track's so the edit list that carries a segment's start time is exact too.
- The manifest (work dir, default `.<output name>.swapstream-work/` beside the output) names the
  input (path, size, mtime), a hash of the resolved config and the model's sha256, the plan, and
  each segment's status. It is rewritten atomically after every finished segment. Rerunning the
  same command skips the segments marked done whose files are intact; a manifest made for another
  input, config or model is cleared. The work dir is removed after a successful join.
- Edges are keyframes, and each segment is encoded on its own, starting with an IDR frame.
- On Ray, segments are tasks of one CPU each; on a cluster whose CPUs are mostly on GPU nodes each
  also takes a share of a GPU (segment_resources), so the swap of every segment runs on a GPU.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from swapstream.core.errors import ConfigError, InputError, OutputError, SwapstreamError
from swapstream.pipeline.config import ConvertConfig, write_resolved
from swapstream.pipeline.request import check_request, to_stderr
from swapstream.pipeline.segment_io import join_segments, run_segment
from swapstream.pipeline.segment_plan import (
    AUTO_SEGMENT_SECONDS,
    PLAN_KEYS,
    Segment,
    SegmentJob,
    SegmentResult,
    keyframes,
    plan_segments,
)
from swapstream.pipeline.stats import ConvertSummary, RunStats
from swapstream.stages.sinks.file import EncodeSettings, EncodeStage
from swapstream.stages.sources.file import probe, short_beyond_tolerance

__all__ = ["AUTO_SEGMENT_SECONDS", "Segment", "SegmentJob", "SegmentResult", "convert_segmented",
           "default_work_dir", "join_segments", "keyframes", "plan_segments", "read_manifest",
           "run_segment", "segment_resources"]

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
# Settings that change how a conversion runs but not what it writes: a resume may change them.
_RUN_ONLY = ("runner", "address", "verbose", "detect_actors", "blend_actors", "max_in_flight", "fuse")


def default_work_dir(output: str | os.PathLike) -> Path:
    dst = Path(output).absolute()
    return dst.parent / f".{dst.name}.swapstream-work"


def _identity(src: Path, cfg: ConvertConfig, meta: dict, models: list[str] | None = None) -> dict:
    """What a segment file depends on: the input file, the resolved config, the model (models:
    the weights' sha256 of each model of a --map, when there are several)."""
    conf = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _RUN_ONLY}
    blob = json.dumps(conf, sort_keys=True, default=str) + str(meta.get("sha256")) + "".join(models or [])
    st = src.stat()
    return {"input": str(src.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "config_sha256": hashlib.sha256(blob.encode()).hexdigest(), "model_sha256": meta.get("sha256")}


def _ours(p: Path) -> bool:
    """Files this module writes into a work dir."""
    return p.name in (MANIFEST, MANIFEST + ".tmp") or p.name.startswith(("seg-", ".seg-"))


def _clear(work: Path, remove_dir: bool) -> None:
    for p in work.iterdir():
        if p.is_file() and _ours(p):
            p.unlink()
    if remove_dir and not any(work.iterdir()):
        work.rmdir()


def read_manifest(work: str | os.PathLike) -> dict | None:
    try:
        m = json.loads((Path(work) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) and m.get("version") == MANIFEST_VERSION else None


def _write_manifest(work: Path, manifest: dict) -> None:
    """Atomically: a crash leaves the previous manifest or this one, never half of one."""
    tmp = work / (MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, work / MANIFEST)


def _check_files(work: Path, manifest: dict) -> None:
    """Every segment entry names its own file, seg-NNNN.mp4, in the work dir: a manifest is read
    back from disk, and an entry like ../x.mp4 would be written (and deleted) outside it."""
    entries = manifest.get("segments")
    for k, e in enumerate(entries if isinstance(entries, list) else [None]):
        name = e.get("file") if isinstance(e, dict) else None
        if name != f"seg-{k:04d}.mp4":
            raise OutputError(f"{work / MANIFEST}: segment {k} names the file {name!r}, not seg-{k:04d}.mp4 "
                              f"in the work dir; the manifest was altered, delete {work} and convert again")


def _open_manifest(work: Path, identity: dict, plan: list[Segment], resume: bool) -> dict:
    """The manifest to continue: the work dir's own when it fits this request, else a fresh one."""
    old = read_manifest(work) if work.is_dir() else None
    if resume and old is None:
        raise ConfigError(f"--resume: nothing to resume, {work} holds no segment manifest; "
                          "run the same command without --resume to start")
    if old is not None:
        _check_files(work, old)
    want = [dataclasses.asdict(s) for s in plan]
    if old is not None and (old.get("identity") != identity
                            or [{k: e.get(k) for k in PLAN_KEYS} for e in old["segments"]] != want):
        if resume:
            raise ConfigError(f"--resume: {work} was made for another input, config or model; "
                              "drop --resume to start afresh")
        old = None
    if work.is_dir() and old is None:
        if any(not _ours(p) for p in work.iterdir()):
            raise OutputError(f"work dir {work} exists and is not a swapstream work dir (no {MANIFEST}); "
                              "choose another --work-dir or empty it")
        _clear(work, remove_dir=False)  # a stale run's files
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create the work dir {work} ({err}); pass --work-dir DIR") from None
    for p in work.glob(".seg-*"):  # partial files of a killed run
        p.unlink()
    if old is None:
        old = {"version": MANIFEST_VERSION, "identity": identity,
               "segments": [{**s, "file": f"seg-{s['index']:04d}.mp4", "status": "pending"} for s in want]}
    for e in old["segments"]:
        f = work / e["file"]
        if e["status"] == "done" and not (f.is_file() and f.stat().st_size == e.get("size")):
            e["status"] = "pending"
    _write_manifest(work, old)
    return old


# ---------------------------------------------------------------------------------- the whole
def convert_segmented(input_path: str | os.PathLike, output_path: str | os.PathLike, cfg: ConvertConfig,
                      segments: int | None = None, work_dir: str | os.PathLike | None = None,
                      progress: bool = True, dispatch: str = "local", resume: bool = False,
                      on_progress: Callable[[float], None] | None = None) -> ConvertSummary:
    """Convert in keyframe-aligned segments that survive a crash; see the module docstring.

    segments: how many (0 = about one per minute); None takes cfg.segments (else 0).
    dispatch: "local" runs the segments one after another in this process and stops at the first
    failure; "ray" runs each as a Ray task (a CPU and, on GPU nodes, a share of a GPU: see
    segment_resources; retried twice if its worker dies), spread
    over the nodes of the cluster (joined via cfg.address / RAY_ADDRESS, else a local Ray); a
    failed segment does not stop the others, the first error is raised when all have ended. Ray
    needs the input, the model and the work dir on a filesystem every node sees at the same path.
    resume: fail unless a work dir of this same request exists (resuming itself is automatic).
    on_progress: called with the share of the frames done (0..1) at the start and after each
    finished segment; what it raises stops the conversion as Ctrl-C does (finished segments kept).
    """
    if dispatch not in ("local", "ray"):
        raise ConfigError(f"dispatch {dispatch!r} is not known; choose local or ray")
    src, dst = Path(input_path).absolute(), Path(output_path).absolute()
    n = segments if segments is not None else (cfg.segments or 0)
    cfg = dataclasses.replace(cfg, segments=n)
    model, plan = _checked_plan(src, dst, cfg, progress)
    meta, total = model.meta, sum(s.frames for s in plan)
    t0 = time.perf_counter()
    work = Path(work_dir).absolute() if work_dir else default_work_dir(dst)
    several = [p.meta.get("sha256", "") for p in model.people] if len(model.people) > 1 else None
    manifest = _open_manifest(work, _identity(src, cfg, meta, several), plan, resume)
    entries = manifest["segments"]
    jobs = [SegmentJob(str(src), plan[e["index"]], str(work / e["file"]), cfg, meta, model.reference,
                       model.people) for e in entries if e["status"] != "done"]
    reused = len(entries) - len(jobs)
    done_frames = [sum(e["frames"] for e in entries if e["status"] == "done")]
    bar = tqdm(total=total, unit="frame", desc=src.name, disable=not progress,
               dynamic_ncols=True, initial=done_frames[0])
    stats = RunStats()

    def finished(r: SegmentResult) -> None:
        e = entries[r.index]
        e.update(status="done", size=(work / e["file"]).stat().st_size, node_id=r.node_id,
                 seconds=round(r.seconds, 3),
                 counts={"faces": r.faces, "swapped": r.swapped, "no_face": r.no_face, "others": r.others,
                         "warnings": r.warnings})
        _write_manifest(work, manifest)
        bar.update(r.frames)
        stats.add(r.stats)
        done_frames[0] += r.frames
        if on_progress is not None:
            on_progress(done_frames[0] / max(total, 1))

    try:
        if on_progress is not None:
            on_progress(done_frames[0] / max(total, 1))
        if dispatch == "ray":
            _run_on_ray(jobs, cfg, finished)
        else:
            for job in jobs:
                finished(run_segment(job))
    except BaseException:
        if not any(e["status"] == "done" for e in entries):
            _clear(work, remove_dir=True)  # nothing to resume: leave nothing behind
        raise
    finally:
        bar.close()
    warnings = join_segments([work / e["file"] for e in entries], src, dst)
    write_resolved(cfg, dst.with_name(dst.name + ".swapstream.json"),
                   {"input": str(src), "output": str(dst), "model_sha256": meta.get("sha256"),
                    "segment_runs": [{k: e.get(k) for k in (*PLAN_KEYS, "node_id", "seconds")}
                                     for e in entries]})
    _clear(work, remove_dir=True)
    stats.seconds = time.perf_counter() - t0
    return _summary(dst, total, entries, stats, warnings, reused)


def _checked_plan(src: Path, dst: Path, cfg: ConvertConfig, progress: bool):
    """(the checked model, the segments' plan): everything a user can get wrong, before any work."""
    model = check_request(cfg, src, dst, say=to_stderr if progress else None)
    info = probe(src)  # a bad input fails here, with decode's message
    EncodeStage(EncodeSettings(str(dst), cfg.encode.codec), info).validate()
    plan = plan_segments(src, cfg.segments)
    total = sum(s.frames for s in plan)
    if info.frames_exact and short_beyond_tolerance(info.frames, total):
        raise InputError(f"{src}: video ends early: {total} of {info.frames} frames are in the file, it is "
                         "truncated; re-download or re-export it completely")
    return model, plan


def _summary(dst: Path, total: int, entries: list[dict], stats: RunStats, warnings: list[str],
             reused: int) -> ConvertSummary:
    """The conversion's summary from the manifest's segment entries (their counts)."""
    counts = [e["counts"] for e in entries]
    warnings = [w for c in counts for w in c["warnings"]] + warnings
    if reused:
        warnings.append(f"resumed: {reused} of {len(entries)} segments were done by an earlier run "
                        "(not in the stage times)")
    return ConvertSummary(dst, total, sum(c["faces"] for c in counts),
                          sum(c["swapped"] for c in counts), sum(c["no_face"] for c in counts),
                          stats.seconds, stats, warnings, sum(c.get("others", 0) for c in counts))


def segment_resources(nodes: list[dict], device: str) -> dict:
    """Ray resources of one segment task (`nodes` as ray.nodes() gives them): a CPU, and, when
    most of the cluster's CPUs are on GPU nodes and the device is not "cpu", a share of a GPU
    small enough that every CPU of a GPU node can run a segment: min over GPU nodes of GPUs / CPUs,
    rounded down to Ray's 1/10000 (rounded up, 6 shares of 0.1667 would not fit on one GPU).
    Tasks that ask for a GPU share run only on GPU nodes, hence the majority rule."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", True)]
    gpu_nodes = [r for r in alive if r.get("GPU", 0) > 0 and r.get("CPU", 0) > 0]
    cpus = sum(r.get("CPU", 0) for r in alive)
    if device == "cpu" or not gpu_nodes or 2 * sum(r["CPU"] for r in gpu_nodes) < cpus:
        return {"num_cpus": 1}
    share = min(r["GPU"] / r["CPU"] for r in gpu_nodes)
    return {"num_cpus": 1, "num_gpus": min(1.0, max(math.floor(share * 10_000) / 10_000, 0.0001))}


def _run_on_ray(jobs: list[SegmentJob], cfg: ConvertConfig, finished) -> None:
    """Each job as a Ray task; `finished(result)` in the driver as each one ends."""
    if not jobs:  # a rerun with every segment done only joins: no Ray needed
        return
    import ray

    from swapstream.training.cluster import init_ray

    started = init_ray(getattr(cfg, "address", None), getattr(cfg, "verbose", False))
    resources = segment_resources(ray.nodes(), cfg.swap.device)
    if resources.get("num_gpus") and cfg.swap.device.startswith("cuda:"):
        # a task sees only the GPU Ray assigns it (CUDA_VISIBLE_DEVICES), as cuda:0
        cuda = [dataclasses.replace(j.cfg, swap=dataclasses.replace(j.cfg.swap, device="cuda")) for j in jobs]
        jobs = [dataclasses.replace(j, cfg=c) for j, c in zip(jobs, cuda)]
    task = ray.remote(max_retries=2, **resources)(run_segment)
    pending = [task.remote(job) for job in jobs]
    error = None
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                finished(ray.get(done[0]))
            except ray.exceptions.RayError as err:  # task errors, and crashed or lost workers
                cause = getattr(err, "cause", None)
                error = error or (cause if isinstance(cause, SwapstreamError) else err)
        if error is not None:
            raise error
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started:
            ray.shutdown()
