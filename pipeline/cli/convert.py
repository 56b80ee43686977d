"""`swapstream convert`: swap the faces of a video (optionally in crash-safe segments)."""

from __future__ import annotations

import sys
from pathlib import Path

from swapstream.pipeline.cli.common import (
    drop_none,
    map_flag,
    map_values,
    only_flag,
    settings_file,
    swap_flags,
    swap_values,
)


def add(sub) -> None:
    p = sub.add_parser("convert", help="swap the faces of a video (or of several: -o DIR)",
                       usage="swapstream convert [options] INPUT OUTPUT\n"
                             "       swapstream convert [options] INPUT [INPUT ...] -o DIR",
                       description="Swap every face in INPUT (or, with --only, one person's) with "
                                   "the other identity of MODEL, or each person of a --map with their "
                                   "own model, and write OUTPUT with the same frames, timestamps and "
                                   "audio. With -o DIR: convert several files, and the video files of "
                                   "folders, one after another into DIR/NAME.swapped.mp4, as a queue "
                                   "kept in DIR/.swapstream-queue.json (run the same command again to "
                                   "resume; a bad input fails alone).")
    p.add_argument("paths", nargs="+", metavar="INPUT",
                   help="video file to convert (any format FFmpeg reads), then OUTPUT, the video file to "
                        "write (.mp4, .mkv, .mov); with -o DIR: files and folders to convert")
    p.add_argument("-o", "--output-dir", metavar="DIR",
                   help="convert every INPUT (a folder: its video files) into DIR/NAME.swapped.mp4, one "
                        "after another, each in crash-safe segments; rerunning the same command skips "
                        "the files done and resumes the one interrupted")
    p.add_argument("--runner", default=None, choices=["auto", "ray", "local"],
                   help="auto (default): local for short inputs on small machines, ray where its start-up "
                        "pays off (a cluster address, --segments, a GPU, 8+ CPUs, or over ~60 s of "
                        "work by this machine's measured rates), said in one line; ray: stages as Ray "
                        "actors; local: all in this process")
    p.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--detect-actors", type=int, help="detect pool size (default: half the CPUs)")
    p.add_argument("--blend-actors", type=int, help="blend pool size (default: a quarter of the CPUs)")
    p.add_argument("--fuse", choices=["auto", "on", "off"],
                   help="Ray runner: align, swap and blend in one actor (auto: on machines of up to "
                        "4 CPUs without a GPU)")
    p.add_argument("--stats", metavar="FILE.json", help="write per-stage figures as JSON")
    p.add_argument("--parallel", type=int, default=1, metavar="N",
                   help="with -o DIR: convert N files side by side, each a Ray task (a local Ray, or the "
                        "cluster at --address; the files on a folder every node mounts); default 1: one "
                        "after another")
    p.add_argument("--segments", type=int, metavar="N",
                   help="convert in N keyframe-aligned segments that survive a crash (0: about one "
                        "per minute); rerunning the same command resumes, finished segments are kept")
    p.add_argument("--resume", action="store_true",
                   help="with --segments: fail unless an interrupted run of this command can be resumed")
    p.add_argument("--work-dir", help="with --segments: where segments and their manifest are kept "
                                      "(default .OUTPUT.swapstream-work beside the output)")
    swap_flags(p, model_required=False)  # --map names the models instead
    p.add_argument("--config", help="YAML file with detect/align/blend/encode sections")
    p.add_argument("--color", choices=["none", "reinhard", "hist"], help="colour matching (reinhard)")
    p.add_argument("--sharpen", choices=["none", "unsharp", "gaussian", "box"], help="sharpening (unsharp)")
    p.add_argument("--sharpen-amount", type=float, help="sharpening strength (0.5)")
    p.add_argument("--composite", choices=["alpha", "seamless"], help="compositing (alpha)")
    p.add_argument("--occlusion", choices=["learned", "hands", "both", "none"],
                   help="what in front of the face stays in front: the model's learned mask, hands "
                        "found by MediaPipe, both (default), none")
    p.add_argument("--mouth", choices=["auto", "keep", "swap"],
                   help="A's own open mouth: auto keeps it where the model never saw one so open "
                        "(default), keep always, swap never")
    p.add_argument("--detail", type=float,
                   help="0-1: the frame's fine detail carried over an upscaled face (0.5)")
    p.add_argument("--min-face", type=int, help="smallest face height to find, px (64)")
    p.add_argument("--no-smoothing", action="store_true", help="turn off landmark smoothing")
    p.add_argument("--codec", help="video encoder: libx264 (default), libx265, h264_nvenc, hevc_nvenc")
    p.add_argument("--hwaccel", help="decode on a device: cuda, vaapi, qsv, videotoolbox (default none)")
    p.add_argument("--crf", type=int, help="H.264 quality, lower is better (18)")
    p.add_argument("--preset", help="x264 preset (fast)")
    only_flag(p)
    map_flag(p)
    p.set_defaults(func=run)


