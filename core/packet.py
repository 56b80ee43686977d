"""What flows between stages: FramePacket with its Face records.

Typed dataclasses that check their shapes on construction; repr prints shapes, never pixels.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np


def _shape(a: np.ndarray | None) -> str:
    return "None" if a is None else f"{a.dtype}{list(a.shape)}"


class Why(enum.Enum):
    """Why a face was not swapped (Skip.why): a typed fact stages set and counters read."""

    ALIGNMENT = "alignment"  # align: the landmarks do not fit the template (profile, distortion)
    UNDECIDED = "undecided"  # identify (live): the track's identity vote is not in yet
    OTHER_PERSON = "other person"  # identify: nobody in the --map (or not the --only person)
    DEGENERATE = "degenerate"  # blend: the alignment matrix cannot be inverted


@dataclass(frozen=True)
class Skip:
    """One reason a face was not swapped: `why`, and `detail` for people (figures, thresholds)."""

    why: Why
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.why.value}: {self.detail}" if self.detail else self.why.value


@dataclass(repr=False)
class Face:
    """One face in one frame.

    landmarks: (478, 2) float32, x/y pixels in the frame.
    score: detector/landmark confidence in [0, 1].
    matrix: (2, 3) float64 frame -> crop affine (set by align).
    crop: (S, S, 3) uint8 RGB aligned face (set by align), S = model input size.
    swapped: (S, S, 3) uint8 RGB face from the engine (set by swap).
    mask: (S, S) float32 in [0, 1], the decoder's learned mask (set by swap).
    occlusion: (S, S) float32 in [0, 1], in the crop: 1 where something found in front of the
        face covers it (a hand; set by the hands stage), None when nothing was looked for.
    track: id linking a face to the same person in neighbouring frames (set by align).
    person: which person of the swap's map the face is (set by identify): the index of the map
        entry (--map REF=MODEL in order; --only REF is a map of one) whose model swaps it.
        -1 where no identify stage runs (the one model swaps every face) or where the face
        is nobody in the map (it then also has a Why.OTHER_PERSON skip).
    skips: why this face was not swapped (Skip records), if it was not; the frame still flows.
    """

    landmarks: np.ndarray
    score: float = 1.0
    matrix: np.ndarray | None = None
    crop: np.ndarray | None = None
    swapped: np.ndarray | None = None
    mask: np.ndarray | None = None
    occlusion: np.ndarray | None = None
    track: int = -1
    person: int = -1
    skips: list[Skip] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.landmarks = np.asarray(self.landmarks, np.float32)
        if self.landmarks.shape != (478, 2):
            raise ValueError(f"Face.landmarks must be (478, 2), got {self.landmarks.shape}")

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of the landmarks in frame pixels."""
        lo, hi = self.landmarks.min(0), self.landmarks.max(0)
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])

    @property
    def ok(self) -> bool:
        return not self.skips

    def skip(self, why: Why, detail: str = "") -> None:
        """Mark the face as not to be swapped, and why."""
        self.skips.append(Skip(why, detail))

    def skipped_for(self, why: Why) -> bool:
        return any(s.why is why for s in self.skips)

    def __repr__(self) -> str:
        x0, y0, x1, y1 = self.bbox
        return (f"Face(track={self.track}, person={self.person}, "
                f"box=({x0:.0f},{y0:.0f},{x1:.0f},{y1:.0f}), "
                f"score={self.score:.2f}, crop={_shape(self.crop)}, swapped={_shape(self.swapped)}, "
                f"mask={_shape(self.mask)}, skips={[str(s) for s in self.skips]})")


@dataclass(repr=False)
class FramePacket:
    """One video frame and what the stages learned about it.

    index: the frame's number in its source (0, 1, ...; a live source counts the frames it
        captured, so frames dropped before the pipeline leave gaps).
    pts: presentation timestamp in time_base units (None when the container gives none).
    frame: (H, W, 3) uint8 RGB, C-contiguous.
    follows: index of the frame this one continues (the one before it that went through the
        same chain), or None when it starts afresh (first frame, a photo, a seek, a restart).
        Stages that track faces carry their state over only when `follows` is the index of the
        last frame they saw; it is never inferred from index arithmetic (live drops frames).
    capture_time: time.monotonic() seconds when the frame was captured (live sources; the
        device's own timestamp where it gives one), None for files. Latency is measured from it.
    source: the decoder's own frame (an av.VideoFrame in 8-bit yuv420p, even width and height,
        upright, in the colour matrix the encoder writes), when the source keeps it (convert on
        the local runner; never across processes). An encoder may then write it as it was,
        converting to YUV only the `touched` boxes of `frame`: no RGB -> YUV of the whole frame,
        and the pixels outside the faces keep their exact source values. None otherwise.
    touched: boxes (x0, y0, x1, y1), frame px, end-exclusive, where `frame` may differ from
        `source`. A stage that writes into `frame` records the box it wrote; one that changes
        pixels elsewhere (or replaces the frame with other content) sets `source` to None.
    """

    index: int
    pts: int | None
    time_base: Fraction
    frame: np.ndarray
    faces: list[Face] = field(default_factory=list)
    follows: int | None = None
    capture_time: float | None = None
    source: object | None = None
    touched: list[tuple[int, int, int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        f = self.frame
        if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
            raise ValueError(f"FramePacket.frame must be (H, W, 3) uint8, got {_shape(f)}")
        if not f.flags.c_contiguous:
            self.frame = np.ascontiguousarray(f)

    @property
    def time(self) -> float | None:
        """Presentation time in seconds."""
        return None if self.pts is None else float(self.pts * self.time_base)

    @property
    def timestamp(self) -> float | None:
        """Seconds on the frame's own clock, for filters over time: pts time, else capture time."""
        t = self.time
        return t if t is not None else self.capture_time

    def __repr__(self) -> str:
        return (f"FramePacket(index={self.index}, follows={self.follows}, pts={self.pts}, "
                f"time_base={self.time_base}, frame={_shape(self.frame)}, faces={self.faces})")
