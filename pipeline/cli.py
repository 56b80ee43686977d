"""The `swapstream` command: extract, sort, train, convert, live, compile, engines, demo.

User-fixable problems (SwapstreamError) print one line and exit 2; Ctrl-C exits 130; either way
no half-written output is left under the final name.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

EPILOG = "Swapping someone's face needs their consent. Output video is tagged as synthetic media."


def _quiet_native_logs() -> None:
    # MediaPipe / TFLite / absl log to stderr from C++; keep the terminal for our own lines.
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore", message=".*SymbolDatabase.GetPrototype.*")


def _add_convert(sub) -> None:
    p = sub.add_parser("convert", help="swap the faces of a video",
                       description="Swap every face in INPUT (or, with --only, one person's) with "
                                   "the other identity of MODEL and write OUTPUT with the same frames, "
                                   "timestamps and audio.")
    p.add_argument("input", help="video file to convert (any format FFmpeg reads)")
    p.add_argument("output", help="video file to write (.mp4, .mkv, .mov)")
    p.add_argument("--model", required=True, help="checkpoint directory from `swapstream train`")
    p.add_argument("--swap", dest="direction", default=None, choices=["a2b", "b2a"],
                   help="a2b: faces of A get B's face (default); b2a: the reverse")
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
    _engine_flags(p)
    p.add_argument("--config", help="YAML file with detect/align/blend/encode sections")
    p.add_argument("--color", choices=["none", "reinhard", "hist"], help="colour matching (reinhard)")
    p.add_argument("--sharpen", choices=["none", "unsharp", "gaussian", "box"], help="sharpening (none)")
    p.add_argument("--sharpen-amount", type=float, help="sharpening strength (0.5)")
    p.add_argument("--composite", choices=["alpha", "seamless"], help="compositing (alpha)")
    p.add_argument("--min-face", type=int, help="smallest face height to find, px (64)")
    p.add_argument("--no-smoothing", action="store_true", help="turn off landmark smoothing")
    p.add_argument("--codec", help="video encoder: libx264 (default), libx265, h264_nvenc, hevc_nvenc")
    p.add_argument("--hwaccel", help="decode on a device: cuda, vaapi, qsv, videotoolbox (default none)")
    p.add_argument("--crf", type=int, help="H.264 quality, lower is better (18)")
    p.add_argument("--preset", help="x264 preset (fast)")
    _only_flag(p)
    p.set_defaults(func=_run_convert)


def _settings_file(path: str | None) -> dict:
    """A YAML settings file's values; its identity.only references are relative to the file."""
    from swapstream.pipeline.config import load_yaml

    values = load_yaml(path) if path else {}
    only = values.get("identity", {}).get("only") if isinstance(values.get("identity"), dict) else None
    if only:
        refs = [only] if isinstance(only, str) else list(only)
        values["identity"]["only"] = [str(Path(path).parent / r) if not Path(r).is_absolute() else r
                                      for r in map(str, refs)]
    return values


def _only_flag(p) -> None:
    p.add_argument("--only", nargs="+", metavar="REF",
                   help="swap only this person: photos, a faceset folder or a video of them; other people "
                        "are left as they are (decided per face track by a vote over its frames)")


def _run_convert(a) -> int:
    from swapstream.pipeline.config import ConvertConfig, fill, merge
    from swapstream.pipeline.convert import convert

    values = _settings_file(a.config)
    flags = {"model": a.model, "direction": a.direction, "runner": a.runner, "engine": a.engine,
             "precision": a.precision, "providers": a.providers,
             "device": a.device, "address": a.address, "detect_actors": a.detect_actors,
             "blend_actors": a.blend_actors, "fuse": a.fuse, "verbose": a.verbose or None,
             "blend": {"color": a.color, "sharpen": a.sharpen, "sharpen_amount": a.sharpen_amount,
                       "composite": a.composite},
             "detect": {"min_face": a.min_face},
             "align": {"smoothing": False if a.no_smoothing else None},
             "encode": {"crf": a.crf, "preset": a.preset, "codec": a.codec},
             "decode": {"hwaccel": a.hwaccel}, "identity": {"only": a.only}}
    flags["segments"] = a.segments
    cfg = fill(ConvertConfig, merge(values, _drop_none(flags)))
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
    from swapstream.pipeline.chain import to_stderr
    from swapstream.pipeline.runners.choice import resolve
    from swapstream.stages.sources.file import probe

    info = probe(a.input) if cfg.runner == "auto" else None  # "ray" / "local" need no look
    return resolve(cfg, info, say=None if a.quiet else to_stderr)


