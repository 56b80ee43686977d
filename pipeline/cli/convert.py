"""`swapstream convert`: swap the faces of a video (optionally in crash-safe segments)."""

from __future__ import annotations

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
    p = sub.add_parser("convert", help="swap the faces of a video",
                       description="Swap every face in INPUT (or, with --only, one person's) with "
                                   "the other identity of MODEL, or each person of a --map with their "
                                   "own model, and write OUTPUT with the same frames, timestamps and "
                                   "audio.")
    p.add_argument("input", help="video file to convert (any format FFmpeg reads)")
    p.add_argument("output", help="video file to write (.mp4, .mkv, .mov)")
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
    from swapstream.pipeline.config import ConvertConfig, convert_values, fill, merge
    from swapstream.pipeline.convert import convert

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
