"""Things in front of a face: drawn occluders for training the learned mask, and the hand shape
the sample clips use.

Training pastes an occluder over a share of the input faces and trains the decoder's mask to be
the face region minus the occluder, so each decoder's mask learns to leave out whatever covers
the face (DeepFaceLab users label this by hand with XSeg; here it is learned from shapes drawn at
random). The kinds, each at a random place, size, angle and opacity (mostly opaque):
- ellipses and polygons (microphones, cups, glasses' rims, a shoulder), in a flat colour or a
  gradient;
- hands: a palm and five fingers as shaded capsules (hand_shape), in a skin tone;
- strands: a few thin curved lines (hair);
- patches of other images: the same shapes filled with a crop of another face in the batch, so
  an occluder can look like skin or like anything else the facesets hold.

All arrays are numpy: masks (S, S) float32 in [0, 1]; colours (S, S, 3) float32 in [0, 1].
"""

from __future__ import annotations

import math

import cv2
import numpy as np

KINDS = ("ellipse", "polygon", "hand", "strands")


def _capsule(shape: tuple[int, int], p0, p1, r: float) -> tuple[np.ndarray, np.ndarray]:
    """A capsule (segment p0-p1 grown by r px): (inside bool (H, W), cylinder shading (H, W)
    float32 in [0, 1], 1 on its axis). Computed over the capsule's bounding box only."""
    h, w = shape
    inside = np.zeros((h, w), bool)
    shade = np.zeros((h, w), np.float32)
    p0, p1 = np.float32(p0), np.float32(p1)
    lo = np.floor(np.minimum(p0, p1) - r).astype(int)
    hi = np.ceil(np.maximum(p0, p1) + r).astype(int) + 1
    x0, y0, x1, y1 = max(lo[0], 0), max(lo[1], 0), min(hi[0], w), min(hi[1], h)
    if x1 <= x0 or y1 <= y0:
        return inside, shade
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    d = p1 - p0
    t = np.clip(((xx - p0[0]) * d[0] + (yy - p0[1]) * d[1]) / max(float((d * d).sum()), 1e-6), 0, 1)
    dist = np.hypot(xx - (p0[0] + t * d[0]), yy - (p0[1] + t * d[1]))
    inside[y0:y1, x0:x1] = dist < r
    shade[y0:y1, x0:x1] = np.sqrt(np.clip(1 - (dist / max(r, 1e-6)) ** 2, 0, 1))
    return inside, shade


# A right hand, fingers up, in units of the palm's half width, palm centre at (0, 0):
# (base, tip, radius) of thumb, index, middle, ring, little finger.
_FINGERS = (((-0.45, 0.05), (-0.95, -0.5), 0.14), ((-0.33, -0.45), (-0.45, -1.25), 0.12),
            ((-0.11, -0.55), (-0.14, -1.45), 0.125), ((0.11, -0.55), (0.14, -1.4), 0.12),
            ((0.32, -0.45), (0.42, -1.15), 0.105))


