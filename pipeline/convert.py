"""`swapstream convert`: decode -> detect -> align -> swap -> blend -> encode, with the source audio.

Checks everything a user can get wrong (input, model, direction, output path) before the long
work starts; writes to a temporary name that becomes the output only when complete; writes the
resolved configuration next to the output.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from engines.checkpoint import verify_checkpoint
from pipeline.config import ConvertConfig, write_resolved
from pipeline.local_runner import LocalRunner, RunStats
from pipeline.ray_runner import should_fuse
from stages.align import AlignSettings, AlignStage
from stages.blend import BlendStage
from stages.decode import DecodeSettings, DecodeStage
from stages.detect import DetectStage
from stages.encode import EncodeSettings, EncodeStage
from stages.errors import ConfigError, ModelError, OutputError
from stages.packet import FramePacket
from stages.swap import SwapSettings, SwapStage

RUNNERS = ("ray", "local")


class CountingSink:
    """The encode stage, counting faces on the way: swapped ones and frames without any."""

    name = "encode"

    def __init__(self, encode: EncodeStage) -> None:
        self.encode = encode
        self.faces = self.swapped = self.no_face = 0

    def setup(self) -> None:
        self.encode.setup()

    def process(self, batch: list[FramePacket]) -> list[FramePacket]:
        for p in batch:
            self.faces += len(p.faces)
            self.swapped += sum(f.swapped is not None for f in p.faces)
            self.no_face += not p.faces
        return self.encode.process(batch)

    def flush(self) -> list[FramePacket]:
        return self.encode.flush()

    def abort(self) -> None:
        self.encode.abort()

    def counts(self) -> dict:
        return {"faces": self.faces, "swapped": self.swapped, "no_face": self.no_face,
                "warnings": list(self.encode.warnings)}


Chain = list[tuple[str, Callable[[], object]]]


def make_chain(cfg: ConvertConfig, meta: dict) -> Chain:
    """The face stages as (name, factory): each runner (or actor) builds its own stage objects."""
    align = AlignSettings(size=int(meta["model"]["size"]),
                          coverage=float(meta.get("training", {}).get("coverage", 0.7)),
                          **dataclasses.asdict(cfg.align))
    swap = SwapSettings(cfg.model, cfg.direction, cfg.engine, cfg.device)
    return [("detect", partial(DetectStage, cfg.detect)), ("align", partial(AlignStage, align)),
            ("swap", partial(SwapStage, swap)), ("blend", partial(BlendStage, cfg.blend))]


def check_request(cfg: ConvertConfig, src: Path, dst: Path) -> dict:
    """Everything a user can get wrong, before any work; returns the model's metadata."""
    if cfg.runner not in RUNNERS:
        raise ConfigError(f"runner {cfg.runner!r} is not available; choose one of {', '.join(RUNNERS)}")
    should_fuse(cfg.fuse, 1, 0)  # a bad --fuse value fails here, before any work
    if not cfg.model:
        raise ModelError("no model given; pass --model DIR (a checkpoint from `swapstream train`)")
    meta = verify_checkpoint(cfg.model)  # corrupt weights fail here, not in a worker
    SwapSettings(cfg.model, cfg.direction, cfg.engine, cfg.device).check_identities(meta["identities"])
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise OutputError(f"output {dst} is the input file; choose another output name")
    return meta


def run_local(chain: Chain, frames, sink: CountingSink, cfg: ConvertConfig, progress: bool,
              total: int | None, desc: str) -> tuple[RunStats, dict]:
    """The reference runner: every stage in this process."""
    stages = [factory() for _, factory in chain]
    try:
        stats = LocalRunner(stages, sink, cfg.batch_size, progress, total, desc=desc).run(frames)
    except BaseException:
        sink.abort()
        raise
    finally:
        for st in stages:
            if hasattr(st, "close"):
                st.close()
    return stats, sink.counts()


@dataclass
class ConvertSummary:
    output: Path
    frames: int
    faces: int
    faces_swapped: int
    frames_without_face: int
    seconds: float
    stats: RunStats
    warnings: list[str]

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        out = [f"wrote {self.output}: {self.frames} frames in {self.seconds:.1f} s ({self.fps:.1f} fps); "
               f"{self.faces_swapped} faces swapped, {self.frames_without_face} frames without a face"]
        out.append(f"{'stage':<8}{'workers':>8}{'frames':>8}{'busy s':>9}{'queue':>7}")
        for s in self.stats.stages:
            out.append(f"{s.name:<8}{s.actors:>8}{s.frames:>8}{s.busy_s:>9.1f}{s.mean_queue:>7.1f}")
        out += [f"note: {w}" for w in self.warnings]
        return out

    def to_json(self) -> dict:
        return {"output": str(self.output), "frames": self.frames, "faces": self.faces,
                "faces_swapped": self.faces_swapped, "frames_without_face": self.frames_without_face,
                "seconds": round(self.seconds, 3), "fps": round(self.fps, 2),
                "stages": [dataclasses.asdict(s) for s in self.stats.stages]}


def convert(input_path: str | Path, output_path: str | Path, cfg: ConvertConfig,
            progress: bool = True) -> ConvertSummary:
    """Swap the faces of input_path into output_path. Raises SwapstreamError on bad input."""
    src, dst = Path(input_path), Path(output_path)
    meta = check_request(cfg, src, dst)
    if cfg.segments is not None:  # crash-safe segments, each run by the local runner
        from pipeline.segments import convert_segmented

        return convert_segmented(src, dst, cfg, cfg.segments, progress=progress,
                                 dispatch="ray" if cfg.runner == "ray" else "local")
    chain = make_chain(cfg, meta)
    decode = DecodeStage(DecodeSettings(str(src)))
    t0 = time.perf_counter()
    try:
        info = decode.setup()
        settings = EncodeSettings(str(dst), cfg.encode.codec, cfg.encode.crf, cfg.encode.preset,
                                  audio_from=str(src))
        EncodeStage(settings, info).validate()  # a bad output path fails before the model loads
        if cfg.runner == "ray":
            from pipeline.ray_runner import run_ray

            stats, counts = run_ray(chain, decode.frames(), settings, info, cfg, progress, src.name)
        else:
            sink = CountingSink(EncodeStage(settings, info))
            stats, counts = run_local(chain, decode.frames(), sink, cfg, progress, info.frames, src.name)
    finally:
        decode.close()
    write_resolved(cfg, dst.with_name(dst.name + ".swapstream.json"),
                   {"input": str(src), "output": str(dst), "model_sha256": meta.get("sha256")})
    return ConvertSummary(dst, stats.frames, counts["faces"], counts["swapped"], counts["no_face"],
                          time.perf_counter() - t0, stats, counts["warnings"])
