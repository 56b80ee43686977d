"""bench_quality's occluder clip: A's moving clip with things crossing in front of the face.

The demo's clip of A (swapstream.pipeline.samples.render_frames, seed 1), with two occluders
drawn over it, each crossing the lower half of the face from one side to the other:
- first half of the clip: a real object, the espresso cup of scikit-image's `coffee` photo
  (public domain), cut out with an ellipse, 0.4 of the face wide, at the mouth's height;
- second half: a hand-like shape (swapstream.training.occluders.draw_hand: a shaded palm and
  five fingers in a skin tone), the palm about half the face wide (as a real hand's), its
  fingers over the mouth and cheek.
The face's landmarks for placing them are found on the clean frames (FaceMesh, each frame a
still). Returns the clip and, per frame, the occluder's mask ((H, W) bool): the ground truth of
which pixels must come through the swap unchanged.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from swapstream.core.geometry import FACE_OVAL
from swapstream.pipeline.samples import render_frames, write_clip
from swapstream.training.occluders import draw_hand

CUP_CENTRE, CUP_AXES = (290, 160), (118, 125)  # the cup in coffee(), px


def _cup() -> tuple[np.ndarray, np.ndarray]:
    """The cup: (rgb (h, w, 3) uint8, alpha (h, w) float32 in [0, 1])."""
    from skimage import data

    img = data.coffee()
    alpha = np.zeros(img.shape[:2], np.float32)
    cv2.ellipse(alpha, CUP_CENTRE, CUP_AXES, 0, 0, 360, 1.0, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), 1.0)
    (cx, cy), (ax, ay) = CUP_CENTRE, CUP_AXES
    box = (slice(cy - ay - 2, cy + ay + 3), slice(cx - ax - 2, cx + ax + 3))
    return img[box], alpha[box]


def _paste(frame: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, centre, width: float):
    """frame with rgb/alpha scaled to `width` px wide and centred at `centre`; and the mask."""
    s = width / rgb.shape[1]
    m = np.float64([[s, 0, centre[0] - s * rgb.shape[1] / 2], [0, s, centre[1] - s * rgb.shape[0] / 2]])
    h, w = frame.shape[:2]
    a = cv2.warpAffine(alpha, m, (w, h), flags=cv2.INTER_LINEAR)[..., None]
    src = cv2.warpAffine(rgb, m, (w, h), flags=cv2.INTER_LINEAR).astype(np.float32)
    out = np.clip(frame * (1 - a) + src * a + 0.5, 0, 255).astype(np.uint8)
    return out, a[..., 0] > 0.5


def occluded_clip(path: Path, seconds: float, fps: int = 30,
                  face: str = "astronaut") -> tuple[Path, list[np.ndarray]]:
    """Write the clip of the sample face `face` (640x360, x264 crf 16, with the sample tone);
    returns (path, masks: (360, 640) bool each, True where the occluder covers the frame)."""
    import mediapipe as mp

    n = int(round(seconds * fps))
    cup, cup_alpha = _cup()
    frames, masks = [], []
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True) as mesh:
        for i, frame in enumerate(render_frames([face], n, seed=1)):
            found = mesh.process(frame).multi_face_landmarks
            if not found:
                frames.append(frame)
                masks.append(np.zeros(frame.shape[:2], bool))
                continue
            h, w = frame.shape[:2]
            lm = np.array([[p.x * w, p.y * h] for p in found[0].landmark], np.float32)
            oval = lm[FACE_OVAL]
            x0, x1 = float(oval[:, 0].min()), float(oval[:, 0].max())
            face_w = x1 - x0
            half = n // 2
            if i < half:  # the cup, left to right across the mouth and chin
                t = i / max(half - 1, 1)
                centre = (x0 - 0.1 * face_w + t * 1.2 * face_w, float(lm[14, 1]))
                out, mask = _paste(frame, cup, cup_alpha, centre, 0.4 * face_w)
            else:  # the hand, right to left across the cheek and mouth
                t = (i - half) / max(n - half - 1, 1)
                centre = (x1 + 0.1 * face_w - t * 1.2 * face_w, float(lm[17, 1]) + 0.3 * face_w)
                out, mask = draw_hand(frame, centre, 0.28 * face_w, angle=-0.25 + 0.3 * math.sin(6 * t),
                                      seed=i)
            frames.append(out)
            masks.append(mask)
    return write_clip(path, frames, fps), masks
