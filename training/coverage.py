"""What a faceset shows, and so what a model trained on it can draw: how many of its faces have
the mouth open, the eyes closed, and how far the head is turned.

A decoder draws what its faceset showed it: trained on closed mouths only, it draws a closed
mouth over an open one (the swap then loses what the mouth does). Extract and sort report the
coverage of what they write and say what a model will be unable to draw.

All measures come from the sidecar's landmarks ((N, 478, 2) float32, MediaPipe FaceMesh points,
pixels of the aligned faces), as shares of the face so they do not depend on its size:
- mouth open: the inner lips' gap (points 13 and 14) over the face's height (10 to 152) above
  MOUTH_OPEN (the sample faces: a smile with parted lips 6-9 %, closed lips 0-2 %); its 95th and
  5th percentiles are the widest and narrowest mouth the faces show (mouth_reach, mouth_floor);
- eyes closed: both eyes' lid gap (159-145, 386-374) over their width below EYES_CLOSED (open
  eyes: 0.26-0.45 on the sample faces);
- yaw, approximate: where the nose tip (1) lies between the face's sides (234, 454), as the
  angle whose sine that offset is (0 frontal; the sign says which way).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from swapstream.core.faceset import read_landmarks

MOUTH_OPEN = 0.04  # inner-lip gap / face height above which a mouth counts as open
EYES_CLOSED = 0.15  # lid gap / eye width below which an eye counts as closed
MIN_SHARE = 0.05  # an expression on fewer faces than this is one the model will hardly learn
TURNED = 30.0  # degrees of yaw beyond which a face counts as turned


@dataclass
class Coverage:
    """faces: how many; mouth_open, eyes_closed: shares of them (0-1); yaw_min, yaw_max: the
    range of head turn, degrees."""

    faces: int
    mouth_open: float
    eyes_closed: float
    yaw_min: float
    yaw_max: float
    # how wide a mouth the faces show: the 95th percentile of the inner-lip gap over the face's
    # height (core.geometry.mouth_gap); what the blend's `mouth: auto` compares a face's gap with
    mouth_reach: float = 0.0
    # how closed a mouth the faces show: the 5th percentile of the same gap; a face whose gap is
    # well below it is one the model cannot draw (`mouth: auto` keeps that face's lips)
    mouth_floor: float = 0.0

    def line(self) -> str:
        """One line for the terminal."""
        if not self.faces:
            return "coverage: no faces"
        return (f"coverage: mouth open in {self.mouth_open:.0%}, eyes closed in {self.eyes_closed:.0%}, "
                f"head turn {self.yaw_min:+.0f} to {self.yaw_max:+.0f} degrees, of {self.faces} faces")

    def warnings(self) -> list[str]:
        """What a model trained on these faces will be unable to draw, and what helps."""
        if not self.faces:
            return []
        out = []
        if self.mouth_open < MIN_SHARE:
            out.append("few or no faces with an open mouth: a model trained on them draws a closed mouth "
                       "over an open one; add footage of the person talking or smiling")
        if self.eyes_closed < MIN_SHARE:
            out.append("few or no faces with closed eyes: blinks will be drawn with open eyes; add "
                       "footage with blinks")
        if max(abs(self.yaw_min), abs(self.yaw_max)) < TURNED:
            out.append(f"no face turned more than {TURNED:.0f} degrees: profiles will be drawn poorly; "
                       "add footage from the side")
        return out


def coverage(landmarks: np.ndarray) -> Coverage:
    """Coverage of faces with these landmarks ((N, 478, 2) float, any pixels)."""
    lm = np.asarray(landmarks, np.float64).reshape(-1, 478, 2)
    if not len(lm):
        return Coverage(0, 0.0, 0.0, 0.0, 0.0)

    def dist(a: int, b: int) -> np.ndarray:
        return np.linalg.norm(lm[:, a] - lm[:, b], axis=1)

    height = np.maximum(dist(10, 152), 1e-6)
    gap = dist(13, 14) / height
    mouth = gap > MOUTH_OPEN
    right = dist(159, 145) / np.maximum(dist(33, 133), 1e-6)
    left = dist(386, 374) / np.maximum(dist(362, 263), 1e-6)
    closed = (right < EYES_CLOSED) & (left < EYES_CLOSED)
    across = lm[:, 454, 0] - lm[:, 234, 0]
    where = (lm[:, 1, 0] - lm[:, 234, 0]) / np.where(np.abs(across) > 1e-6, across, 1e-6)
    yaw = np.degrees(np.arcsin(np.clip(2 * where - 1, -1, 1)))
    return Coverage(len(lm), float(mouth.mean()), float(closed.mean()), float(yaw.min()), float(yaw.max()),
                    float(np.percentile(gap, 95)), float(np.percentile(gap, 5)))


def faceset_coverage(directory: str | Path, names: list[str] | None = None) -> Coverage:
    """Coverage of a faceset's faces (of `names` only, when given), from its sidecar alone."""
    found = read_landmarks(directory)
    keep = [found[n] for n in (names if names is not None else found) if n in found]
    return coverage(np.array(keep, np.float32).reshape(-1, 478, 2))