def hand_shape(shape: tuple[int, int], centre: tuple[float, float], size: float, angle: float = 0.0,
               spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """An open hand, palm to the camera: (mask (H, W) float32 in {0, 1}, shading (H, W) float32
    in [0, 1]). size: the palm's half width, px (the hand is ~2.6 sizes tall); angle: radians,
    0 = fingers up; spread: how far the fingers fan out (1: as drawn, 0: together)."""
    c, s = math.cos(angle), math.sin(angle)

    def at(x: float, y: float) -> tuple[float, float]:
        return centre[0] + (c * x - s * y) * size, centre[1] + (s * x + c * y) * size

    inside, shade = _capsule(shape, at(-0.05, 0.35), at(0.0, -0.15), 0.5 * size)  # the palm
    mask = inside.astype(np.float32)
    light = np.where(inside, 0.6 + 0.4 * shade, 0).astype(np.float32)
    for (x0, y0), (x1, y1), r in _FINGERS:
        x1, y1 = x0 + (x1 - x0) * (1 + 0.3 * (spread - 1) * np.sign(x0)), y1
        mx, my = (x0 + x1) / 2, (y0 + y1) / 2
        for q0, q1 in (((x0, y0), (mx, my)), ((mx, my), (x1, y1))):  # two phalanx segments
            inside, shade = _capsule(shape, at(*q0), at(*q1), r * size)
            light = np.where(inside, shade, light)  # a finger's edge is darker than the palm under it
            mask = np.maximum(mask, inside)
    return mask, light


def draw_hand(frame: np.ndarray, centre: tuple[float, float], size: float, angle: float = 0.0,
              tone: tuple[int, int, int] = (225, 170, 140), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """frame (H, W, 3) uint8 RGB with a shaded skin-tone hand drawn over it (a new array), and the
    hand's mask (H, W) bool. MediaPipe's hand landmarker finds it (palm size ~15-60 px)."""
    mask, light = hand_shape(frame.shape[:2], centre, size, angle)
    rng = np.random.default_rng(seed)
    skin = np.float32(tone)[None, None] * (0.45 + 0.55 * light[..., None])
    skin += rng.normal(0, 3, frame.shape[:2] + (1,)).astype(np.float32)
    inside = mask > 0
    out = frame.copy()
    out[inside] = np.clip(skin[inside], 0, 255).astype(np.uint8)
    return out, inside


def _polygon(rng: np.random.Generator, side: int) -> np.ndarray:
    centre = rng.uniform(0.1, 0.9, 2) * side
    n = int(rng.integers(3, 8))
    angles = np.sort(rng.uniform(0, 2 * math.pi, n))
    radii = rng.uniform(0.1, 0.45, n) * side
    pts = centre + np.stack([np.cos(angles), np.sin(angles)], 1) * radii[:, None]
    mask = np.zeros((side, side), np.uint8)
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    return mask.astype(np.float32)


def _ellipse(rng: np.random.Generator, side: int) -> np.ndarray:
    mask = np.zeros((side, side), np.uint8)
    centre = tuple(int(v) for v in rng.uniform(0.05, 0.95, 2) * side)
    axes = tuple(int(v) for v in rng.uniform(0.08, 0.4, 2) * side)
    cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return mask.astype(np.float32)


def _strands(rng: np.random.Generator, side: int) -> np.ndarray:
    mask = np.zeros((side, side), np.uint8)
    x = rng.uniform(0.1, 0.9) * side
    for _ in range(int(rng.integers(2, 7))):
        t = np.linspace(0, 1, 12)
        xs = x + rng.normal(0, 0.05) * side + np.sin(t * rng.uniform(1, 4) + rng.uniform(0, 6)) * 0.1 * side
        pts = np.stack([xs, t * rng.uniform(0.4, 1.0) * side], 1)
        thick = max(1, int(round(side * rng.uniform(0.01, 0.025))))
        cv2.polylines(mask, [np.round(pts).astype(np.int32)], False, 1, thick)
    return mask.astype(np.float32)


def random_occluder(rng: np.random.Generator, side: int, other: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """One random occluder over an (side, side) crop: (alpha (S, S) float32 in [0, 1], colour
    (S, S, 3) float32 in [0, 1]). other: an (S, S, 3) float32 image in [0, 1] (another face of
    the batch) to fill it with sometimes, or None."""
    kind = KINDS[int(rng.integers(len(KINDS)))]
    if kind == "hand":
        size = rng.uniform(0.12, 0.3) * side
        mask, light = hand_shape((side, side), tuple(rng.uniform(0.1, 0.9, 2) * side), size,
                                 rng.uniform(-1.2, 1.2), rng.uniform(0.3, 1.2))
        tone = rng.uniform([0.35, 0.2, 0.15], [0.95, 0.8, 0.7]).astype(np.float32)
        colour = tone[None, None] * (0.45 + 0.55 * light[..., None])
    else:
        mask = {"ellipse": _ellipse, "polygon": _polygon, "strands": _strands}[kind](rng, side)
        fill = rng.random()
        if other is not None and fill < 0.35:  # a patch of another image, moved
            shift = rng.integers(-side // 3, side // 3 + 1, 2)
            colour = np.roll(other, tuple(int(v) for v in shift), (0, 1)).astype(np.float32)
        elif fill < 0.7:  # a gradient between two colours
            a, b = rng.random(3).astype(np.float32), rng.random(3).astype(np.float32)
            ramp = np.linspace(0, 1, side, dtype=np.float32)
            ramp = ramp[:, None] if rng.random() < 0.5 else ramp[None, :]
            colour = a + (b - a) * np.broadcast_to(ramp, (side, side))[..., None]
        else:
            colour = np.broadcast_to(rng.random(3).astype(np.float32), (side, side, 3)).copy()
        colour = colour + rng.normal(0, rng.uniform(0, 0.06), colour.shape).astype(np.float32)
    opacity = 1.0 if rng.random() < 0.8 else rng.uniform(0.6, 1.0)
    edge = rng.uniform(0, 1.2)  # px of edge softness
    if edge > 0.3:
        mask = cv2.GaussianBlur(mask, (0, 0), edge)
    return np.clip(mask * opacity, 0, 1).astype(np.float32), np.clip(colour, 0, 1).astype(np.float32)
