"""Segments of a video: where to cut (keyframes) and what a segment's job and result are.

Edges are keyframes, so each segment decodes from its own keyframe and starts with an IDR frame of
its own. See pipeline/segments.py for the whole segmented conversion.
"""

from __future__ import annotations

import dataclasses
import os
from bisect import bisect_left
from dataclasses import dataclass, field
from fractions import Fraction

import av

from pipeline.config import ConvertConfig
from pipeline.local_runner import RunStats
from stages.errors import ConfigError, InputError

AUTO_SEGMENT_SECONDS = 60.0  # --segments 0: about one segment per this much video


@dataclass
class Segment:
    """Frames start_pts <= pts < end_pts (video stream time base); start_pts None: from the file's
    start, end_pts None: to its end. first_index: global index of the segment's first frame."""

    index: int
    start_pts: int | None
    end_pts: int | None
    first_index: int
    frames: int


PLAN_KEYS = tuple(f.name for f in dataclasses.fields(Segment))


@dataclass
class SegmentJob:
    input: str  # absolute path
    segment: Segment
    file: str  # absolute path of the segment file to write (on a filesystem every node sees)
    cfg: ConvertConfig
    meta: dict  # the model's metadata (read_meta)


@dataclass
class SegmentResult:
    index: int
    file: str
    frames: int
    faces: int
    swapped: int
    no_face: int
    node_id: str  # Ray node id where it ran, or "local"
    seconds: float
    stats: RunStats
    warnings: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------ planning
def _scan(path: str | os.PathLike) -> tuple[list[int], Fraction, list[int], int, float, bool]:
    """Demux (no decoding) the video stream: (keyframe pts, time base, keyframe indices, frame
    count, seconds, every packet had a pts). Indices are positions in presentation order."""
    pts, keys, complete = [], [], True
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        tb = v.time_base
        try:
            for pkt in c.demux(v):
                if not pkt.size or pkt.is_discard:  # flush packets; edit-list discards decode to nothing
                    continue
                if pkt.pts is None:
                    complete = False
                    continue
                pts.append(pkt.pts)
                if pkt.is_keyframe:
                    keys.append(pkt.pts)
        except av.FFmpegError as err:
            raise InputError(f"{path}: reading failed after {len(pts)} video packets ({err}); the file is "
                             "truncated or corrupt, re-export it or repair it "
                             "(e.g. ffmpeg -i in.mp4 -c copy fixed.mkv)") from None
    pts.sort()
    keys = sorted(set(keys))
    step = (pts[-1] - pts[0]) / (len(pts) - 1) if len(pts) > 1 else 0
    seconds = float((pts[-1] - pts[0] + step) * tb) if pts else 0.0
    return keys, tb, [bisect_left(pts, k) for k in keys], len(pts), seconds, complete


def keyframes(path: str | os.PathLike) -> tuple[list[int], Fraction, list[int]]:
    """(pts of each keyframe, the video stream's time base, each keyframe's frame index), from a
    demux-only scan; indices count frames (packets) in presentation order."""
    keys, tb, idx, *_ = _scan(path)
    return keys, tb, idx


def plan_segments(path: str | os.PathLike, n: int) -> list[Segment]:
    """Split the video at keyframes into `n` segments of about equal frame count (fewer when it has
    fewer keyframes); n = 0: about one segment per AUTO_SEGMENT_SECONDS of video."""
    if n < 0:
        raise ConfigError(f"segments must be 0 (automatic) or more, got {n}")
    keys, _, idx, total, seconds, complete = _scan(path)
    if n == 0:
        n = max(1, round(seconds / AUTO_SEGMENT_SECONDS))
    cuts: list[tuple[int, int]] = []  # (first index, start pts) of segments after the first
    cands = [(i, p) for i, p in zip(idx, keys) if i > 0] if complete else []
    for k in range(1, n):
        if not cands:
            break
        target = k * total / n
        best = min(cands, key=lambda c: abs(c[0] - target))
        if not cuts or best[0] > cuts[-1][0]:
            cuts.append(best)
    starts = [(0, None), *cuts]
    ends = [*(c[1] for c in cuts), None]
    firsts = [s[0] for s in starts] + [total]
    return [Segment(i, s[1], e, s[0], firsts[i + 1] - s[0]) for i, (s, e) in enumerate(zip(starts, ends))]


# ------------------------------------------------------------------------------ one segment
