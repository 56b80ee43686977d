"""Audio as it travels beside the frames of a live run: AudioChunk, and the one rate and clock
every live source and output uses."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

AUDIO_RATE = 48_000  # Hz: what live sources resample to and live outputs encode
LIVE_TIME_BASE = Fraction(1, 1_000_000)  # pts unit of frames and audio from a live source (us)


@dataclass
class AudioChunk:
    """Audio as it was captured: samples (C, N) float32 in [-1, 1] at `rate` Hz (C is 1 or 2),
    and the time.monotonic() seconds of its first sample."""

    samples: np.ndarray
    rate: int
    capture_time: float

    @property
    def duration(self) -> float:
        return self.samples.shape[1] / self.rate