def _add_extract(sub) -> None:
    p = sub.add_parser("extract", help="extract aligned faces from videos or image folders",
                       description="Find, align and save every face of SRC (videos and/or folders "
                                   "of images) as a faceset for training; with --like, only the faces "
                                   "of that person. Says when the faces are of several people.")
    p.add_argument("sources", nargs="+", metavar="SRC", help="video files and/or image folders")
    p.add_argument("-o", "--output", required=True, help="faceset directory to write (or extend)")
    p.add_argument("--every", type=int, default=1, help="keep every Nth video frame (1)")
    p.add_argument("--min-size", type=int, default=64, help="smallest face height kept, px (64)")
    p.add_argument("--blur", type=float, default=0.0,
                   help="drop faces less sharp than this (variance of Laplacian; 0 keeps all)")
    p.add_argument("--like", nargs="+", metavar="REF", default=[],
                   help="keep only this person's faces: photos, a faceset folder or a video of them "
                        "(checked before any work; give it after SRC); other faces are counted and dropped")
    p.add_argument("--threshold", type=float, default=None,
                   help="with --like: largest embedding distance that is still the person (0.41, "
                        "dlib's same-person distance; lower is stricter)")
    p.set_defaults(func=_run_extract)


def _run_extract(a) -> int:
    from swapstream.training.extract import ExtractSettings, extract

    threshold = {} if a.threshold is None else {"threshold": a.threshold}
    settings = ExtractSettings(a.every, a.min_size, a.blur, like=a.like, **threshold)
    r = extract(a.sources, a.output, settings, progress=not a.quiet)
    for note in r.notes:
        print(f"note: {note}")
    dropped = f", {r.not_like} not the --like person" if a.like else ""
    print(f"wrote {r.faces} faces from {r.frames} frames to {a.output} "
          f"({r.too_small} too small, {r.too_blurry} too blurry{dropped}); contact sheet: {r.contact_sheet}")
    for s in r.sources_without_faces:
        print(f"note: no faces {'of the --like person ' if a.like else ''}found in {s}")
    if not a.like and r.identities > 1:
        sizes = [str(n) for n in r.identity_sizes]
        print(f"note: {r.identities} different people in this faceset ({', '.join(sizes[:-1])} and "
              f"{sizes[-1]} faces); keep one with --like REF or split it with swapstream sort {a.output}")
    return 0


def _add_sort(sub) -> None:
    p = sub.add_parser("sort", help="split a faceset by person into subfolders, outliers apart",
                       description="Group the faces of FACESET by person and move them into "
                                   "FACESET/person_1 (the largest group), person_2, ... and "
                                   "FACESET/outliers (faces far from their group, groups too small "
                                   "to be a person). Each folder is a faceset with a contact sheet; "
                                   "FACESET stays a valid faceset. A summary table is printed last.")
    p.add_argument("faceset", metavar="FACESET", help="faceset directory from swapstream extract")
    p.add_argument("--dry-run", action="store_true", help="print the groups; move and write nothing")
    p.add_argument("--threshold", type=float, default=None,
                   help="largest embedding distance within one person (0.41, dlib's same-person "
                        "distance; lower splits more)")
    p.add_argument("--outlier", type=float, default=None,
                   help="a face farther than this share of --threshold from its group's centre is "
                        "an outlier (0.75)")
    p.set_defaults(func=_run_sort)


