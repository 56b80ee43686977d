"""`swapstream convert`: file source -> detect -> align -> swap -> blend -> file sink, with the
source's audio.

An assembly: it checks everything a user can get wrong (input, model, direction, output path)
before the long work starts, builds the chain and the file sink, and hands them to a runner
(local or Ray; `auto` picks one for this input and machine, swapstream.pipeline.runners.choice, and each run
records this machine's rate for it) under the `block` policy (every frame of the input is
written). The sink writes to a temporary name that becomes the output only when complete; if
anything fails, the partial file is removed (here, too, in case the process that wrote it died).
The resolved configuration, with the runner that ran, is written next to the output. Long inputs
in crash-safe segments: swapstream.pipeline.segments.
"""

from __future__ import annotations

import os
import time
from functools import partial
from pathlib import Path

from swapstream.core.video import StreamInfo
from swapstream.pipeline.chain import Link
from swapstream.pipeline.config import RUNNERS, ConvertConfig, write_resolved
from swapstream.pipeline.counting import CountingSink
from swapstream.pipeline.request import check_request, make_chain, to_stderr
from swapstream.pipeline.runners.base import Runner
from swapstream.pipeline.runners.choice import cpu_count, gpu_count, record_rate, resolve
from swapstream.pipeline.runners.local import LocalRunner
from swapstream.pipeline.runners.threads import stage_threads
from swapstream.pipeline.stats import ConvertSummary, RunStats
from swapstream.stages.sinks.file import EncodeSettings, EncodeStage
from swapstream.stages.sources.file import DecodeSettings, DecodeStage

__all__ = ["RUNNERS", "convert", "file_sink"]


def _counting_encoder(settings: EncodeSettings, info: StreamInfo) -> CountingSink:
    return CountingSink(EncodeStage(settings, info))


def file_sink(settings: EncodeSettings, info: StreamInfo) -> Link:
    """The file output as a chain link (built where the runner places it), counting faces."""
    return Link(EncodeStage.name, partial(_counting_encoder, settings, info), EncodeStage.needs)


def ray_options(cfg: ConvertConfig, policy: str = "block"):
    from swapstream.pipeline.runners.ray import RayOptions

    return RayOptions(address=cfg.address, verbose=cfg.verbose, batch_size=cfg.batch_size, fuse=cfg.fuse,
                      pool_sizes={"detect": cfg.detect_actors, "blend": cfg.blend_actors},
                      max_in_flight=cfg.max_in_flight, policy=policy)


def local_runner(cfg: ConvertConfig, info: StreamInfo, progress: bool, desc: str) -> Runner:
    """The local runner of a conversion: its batches, half the CPUs for the stages' libraries."""
    return LocalRunner(cfg.batch_size, progress, info.frames, desc, threads=stage_threads())


def ray_runner(cfg: ConvertConfig, info: StreamInfo, progress: bool, desc: str) -> Runner:
    """The Ray runner of a conversion (Ray is imported when it starts)."""
    from swapstream.pipeline.runners.ray import RayRunner

    return RayRunner(ray_options(cfg), progress, info.frames, desc, frame_bytes=info.width * info.height * 3)


# cfg.runner (after `auto` is resolved) -> the runner that runs the conversion
RUNNER_MAKERS = {"local": local_runner, "ray": ray_runner}


def convert(input_path: str | Path, output_path: str | Path, cfg: ConvertConfig,
            progress: bool = True) -> ConvertSummary:
    """Swap the faces of input_path into output_path. Raises SwapstreamError on bad input."""
    src, dst = Path(input_path), Path(output_path)
    model = check_request(cfg, src, dst, say=to_stderr if progress else None)
    chain = make_chain(cfg, model.meta, "convert", model.reference, model.people)
    # the decoded frames ride along: the encoder writes them as they are, outside the faces
    decode = DecodeStage(DecodeSettings(str(src), hwaccel=cfg.decode.hwaccel, keep_source=True))
    settings: EncodeSettings | None = None
    t0 = time.perf_counter()
    try:
        info = decode.open()
        settings = EncodeSettings(str(dst), cfg.encode.codec, cfg.encode.crf, cfg.encode.preset,
                                  audio_from=str(src))
        EncodeStage(settings, info).validate()  # a bad output path fails before the model loads
        sink = file_sink(settings, info)
        cfg, choice = resolve(cfg, info, say=to_stderr if progress else None)  # auto -> ray | local
        t_run = time.perf_counter()
        run = RUNNER_MAKERS[cfg.runner](cfg, info, progress, src.name).run(chain, decode, [sink], "block")
        stats, report = run.stats, run.sinks
        _record(cfg, info, stats, time.perf_counter() - t_run)
    except BaseException:
        if settings is not None:  # the sink removes it; this covers a sink whose process died
            settings.partial_path.unlink(missing_ok=True)
        raise
    finally:
        decode.close()
    write_resolved(cfg, dst.with_name(dst.name + ".swapstream.json"),
                   {"input": str(src), "output": str(dst), "model_sha256": model.meta.get("sha256")})
    return ConvertSummary(dst, stats.frames, report["faces"], report["swapped"], report["no_face"],
                          time.perf_counter() - t0, stats, report["warnings"], report.get("others", 0),
                          runner=cfg.runner, runner_reason=choice.reason)


def _record(cfg: ConvertConfig, info: StreamInfo, stats: RunStats, wall_s: float) -> None:
    """This machine's rate of the runner that ran, for `--runner auto` (swapstream.pipeline.runners.choice).
    wall_s: seconds the runner call took; all of it but the frames' own time (stats.seconds -
    stats.startup_s) counts as start-up (Ray's included: ray.init, actors, shutdown). Not for a
    cluster's runs, nor on a machine with a GPU: there auto takes Ray without an estimate."""
    if cfg.address or os.environ.get("RAY_ADDRESS") or gpu_count() > 0:
        return
    work_s = stats.seconds - stats.startup_s
    record_rate(cfg.runner, stats.frames, info.width, info.height, wall_s, max(wall_s - work_s, 0.0),
                cpu_count())
