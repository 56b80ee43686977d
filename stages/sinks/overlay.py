"""Drawing on output frames: face boxes (the live "boxes" control) and a statistics panel."""

from __future__ import annotations

import cv2
import numpy as np

from swapstream.core.packet import FramePacket
from swapstream.stages.base import Stage


class BoxesStage(Stage):
    """When `enabled`, draws each face's box (green: swapped, amber: not) and track id on a copy
    of the frame; otherwise passes frames through untouched."""

    name = "boxes"

    def __init__(self, enabled: bool = False) -> None:
        self.enabled = enabled

    def process(self, batch: list[FramePacket]) -> list[FramePacket]:
        if not self.enabled:
            return batch
        for p in batch:
            if p.faces:
                frame = p.frame.copy()
                for f in p.faces:
                    x0, y0, x1, y1 = (int(round(v)) for v in f.bbox)
                    colour = (40, 220, 60) if f.swapped is not None else (255, 170, 0)
                    cv2.rectangle(frame, (x0, y0), (x1, y1), colour, 2, cv2.LINE_AA)
                    cv2.putText(frame, f"#{f.track}", (x0, max(12, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX,
                                0.45, colour, 1, cv2.LINE_AA)
                p.frame = frame
                p.source = None  # boxes and labels all over: the source frame is no longer it
        return batch


def stats_panel(frame: np.ndarray, lines: list[str]) -> np.ndarray:
    """A copy of (H, W, 3) uint8 `frame` with `lines` of text on a dark panel, top left."""
    out = frame.copy()
    scale = max(0.4, min(0.7, frame.shape[0] / 900))
    step = int(22 * scale / 0.5)
    width = max((cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] for t in lines), default=0)
    h = step * len(lines) + 8
    roi = out[:h, :width + 16]
    roi[:] = (roi.astype(np.float32) * 0.35).astype(np.uint8)
    for i, t in enumerate(lines):
        cv2.putText(out, t, (8, step * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return out


def stats_lines(snap: dict) -> list[str]:
    """The overlay's lines from LiveStats.snapshot()."""
    lat = snap.get("latency_ms", {})
    return [f"{snap.get('fps_out', 0):.0f} fps out / {snap.get('fps_in', 0):.0f} in",
            f"latency p50 {lat.get('p50', float('nan')):.0f} ms  p95 {lat.get('p95', float('nan')):.0f} ms",
            f"dropped {snap.get('dropped', 0)}  faces {snap.get('faces', 0)}"]