def _run_sort(a) -> int:
    from swapstream.training.sort import SortSettings, sort_faceset

    given = {k: v for k, v in (("threshold", a.threshold), ("outlier", a.outlier)) if v is not None}
    report = sort_faceset(a.faceset, SortSettings(dry_run=a.dry_run, **given), progress=not a.quiet)
    for line in report.lines():
        print(line)
    return 0


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a swap model on two facesets (a Ray Train job)",
                       description="Train the shared-encoder / two-decoder model on facesets A "
                                   "and B, as a Ray Train job: one worker on this machine by "
                                   "default, --workers N for data-parallel training, --address to "
                                   "run on a cluster. The model, preview.png, loss_curve.png and "
                                   "history.jsonl go to the output directory; Ray keeps the last "
                                   "checkpoints in <output>.train (or --storage). Running the same "
                                   "command again resumes.")
    p.add_argument("--a", required=True, help="faceset of identity A")
    p.add_argument("--b", required=True, help="faceset of identity B")
    p.add_argument("-o", "--output", required=True, help="checkpoint directory")
    p.add_argument("--preset", default="lite64", help="lite64 (CPU) | original64 | hd128 (GPU)")
    p.add_argument("--steps", type=int, default=1000, help="total training steps (1000)")
    p.add_argument("--batch-size", type=int, default=16, help="faces per identity per step, per worker (16)")
    p.add_argument("--lr", type=float, default=5e-5, help="Adam learning rate (5e-5)")
    p.add_argument("--coverage", type=float, default=0.7, help="crop coverage of the face (0.7)")
    p.add_argument("--save-every", type=int, default=250, help="checkpoint every N steps (250)")
    p.add_argument("--preview-every", type=int, default=250, help="preview.png every N steps (250)")
    p.add_argument("--log-every", type=int, default=10,
                   help="history.jsonl / TensorBoard / progress row every N steps (10)")
    p.add_argument("--device", default="auto", help="--runner local: auto | cpu | cuda[:N]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop (and save) after this many minutes of training, even before --steps")
    p.add_argument("--resume", action="store_true",
                   help="fail unless there is a checkpoint to continue (one is continued anyway)")
    g = p.add_argument_group("losses")
    g.add_argument("--ssim-weight", type=float, help="weight of the DSSIM term next to MAE (2.0)")
    g.add_argument("--mask-weight", type=float, help="weight of the mask loss (0.5)")
    g.add_argument("--face-boost", type=float, help="extra weight of pixels inside the face")
    g.add_argument("--feature-boost", type=float, help="extra weight of eyes and mouth")
    g.add_argument("--gan-weight", type=float, help="> 0 adds a patch-discriminator GAN term (off)")
    g = p.add_argument_group("speed (GPU)")
    g.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"],
                   help="mixed precision on CUDA (auto: bf16 where supported, else fp16)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g = p.add_argument_group("Ray Train")
    g.add_argument("--runner", choices=["ray", "local"], default="ray",
                   help="ray: a Ray Train job (default); local: this process only")
    g.add_argument("--workers", type=int, default=1, help="data-parallel workers (1)")
    g.add_argument("--gpu", action="store_true", help="one GPU per worker")
    g.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else a local Ray)")
    g.add_argument("--storage", help="where Ray keeps checkpoints (default <output>.train; on a "
                                     "cluster a shared folder or s3://bucket/path)")
    g.add_argument("--keep", type=int, default=3, help="checkpoints kept in storage (3)")
    g.add_argument("--max-failures", type=int, default=3,
                   help="worker failures to survive by restarting from the last checkpoint (3)")
    g.add_argument("--tensorboard", metavar="DIR", help="write TensorBoard event files here")
    p.set_defaults(func=_run_train)


def _run_train(a) -> int:
    from swapstream.training.loop import TrainConfig, train

    opt = _drop_none({"ssim_weight": a.ssim_weight, "mask_weight": a.mask_weight,
                      "face_boost": a.face_boost, "feature_boost": a.feature_boost,
                      "gan_weight": a.gan_weight, "amp": a.amp})
    cfg = TrainConfig(a=a.a, b=a.b, out=a.output, preset=a.preset, steps=a.steps,
                      batch_size=a.batch_size, lr=a.lr, coverage=a.coverage, save_every=a.save_every,
                      preview_every=a.preview_every, log_every=a.log_every, device=a.device, seed=a.seed,
                      resume=a.resume, max_seconds=a.max_minutes * 60 if a.max_minutes is not None else None,
                      compile=a.compile,
                      workers=a.workers, gpu=a.gpu, address=a.address, storage=a.storage, keep=a.keep,
                      max_failures=a.max_failures, tensorboard=a.tensorboard, **opt)
    from swapstream.core.errors import ConfigError

    if a.runner == "ray" and a.device not in ("auto", "cpu"):
        raise ConfigError(f"--device {a.device} is for --runner local; a Ray Train job uses "
                          f"--gpu (one GPU per worker)")
    if a.runner == "local":
        if a.workers != 1 or a.gpu or a.address:
            raise ConfigError("--workers, --gpu and --address need --runner ray (the default)")
        r = train(cfg, progress=not a.quiet)
    else:
        from swapstream.training.job import train_job

        r = train_job(cfg, progress=not a.quiet, verbose=a.verbose)
    last = r.history[-1] if r.history else {}
    print(f"trained to step {r.step} ({r.samples_per_s:.0f} samples/s); "
          f"loss A {last.get('loss_a', float('nan')):.4f}, loss B {last.get('loss_b', float('nan')):.4f}"
          f"{f'; {r.skipped} steps skipped (NaN)' if r.skipped else ''}; checkpoint {r.checkpoint}; "
          f"preview {r.preview}; loss curve {r.checkpoint / 'loss_curve.png'}")
    return 0


