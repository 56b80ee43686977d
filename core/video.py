"""Video facts every layer shares: what a stream is (StreamInfo), which colour matrix a frame is
in, the conversion of any decoded frame to RGB, and whether a decoded frame can be written as it
is. PyAV only; nothing of ours. Importing it also makes forks safe for PyAV's scalers (see
fresh_scalers_before_fork).
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np


def fresh_scalers_before_fork() -> None:
    """Drop PyAV's per-thread scalers (one VideoReformatter a thread, in a threading.local of
    av.video.frame, each with swscale's slice threads), here in the parent, before a fork whose
    child runs Python: subprocess with preexec_fn, which Ray's process starts use. There the child
    clears the other threads' thread-locals, and freeing a scaler whose slice threads did not
    come across the fork waits on them for ever: `ray.init` hung in such a child, its Popen never
    returning (measured here: two live threads that had converted a frame, then five
    subprocess.run(preexec_fn=...): a hang without this, none with it). Each thread makes a new
    scaler at its next conversion. A PyAV without the thread-local is left as it is."""
    frame = sys.modules.get("av.video.frame")
    if frame is not None and isinstance(getattr(frame, "_thread_local", None), threading.local):
        frame._thread_local = threading.local()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=fresh_scalers_before_fork)


@dataclass
class StreamInfo:
    """What the video stream is; width/height are those of the frames `frames()` yields."""

    path: str
    width: int  # after rotation
    height: int  # after rotation
    fps: float  # average frame rate
    time_base: Fraction  # of the video stream (pts unit)
    duration: float | None  # seconds
    frames: int | None  # frame count when the container knows it, else estimate or None
    rotation: int  # degrees counter-clockwise from the display matrix, 0/90/180/270
    codec: str
    pix_fmt: str
    has_audio: bool
    frames_exact: bool = False  # True when `frames` comes from the container's index
    colorspace: int = 2  # FFmpeg AVColorSpace of the frames: 1 BT.709, 5/6 BT.601, 2 unspecified


def matrix_of(colorspace: int, height: int) -> int:
    """The AVColorSpace whose matrix a frame of this tag and height is in: its own when it names
    BT.709 or BT.601 (1, 5, 6); for anything else the convention players assume for untagged
    video, BT.709 (1) from 720 lines up and BT.601 (6) below."""
    return colorspace if colorspace in (1, 5, 6) else (1 if height >= 720 else 6)


def to_rgb(frame: av.VideoFrame, quarter_turns: int = 0) -> np.ndarray:
    """A decoded frame of any pixel format (10-bit included) as (H, W, 3) uint8 RGB, C-contiguous,
    turned `quarter_turns` x 90 degrees counter-clockwise. Untagged HD is read as BT.709, as
    players do (FFmpeg's default would be BT.601); tagged frames use their own matrix."""
    untagged_hd = (frame.colorspace or 2) == 2 and frame.height >= 720
    rgb = frame.reformat(format="rgb24", src_colorspace=1 if untagged_hd else None).to_ndarray()
    if quarter_turns:
        rgb = np.rot90(rgb, quarter_turns)
    return np.ascontiguousarray(rgb)


def passable(frame: av.VideoFrame, quarter_turns: int = 0) -> bool:
    """Whether a decoded frame can go to the encoder as it is (FramePacket.source): 8-bit
    yuv420p, limited range, even width and height, not turned, and in the colour matrix the
    encoder writes, so that its pixels and to_rgb's mean the same colours. That matrix is the
    frame's own when it names BT.709 or BT.601 (1, 5, 6); for an untagged frame (2) to_rgb and
    the encoder agree on BT.709 from 720 lines up and BT.601 below."""
    return (frame.format.name == "yuv420p" and not quarter_turns and frame.width % 2 == 0
            and frame.height % 2 == 0 and int(frame.color_range or 0) in (0, 1)
            and int(frame.colorspace or 2) in (1, 2, 5, 6))


def quarter_turns(frame: av.VideoFrame) -> int:
    """Quarter turns counter-clockwise that make the frame upright (its display matrix)."""
    return int(round(frame.rotation / 90.0)) % 4


@dataclass
class Planes:
    """A decoded frame that an encoder may write as it is (FramePacket.source, see passable), as
    plain arrays, so that it can cross a process boundary (an av.VideoFrame cannot be pickled):
    y (H, W), u and v (H/2, W/2) uint8; colorspace and color_range: its FFmpeg tags."""

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray
    colorspace: int
    color_range: int

    @classmethod
    def of(cls, frame: av.VideoFrame) -> Planes:
        """The planes of an 8-bit yuv420p frame (copies, without the rows' padding)."""
        y, u, v = (np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width].copy()
                   for p in frame.planes)
        return cls(y, u, v, int(frame.colorspace or 2), int(frame.color_range or 0))

    def frame(self) -> av.VideoFrame:
        """The yuv420p av.VideoFrame these planes came from (same pixels and tags)."""
        h, w = self.y.shape
        out = av.VideoFrame(w, h, "yuv420p")
        for plane, src in zip(out.planes, (self.y, self.u, self.v)):
            np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, :plane.width] = src
        out.colorspace, out.color_range = self.colorspace, self.color_range
        return out
