"""`swapstream convert`: decode -> detect -> align -> swap -> blend -> encode, with the source audio.

Checks everything a user can get wrong (input, model, direction, output path) before the long
work starts; writes to a temporary name that becomes the output only when complete; writes the
resolved configuration next to the output.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from engines.checkpoint import read_meta
from pipeline.config import ConvertConfig, write_resolved
from pipeline.local_runner import LocalRunner, RunStats
from stages.align import AlignSettings, AlignStage
from stages.blend import BlendStage
from stages.decode import DecodeSettings, DecodeStage
from stages.detect import DetectStage
from stages.encode import EncodeSettings, EncodeStage
from stages.errors import ConfigError, ModelError, OutputError
from stages.packet import FramePacket
from stages.swap import SwapSettings, SwapStage

RUNNERS = ("local",)


class FaceCounter:
    """Pass-through stage that counts swapped faces and frames without a face."""

    def __init__(self) -> None:
        self.faces = self.swapped = self.no_face = 0

    def setup(self) -> None:
        pass

    def process(self, batch: list[FramePacket]) -> list[FramePacket]:
        for p in batch:
            self.faces += len(p.faces)
            self.swapped += sum(f.swapped is not None for f in p.faces)
            self.no_face += not p.faces
        return batch

    def flush(self) -> list[FramePacket]:
        return []


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
        busy = sorted(self.stats.stages, key=lambda s: -s.busy_s)
        out.append("stage time: " + ", ".join(f"{s.name} {s.busy_s:.1f}s" for s in busy))
        out += [f"note: {w}" for w in self.warnings]
        return out


def convert(input_path: str | Path, output_path: str | Path, cfg: ConvertConfig,
            progress: bool = True) -> ConvertSummary:
    """Swap the faces of input_path into output_path. Raises SwapstreamError on bad input."""
    if cfg.runner not in RUNNERS:
        raise ConfigError(f"runner {cfg.runner!r} is not available; choose one of {', '.join(RUNNERS)}")
    if not cfg.model:
        raise ModelError("no model given; pass --model DIR (a checkpoint from `swapstream train`)")
    meta = read_meta(cfg.model)
    swap = SwapSettings(cfg.model, cfg.direction, cfg.engine, cfg.device)
    swap.check_identities(meta["identities"])  # before any decoding
    src, dst = Path(input_path), Path(output_path)
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise OutputError(f"output {dst} is the input file; choose another output name")

    align = AlignSettings(size=int(meta["model"]["size"]),
                          coverage=float(meta.get("training", {}).get("coverage", 0.7)),
                          **dataclasses.asdict(cfg.align))
    decode = DecodeStage(DecodeSettings(str(src)))
    detect = DetectStage(cfg.detect)
    encode = None
    t0 = time.perf_counter()
    try:
        info = decode.setup()
        encode = EncodeStage(EncodeSettings(str(dst), cfg.encode.codec, cfg.encode.crf,
                                            cfg.encode.preset, audio_from=str(src)), info)
        encode.validate()  # fail on a bad output path before the model loads
        counter = FaceCounter()
        stages = [detect, AlignStage(align), SwapStage(swap), BlendStage(cfg.blend), counter]
        runner = LocalRunner(stages, encode, cfg.batch_size, progress, info.frames, desc=src.name)
        stats = runner.run(decode.frames())
    except BaseException:
        if encode is not None:
            encode.abort()
        raise
    finally:
        decode.close()
        detect.close()
    write_resolved(cfg, dst.with_name(dst.name + ".swapstream.json"),
                   {"input": str(src), "output": str(dst), "model_sha256": meta.get("sha256")})
    return ConvertSummary(dst, stats.frames, counter.faces, counter.swapped, counter.no_face,
                          time.perf_counter() - t0, stats, list(encode.warnings))