def _add_live(sub) -> None:
    p = sub.add_parser(
        "live", help="swap faces live: camera in; window, virtual camera, stream, web page, recording out",
        description="Swap faces in a live source with a model you trained, into any number of outputs at "
                    "once. With no output given: a window where there is a display, else a web page at "
                    "http://127.0.0.1:8080. Keys in the window: s swap on/off, d direction, b face boxes, "
                    "o overlay, q quit; the web page has the same controls.")
    p.add_argument("--model", help="checkpoint directory from `swapstream train`")
    p.add_argument("--swap", dest="direction", choices=["a2b", "b2a"], help="a2b (default) or b2a")
    p.add_argument("--camera", default=None,
                   help="0 | /dev/video2 | camera name | rtsp:// udp:// http:// URL | video file "
                        "(plays in real time) | FORMAT:ARGS (e.g. lavfi:testsrc); default 0")
    p.add_argument("--size", help="WIDTHxHEIGHT to ask the camera for (e.g. 1280x720); frames are scaled "
                                  "to it")
    p.add_argument("--fps", type=float, help="frame rate to ask the camera for")
    p.add_argument("--loop", action="store_true", help="a file source starts over at its end")
    p.add_argument("--list-cameras", action="store_true", help="list cameras and the sizes/rates they offer")
    o = p.add_argument_group("outputs (any number)")
    o.add_argument("--window", action="store_true", help="an OpenCV window with a statistics overlay")
    o.add_argument("--virtual-camera", nargs="?", const="", metavar="DEVICE",
                   help="a virtual camera meeting apps can pick (v4l2loopback on Linux, OBS Virtual Camera "
                        "on Windows/macOS); optional device, e.g. /dev/video10")
    o.add_argument("--stream", metavar="URL", help="udp://127.0.0.1:1234 (MPEG-TS), tcp://, srt://, rtmp://")
    o.add_argument("--serve", nargs="?", const="127.0.0.1:8080", metavar="[HOST:]PORT",
                   help="a web page with the video, statistics and controls (default 127.0.0.1:8080; any "
                        "other address requires the token the printed URL carries)")
    o.add_argument("--record", metavar="FILE", help="write the output to FILE (.mp4, .mkv, .mov)")
    p.add_argument("--codec", help="video encoder of --stream and --record: libx264 (default), h264_nvenc")
    p.add_argument("--audio", metavar="DEVICE",
                   help="audio device for stream/serve/record (default: the source's own audio); "
                        "e.g. default (PulseAudio/ALSA), :0 (macOS), 'Microphone (Realtek)' (Windows), "
                        "or FORMAT:ARGS")
    p.add_argument("--delay", type=float, metavar="MS", help="fixed output delay: frames released evenly at "
                                                             "capture time + MS")
    _engine_flags(p)
    p.add_argument("--config", help="YAML file; its detect/align/blend sections apply")
    p.add_argument("--stats", metavar="FILE.json", help="write the statistics table as JSON at the end")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--policy", choices=["newest", "block"],
                   help="newest (default): drop frames the swap cannot keep up with, so latency never "
                        "grows; block: process every frame")
    _only_flag(p)
    p.set_defaults(func=_run_live)


