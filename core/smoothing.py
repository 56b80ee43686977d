"""One Euro filter (Casiez et al., CHI 2012) for landmark sets: less jitter when still, little
lag when moving. Speeds are measured in face sizes per second so that one setting fits small and
large faces alike, and taken for the face as a whole.
"""

from __future__ import annotations

import math

import numpy as np


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuro:
    """Filters (K, 2) point sets over time.

    min_cutoff: Hz, smoothing of a still face (lower = smoother). beta: how fast the cutoff rises
    with speed (per face size per second). d_cutoff: Hz, smoothing of the speed estimate.
    """

    def __init__(self, min_cutoff: float = 1.5, beta: float = 8.0, d_cutoff: float = 1.0) -> None:
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    def reset(self) -> None:
        self._x = self._dx = self._t = None

    def __call__(self, points: np.ndarray, t: float) -> np.ndarray:
        """points: (K, 2) float, pixels; t: seconds. Returns the filtered (K, 2) float64."""
        x = np.asarray(points, np.float64)
        if self._x is None or self._t is None or t <= self._t:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x.copy()
        dt = t - self._t
        size = max(float(np.ptp(x[:, 1])), 1.0)
        dx = (x - self._x) / dt
        self._dx = self._dx + _alpha(self.d_cutoff, dt) * (dx - self._dx)
        # speed of the whole face (mean velocity): per-point speeds are mostly landmark noise,
        # which would open the filter exactly when it should smooth
        speed = float(np.linalg.norm(self._dx.mean(0))) / size  # face sizes per second
        a = _alpha(self.min_cutoff + self.beta * speed, dt)
        self._x = self._x + a * (x - self._x)
        self._t = t
        return self._x.copy()
