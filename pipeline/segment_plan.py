"""Segments of a video: where to cut (keyframes) and what a segment's job and result are.

Edges are keyframes; each segment is encoded on its own, so it starts with an IDR frame of its own.

Context: a segment also runs the CONTEXT frames before it through detect and align without
writing them, so face tracks and landmark smoothing (both causal: they look only backwards) reach
its first frame warmed up, close to their state in one whole run, and the cut does not show.
See pipeline/segments.py for the whole segmented conversion.
"""

from __future__ import annotations

import dataclasses
import os
from bisect import bisect_left
from dataclasses import dataclass, field
from fractions import Fraction

import av

from swapstream.core.errors import ConfigError, InputError
from swapstream.pipeline.config import ConvertConfig
from swapstream.pipeline.stats import RunStats

AUTO_SEGMENT_SECONDS = 60.0  # --segments 0: about one segment per this much video
CONTEXT = 8  # frames before a segment run through detect and align but not written


@dataclass
class Segment:
    """Frames start_pts <= pts < end_pts (video stream time base); start_pts None: from the file's
    start, end_pts None: to its end. first_index: global index of the segment's first frame."""

    index: int
    start_pts: int | None
    end_pts: int | None
    first_index: int
    frames: int
    # Context: the `lead` frames before the segment, from pts `lead_pts`, go through detect and
    # align unwritten.
    lead: int = 0
    lead_pts: int | None = None


PLAN_KEYS = tuple(f.name for f in dataclasses.fields(Segment))


@dataclass
class SegmentJob:
    input: str  # absolute path
    segment: Segment
    file: str  # absolute path of the segment file to write (on a filesystem every node sees)
    cfg: ConvertConfig
    meta: dict  # the model's metadata (read_meta)
    reference: object = None  # --only: the person's (M, 128) float32 embeddings (pipeline.request)
    people: tuple = ()  # --map (and --only): pipeline.people.Person per person, with their models


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
    others: int = 0  # faces left alone: not the --only person


# ------------------------------------------------------------------------------------ planning
@dataclass
class _Scan:
    keys: list[int]  # keyframe pts
    time_base: Fraction
    key_index: list[int]  # each keyframe's frame index
    pts: list[int]  # every frame's pts, presentation order
    seconds: float
    complete: bool  # every packet had a pts: cuts are possible


def _scan(path: str | os.PathLike) -> _Scan:
    """Demux (no decoding) the video stream. Indices are positions in presentation order."""
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
    return _Scan(keys, tb, [bisect_left(pts, k) for k in keys], pts, seconds, complete)


def keyframes(path: str | os.PathLike) -> tuple[list[int], Fraction, list[int]]:
    """(pts of each keyframe, the video stream's time base, each keyframe's frame index), from a
    demux-only scan; indices count frames (packets) in presentation order."""
    sc = _scan(path)
    return sc.keys, sc.time_base, sc.key_index


def segments_at(pts: list[int], firsts: list[int], context: int) -> list[Segment]:
    """Segments starting at frame indices `firsts` (ascending, firsts[0] == 0) of a video whose
    frames have `pts` (presentation order), each with up to `context` frames of lead."""
    total = len(pts)
    ends = [*firsts[1:], total]
    out = []
    for i, (a, b) in enumerate(zip(firsts, ends)):
        lead = min(context, a)
        out.append(Segment(i, pts[a] if a else None, pts[b] if b < total else None, a, b - a,
                           lead, pts[a - lead] if lead else None))
    return out


def plan_segments(path: str | os.PathLike, n: int) -> list[Segment]:
    """Split the video at keyframes into `n` segments of about equal frame count (fewer when it has
    fewer keyframes); n = 0: about one segment per AUTO_SEGMENT_SECONDS of video."""
    if n < 0:
        raise ConfigError(f"segments must be 0 (automatic) or more, got {n}")
    sc = _scan(path)
    total = len(sc.pts)
    if n == 0:
        n = max(1, round(sc.seconds / AUTO_SEGMENT_SECONDS))
    firsts = [0]
    cands = [i for i in sc.key_index if i > 0] if sc.complete else []
    for k in range(1, n):
        if not cands:
            break
        best = min(cands, key=lambda i: abs(i - k * total / n))
        if best > firsts[-1]:
            firsts.append(best)
    return segments_at(sc.pts, firsts, CONTEXT)


# ------------------------------------------------------------------------------ one segment
