"""Segment files: convert one segment into a video-only file, and join segment files (remux, no
re-encoding) with the source's audio into the output. See pipeline/segments.py.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import av

from swapstream.core.errors import InputError, OutputError
from swapstream.pipeline.chain import after_temporal, link
from swapstream.pipeline.counting import CountingSink
from swapstream.pipeline.request import make_chain
from swapstream.pipeline.runners.base import built
from swapstream.pipeline.runners.local import LocalRunner
from swapstream.pipeline.segment_plan import SegmentJob, SegmentResult
from swapstream.stages.base import Stage
from swapstream.stages.sinks.file import EncodeSettings, EncodeStage
from swapstream.stages.sources.file import DecodeSettings, DecodeStage, short_beyond_tolerance


class _SegmentEncoder(EncodeStage):
    """EncodeStage for a segment file (.mp4, video only) whose first pts is far from zero."""

    def _add_video(self) -> None:
        super()._add_video()
        tb = self.info.time_base
        scale = tb.denominator
        while scale < 10000:  # the mp4 muxer's own choice of track timescale
            scale *= 2
        # The muxer writes the segment's start as an edit list in the movie timescale (1/1000 s by
        # default: pts would come back off by a few ticks); the track's timescale keeps it exact.
        # No faststart: join reads the file once, the second pass over it would be wasted.
        self._out.options.update({"movie_timescale": str(scale), "movflags": "use_metadata_tags"})


def _node_id() -> str:
    ray = sys.modules.get("ray")  # not imported: not running under Ray
    if ray is not None and ray.is_initialized():
        return ray.get_runtime_context().get_node_id()
    return "local"


class SkipLead(Stage):
    """A stage that drops the packets before pts `start_pts` (the segment's own first frame): a
    segment's lead (context) frames, which go through detect and align only. By pts, not index:
    the frames are the segment's whatever the decoder made of the lead."""

    name = "skip"

    def __init__(self, start_pts: int) -> None:
        self.start_pts = start_pts

    def process(self, batch: list) -> list:
        return [p for p in batch if p.pts >= self.start_pts]


def run_segment(job: SegmentJob) -> SegmentResult:
    """Convert one segment into job.file (video only, the input's pts); runs on any node.

    Its lead (Segment.lead frames of context) is decoded and run through detect and align, then
    dropped.
    """
    t0 = time.perf_counter()
    seg, cfg = job.segment, job.cfg
    decode = DecodeStage(DecodeSettings(job.input, start_pts=seg.lead_pts if seg.lead else seg.start_pts,
                                        end_pts=seg.end_pts, first_index=seg.first_index - seg.lead,
                                        hwaccel=cfg.decode.hwaccel, keep_source=True))  # encoded here
    try:
        info = decode.open()
        settings = EncodeSettings(job.file, cfg.encode.codec, cfg.encode.crf, cfg.encode.preset,
                                  audio_from=None)
        sink = CountingSink(_SegmentEncoder(settings, info))
        chain = make_chain(cfg, job.meta, "convert", job.reference, job.people)
        if seg.lead:  # after the stages that carry state from frame to frame (detect, align)
            chain.insert(after_temporal(chain), link(SkipLead, seg.start_pts))
        run = LocalRunner(cfg.batch_size, False, seg.frames, f"segment {seg.index}")
        report = run.run(chain, decode, [built(sink)], "block")
        stats, counts = report.stats, report.sinks
    finally:
        decode.close()
    stats.stages = [s for s in stats.stages if s.name != "skip"]
    warnings = counts["warnings"]
    short = seg.frames - stats.frames
    if short_beyond_tolerance(seg.frames, stats.frames) or short < 0:
        Path(job.file).unlink(missing_ok=True)
        raise InputError(f"{job.input}: segment {seg.index} decoded {stats.frames} of {seg.frames} frames "
                         f"(from frame {seg.first_index}); the file is truncated or corrupt, re-export it "
                         "or repair it (e.g. ffmpeg -i in.mp4 -c copy fixed.mkv)")
    if short:
        warnings.append(f"segment {seg.index}: {stats.frames} of {seg.frames} frames decoded")
    return SegmentResult(seg.index, job.file, stats.frames, counts["faces"], counts["swapped"],
                         counts["no_face"], _node_id(), time.perf_counter() - t0, stats, warnings,
                         counts.get("others", 0))


# ------------------------------------------------------------------------------------ joining
class _Joiner(EncodeStage):
    """EncodeStage that remuxes encoded video packets instead of encoding frames; keeps its output
    handling (temporary name, synthetic-media tags, container options, audio remux, rename)."""

    def __init__(self, settings: EncodeSettings, info, template) -> None:
        super().__init__(settings, info)
        self.template = template  # the first segment file's video stream

    def _add_video(self) -> None:
        self._video = self._out.add_stream_from_template(self.template)
        self._video.time_base = self.template.time_base

    def write(self, pkt: av.Packet) -> None:
        ts = pkt.dts if pkt.dts is not None else pkt.pts
        pkt.stream = self._video
        self._out.mux(pkt)
        if ts is not None:
            self._mux_audio(until=float(ts * pkt.time_base))

    def _drain_video(self) -> None:
        pass  # packets are copied, not encoded: nothing is held back


def join_segments(files: list[str | os.PathLike], source: str | os.PathLike,
                  output: str | os.PathLike) -> list[str]:
    """Remux the video packets of `files` in order, then every audio stream of `source`, into
    `output` (container by extension); returns warnings (audio re-encoded). The segments must share
    the encoder's extradata (SPS/PPS): one H.264 stream needs one set of parameters."""
    files = [str(f) for f in files]
    with av.open(files[0]) as first:
        template = first.streams.video[0]
        extradata = bytes(template.codec_context.extradata or b"")
        joiner = _Joiner(EncodeSettings(str(output), audio_from=str(source)), None, template)
        joiner.setup()
    try:
        last = None  # dts of the last packet written, seconds (exact)
        for k, path in enumerate(files):
            with av.open(path) as c:
                v = c.streams.video[0]
                if bytes(v.codec_context.extradata or b"") != extradata:
                    raise OutputError(f"segment file {path} was encoded with other codec parameters than "
                                      f"{files[0]} (extradata differs), so they cannot form one stream; "
                                      "delete the work dir and convert again with one encoder build")
                for pkt in c.demux(v):
                    if not pkt.size:
                        continue
                    ts = pkt.dts if pkt.dts is not None else pkt.pts
                    t = ts * pkt.time_base if ts is not None else None
                    if t is not None and last is not None and t <= last:
                        raise RuntimeError(f"segment {k} ({path}): dts {float(t):.6f} s is not after the "
                                           f"previous segment's {float(last):.6f} s")
                    last = t if t is not None else last
                    joiner.write(pkt)
        warnings = list(joiner.warnings)
        joiner.flush()
    except BaseException:
        joiner.abort()
        raise
    return warnings


# ---------------------------------------------------------------------------------- manifest