def _run_live(a) -> int:
    from swapstream.core.errors import ConfigError
    from swapstream.pipeline.config import LiveConfig, fill, live_values, merge

    if a.list_cameras:
        from swapstream.stages.devices import describe, list_cameras

        for line in describe(list_cameras()):
            print(line)
        return 0
    if not a.model:
        raise ConfigError("--model DIR is required (a checkpoint from `swapstream train`; `make demo` "
                          "trains one into demo_output/model)")
    values = live_values(_settings_file(a.config))
    flags = {"model": a.model, "direction": a.direction, "engine": a.engine, "device": a.device,
             "precision": a.precision, "providers": a.providers, "camera": a.camera, "size": a.size,
             "fps": a.fps, "loop": a.loop or None,
             "window": a.window or None, "virtual_camera": a.virtual_camera, "stream": a.stream,
             "serve": a.serve, "record": a.record, "codec": a.codec, "audio": a.audio, "delay_ms": a.delay,
             "duration": a.duration, "policy": a.policy, "stats": a.stats, "identity": {"only": a.only}}
    cfg = fill(LiveConfig, merge(values, _drop_none(flags)))
    from swapstream.pipeline.live import live

    live(cfg)
    return 0


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the whole job on built-in sample faces",
                       description="Build two sample clips, extract, train lite64 for a few "
                                   "minutes, convert, and write a comparison image.")
    p.add_argument("-o", "--output", default="demo_output", help="directory for everything (demo_output)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: a ~4 minute budget)")
    p.set_defaults(func=_run_demo)


def _run_demo(a) -> int:
    from swapstream.pipeline.demo import run_demo

    run_demo(Path(a.output), steps=a.steps, progress=not a.quiet)
    return 0


def _engine_flags(p) -> None:
    """--engine / --precision / --providers / --device, shared by convert, live and compile."""
    p.add_argument("--engine", help="swap engine: auto (default: the fastest that runs here), eager, "
                                    "compile, onnx, tensorrt; `swapstream engines` lists them")
    p.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"],
                   help="auto (default): fp16 on CUDA, fp32 on CPU; bf16 is about 2x fp32 on CPUs with "
                        "AVX-512 BF16 or AMX")
    p.add_argument("--providers", metavar="LIST",
                   help="onnx engine: ONNX Runtime providers in order, e.g. CUDAExecutionProvider,"
                        "CPUExecutionProvider (default: the best installed)")
    p.add_argument("--device", help="auto | cpu | cuda[:N] (default auto)")


def _add_engines(sub) -> None:
    p = sub.add_parser("engines", help="list the swap engines and whether each runs here",
                       description="List every swap engine, whether it can run on this machine (and "
                                   "why not), and which one --engine auto picks.")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    p.set_defaults(func=_run_engines)


def _run_engines(a) -> int:
    from swapstream.engines.registry import engine_status, pick_engine

    rows = engine_status(a.device)
    width = max(len(n) for n, _, _ in rows)
    for name, ok, note in rows:
        print(f"{name:<{width}}  {'yes' if ok else 'no ':<3}  {note}")
    print(f"--engine auto picks: {pick_engine(a.device)}")
    return 0


def _add_compile(sub) -> None:
    p = sub.add_parser("compile", help="build a model's swap engine ahead of time",
                       description="Build the engine for every direction of MODEL into the engine cache "
                                   "(shared by convert, live and every worker on this machine), so the "
                                   "first run does not wait for it. A valid cached engine is not rebuilt.")
    p.add_argument("model", help="checkpoint directory from `swapstream train`")
    p.add_argument("--engine", required=True, choices=["onnx", "compile", "tensorrt"], help="engine to build")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                   help="auto (default): fp16 on CUDA, fp32 on CPU")
    p.add_argument("--batch", default="32", metavar="[1-]N", help="largest batch the engine takes (32)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    p.set_defaults(func=_run_compile)


def _run_compile(a) -> int:
    from swapstream.engines.ahead import compile_ahead, parse_batch
    from swapstream.engines.checkpoint import verify_checkpoint

    verify_checkpoint(a.model)
    compile_ahead(a.model, a.engine, a.precision, parse_batch(a.batch), a.device)
    return 0


def _drop_none(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            v = _drop_none(v)
            if v:
                out[k] = v
        elif v is not None:
            out[k] = v
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="swapstream", epilog=EPILOG,
                                description="Face swapping for whole videos and live cameras: extract "
                                            "(and sort) faces, train, convert, live.")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("--verbose", action="store_true", help="show tracebacks and library logs")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_extract, _add_sort, _add_train, _add_convert, _add_live, _add_compile, _add_engines,
                _add_demo):
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.verbose:
        os.environ["SWAPSTREAM_VERBOSE"] = "1"
    else:
        _quiet_native_logs()
    from swapstream.core.errors import SwapstreamError

    try:
        return args.func(args)
    except SwapstreamError as e:
        if args.verbose:
            raise
        print(f"swapstream: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("swapstream: interrupted (a video output is not left half-written; training keeps "
              "its last checkpoint)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