def run(a) -> int:
    from swapstream.core.errors import ConfigError

    if a.parallel < 1:
        raise ConfigError(f"--parallel {a.parallel}: give 1 or more files at a time")
    if a.parallel > 1 and a.output_dir is None:
        raise ConfigError("--parallel goes with several inputs and -o DIR (one INPUT OUTPUT uses "
                          "--runner ray to spread one file over the cluster)")
    if a.output_dir is not None:
        return _run_queue(a, _config(a))
    if len(a.paths) != 2:
        raise ConfigError(f"convert takes INPUT OUTPUT, or several inputs with -o DIR (got {len(a.paths)} "
                          f"path{'s' if len(a.paths) != 1 else ''}: {' '.join(a.paths)}); e.g. swapstream "
                          "convert in.mp4 out.mp4, or swapstream convert a.mp4 b.mp4 clips/ -o swapped/")
    a.input, a.output = a.paths
    return _run_one(a, _config(a))


def _config(a):
    """The resolved ConvertConfig of the flags over the --config file; the --stats folder checked."""
    from swapstream.pipeline.config import ConvertConfig, convert_values, fill, merge

    values = convert_values(settings_file(a.config))
    flags = {"swap": swap_values(a), "runner": a.runner, "address": a.address,
             "detect_actors": a.detect_actors,
             "blend_actors": a.blend_actors, "fuse": a.fuse, "verbose": a.verbose or None,
             "blend": {"color": a.color, "sharpen": a.sharpen, "sharpen_amount": a.sharpen_amount,
                       "composite": a.composite, "occlusion": a.occlusion, "mouth": a.mouth,
                       "detail": a.detail},
             "detect": {"min_face": a.min_face},
             "align": {"smoothing": False if a.no_smoothing else None},
             "encode": {"crf": a.crf, "preset": a.preset, "codec": a.codec},
             "decode": {"hwaccel": a.hwaccel}, "identity": {"only": a.only}, "map": map_values(a.map)}
    flags["segments"] = a.segments
    cfg = fill(ConvertConfig, merge(values, drop_none(flags)))
    if a.stats and not Path(a.stats).absolute().parent.is_dir():  # not after an hour of work
        from swapstream.core.errors import OutputError

        raise OutputError(f"--stats {a.stats}: folder {Path(a.stats).absolute().parent} does not "
                          f"exist; create it or choose another path")
    return cfg


def _run_one(a, cfg) -> int:
    """convert INPUT OUTPUT."""
    from swapstream.pipeline.convert import convert

    if cfg.segments is not None:  # the work dir and --resume belong to a segmented run only
        from swapstream.pipeline.segments import convert_segmented

        cfg, choice = _segments_runner(a, cfg)
        summary = convert_segmented(a.input, a.output, cfg, work_dir=a.work_dir, progress=not a.quiet,
                                    dispatch=choice.runner, resume=a.resume)
        summary.runner, summary.runner_reason = choice.runner, choice.reason
    elif a.resume or a.work_dir:
        from swapstream.core.errors import ConfigError

        raise ConfigError("--resume and --work-dir go with --segments N; add --segments "
                          "(0: about one segment per minute of video)")
    else:
        summary = convert(a.input, a.output, cfg, progress=not a.quiet)
    for line in summary.lines():
        print(line)
    if a.stats:
        import json

        Path(a.stats).write_text(json.dumps(summary.to_json(), indent=2))
    return 0


def _segments_runner(a, cfg):
    """(cfg with its runner resolved, the Choice) of a segmented run: where its segments run,
    in this process (local) or as Ray tasks (ray), said in one line unless --quiet. auto probes
    the input (a bad one fails here, with decode's message)."""
    from swapstream.pipeline.request import to_stderr
    from swapstream.pipeline.runners.choice import resolve
    from swapstream.stages.sources.file import probe

    info = probe(a.input) if cfg.runner == "auto" else None  # "ray" / "local" need no look
    return resolve(cfg, info, say=None if a.quiet else to_stderr)


