"""An in-process sink: keeps what it delivered (index, capture time, delivery time, faces), and
optionally the frames, for benchmarks, tests and programs that use swapstream as a library."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from swapstream.core.packet import FramePacket
from swapstream.stages.base import Sink


@dataclass
class Delivery:
    index: int
    capture_time: float | None
    delivered: float  # time.monotonic()
    faces: int
    swapped: int

    @property
    def latency_ms(self) -> float | None:
        return None if self.capture_time is None else 1000 * (self.delivered - self.capture_time)


class CollectSink(Sink):
    """Records every delivery; keeps the last `keep_frames` frames ((H, W, 3) uint8) with their
    index; `on_frame(packet)` is called for each, if given. `slow_ms` makes each delivery take that
    long (a slow output, for tests of the back-pressure policy)."""

    name = "memory"
    keeps_every_frame = False

    def __init__(self, keep_frames: int = 0, on_frame=None, slow_ms: float = 0.0) -> None:
        self.deliveries: list[Delivery] = []
        self.frames: deque[tuple[int, np.ndarray]] = deque(maxlen=max(keep_frames, 1))
        self.keep_frames = keep_frames
        self.on_frame = on_frame
        self.slow_ms = slow_ms
        self.audio_chunks = 0
        self._lock = threading.Lock()

    def process(self, batch: list[FramePacket]) -> list[FramePacket]:
        for p in batch:
            if self.slow_ms:
                time.sleep(self.slow_ms / 1000)
            if self.on_frame is not None:
                self.on_frame(p)
            with self._lock:
                self.deliveries.append(Delivery(p.index, p.capture_time, time.monotonic(), len(p.faces),
                                                sum(f.swapped is not None for f in p.faces)))
                if self.keep_frames:
                    self.frames.append((p.index, p.frame))
        return batch