# --------------------------------------------------------------------------- several: a queue
def _run_queue(a, cfg) -> int:
    """convert INPUT... -o DIR: the inputs queued in DIR/.swapstream-queue.json (with what it held
    unfinished), converted one after another with --segments' crash safety; a summary line, then
    exit 0, or a SwapstreamError (exit 2) naming the inputs that failed."""
    from swapstream.core.errors import ConfigError, InputError, OutputError
    from swapstream.pipeline.conversion_queue import (
        QUEUE_FILE,
        JobQueue,
        expand_inputs,
        queue_path,
        run_queue,
    )
    from swapstream.pipeline.request import check_model, to_stderr

    if a.work_dir:
        raise ConfigError("--work-dir goes with one INPUT OUTPUT; with -o DIR each file keeps its segments "
                          "in DIR/.NAME.swapstream-work until it is done")
    out = Path(a.output_dir).absolute()
    files = expand_inputs(a.paths, out)  # a missing input or an empty folder: before anything is written
    if out.exists() and not out.is_dir():
        raise OutputError(f"-o {a.output_dir} is a file, not a folder; choose a folder for the outputs")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create the output folder {a.output_dir} ({err.strerror or err}); "
                          "choose another -o DIR") from None
    say = None if a.quiet else to_stderr
    queue = JobQueue(queue_path(out))
    if a.resume and not any(j.state in ("queued", "running") for j in queue.jobs()):
        raise ConfigError(f"--resume: nothing to resume, {queue.path} holds no unfinished job; run the "
                          "same command without --resume to start")
    with queue:  # the queue's lock: a second swapstream on it gets one line
        check_model(cfg, say)  # a model or engine problem is no bad input: before any job
        named = queue.add(files, out)
        for job in named:
            if job.state in ("failed", "cancelled"):  # named again: its input may have been fixed
                queue.retry(job.id)
        ids = {j.id for j in named}
        plan = [j for j in queue.jobs() if j.id in ids or j.state in ("queued", "running")]
        place = {j.id: f"[{k}/{len(plan)}]" for k, j in enumerate(plan, 1)}

        def shown(job) -> Path:  # the output as DIR was typed
            return Path(a.output_dir) / Path(job.output).name

        for j in plan:
            if j.state == "done":
                print(f"{place[j.id]} {Path(j.input).name}: done already ({shown(j)})", flush=True)
        summaries: dict[str, object] = {}
        last_runner = [None]

        def convert_one(job, progress_cb):
            from swapstream.pipeline.segments import convert_segmented

            jcfg, choice = _queue_runner(job.input, cfg)
            if say is not None and choice.runner != last_runner[0]:
                say(choice.line)
            last_runner[0] = choice.runner
            summary = convert_segmented(job.input, job.output, jcfg, progress=not a.quiet,
                                        dispatch=choice.runner, on_progress=progress_cb)
            summary.runner, summary.runner_reason = choice.runner, choice.reason
            return summary

        def on_event(kind, job, detail):
            at = place.get(job.id, "[+]")
            if kind == "start":
                print(f"{at} {Path(job.input).name} -> {shown(job)}", flush=True)
            elif kind == "done":
                summaries[job.id] = detail
                lines = detail if isinstance(detail, list) else detail.lines()  # a Ray task's: its lines
                print(f"{at} {lines[0]}", *[ln for ln in lines if ln.startswith("note: ")], sep="\n",
                      flush=True)
            elif kind == "failed":
                print(f"{at} failed: {_reason(job)}", flush=True)
            elif kind == "cancelled":
                print(f"{at} cancelled: {Path(job.input).name}", flush=True)
            elif kind == "interrupted":
                print(f"{at} {Path(job.input).name}: stopped; run the same command again to resume it "
                      "(finished segments and files are kept)", file=sys.stderr, flush=True)

        if a.parallel > 1:  # side by side, each file a Ray task
            from swapstream.pipeline.queue_ray import run_queue_on_ray

            ran = run_queue_on_ray(queue, cfg, a.parallel, a.address, bool(a.verbose), on_event)
        else:
            ran = run_queue(queue, convert_one, on_event)
        ran_ids = {j.id for j in ran}
        final = [j for j in queue.jobs() if j.id in ids or j.id in ran_ids]
    done = [j for j in final if j.state == "done"]
    failed = [j for j in final if j.state == "failed"]
    cancelled = [j for j in final if j.state == "cancelled"]
    print(f"queue {Path(a.output_dir) / QUEUE_FILE}: {len(done)} done, {len(failed)} failed"
          + (f", {len(cancelled)} cancelled" if cancelled else ""))
    for j in failed:
        print(f"  failed: {_reason(j)}")
    if a.stats:
        import dataclasses
        import json

        Path(a.stats).write_text(json.dumps(
            {"queue": str(queue.path),
             "jobs": [{**dataclasses.asdict(j), "summary": _summary_json(summaries.get(j.id))}
                      for j in final]}, indent=2))
    if failed:
        reasons = "; ".join(_reason(j) for j in failed)
        rest = f"; the others are in {a.output_dir}" if len(failed) < len(final) else ""
        raise InputError(f"{len(failed)} of {len(final)} inputs failed: {reasons}{rest}")
    return 0


def _summary_json(summary):
    """A job's summary for --stats: a conversion's own, the lines a Ray task returned, or None."""
    if summary is None or isinstance(summary, list):
        return summary
    return summary.to_json()


def _reason(job) -> str:
    """A failed job's one line, naming its input (decode's messages start with it already)."""
    return job.error if job.input in (job.error or "") else f"{job.input}: {job.error}"


def _queue_runner(input_path: str, cfg):
    """(cfg for one job of a queue, its runner Choice, unsaid): the runner chosen for the input as
    for one conversion (with --segments N given: as for --segments), and the job in segments (N, else
    about one a minute). A bad input fails here with decode's message."""
    import dataclasses

    from swapstream.pipeline.runners.choice import resolve
    from swapstream.stages.sources.file import probe

    info = probe(input_path) if cfg.runner == "auto" else None
    cfg, choice = resolve(cfg, info)
    return dataclasses.replace(cfg, segments=cfg.segments if cfg.segments is not None else 0), choice
