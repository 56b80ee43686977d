"""Blend stage: paste each swapped face back into its frame.

Per face, in the aligned S x S crop: build the mask (landmark hull, the decoder's learned mask, or
both), match the swapped face's colours to the original crop, sharpen, feather the mask edge.
Then warp the face and mask back with the inverse of face.matrix into the face's region of
interest only (the frame-space bounding box of the crop), never the whole frame, and composite
there by feathered alpha or Poisson (cv2.seamlessClone) cloning. Pixels outside the blended region
are bit-identical to the input; the input frame is never written to (it may be read-only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from swapstream.core.color import COLOR_MODES, SHARPEN_MODES, sharpen, transfer_color
from swapstream.core.errors import ConfigError
from swapstream.core.geometry import FACE_OVAL, hull_mask, invert_affine, transform_points
from swapstream.core.packet import Face, FramePacket, Why
from swapstream.stages.base import Needs, Stage

COMPOSITE_MODES = ("alpha", "seamless")
MASK_MODES = ("hull", "learned", "hull+learned")

# Alpha below this (under half a grey level on any pixel) is rounded to zero, so the Gaussian
# tails of the feather do not touch pixels that would not visibly change anyway.
_ALPHA_FLOOR = 1.0 / 512


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"blend.{name}={value!r} is not allowed; set it to one of: {', '.join(allowed)}")


def _check_non_negative(name: str, value: object) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0:
        raise ConfigError(f"blend.{name}={value!r} is not allowed; set it to a finite number >= 0")


@dataclass
class BlendSettings:
    """How swapped faces go back into the frame.

    color: none | reinhard (CIELAB mean/std over the masked pixels) | hist (per-channel histogram
        match over the masked pixels); the swapped crop is matched to the original crop.
    sharpen: none | unsharp | gaussian | box (see swapstream.core.color.sharpen); sharpen_amount >= 0.
    composite: alpha (feathered alpha) | seamless (cv2.seamlessClone, then the feathered alpha;
        faces whose mask reaches the frame border fall back to alpha).
    mask: hull (convex hull of the face-oval landmarks) | learned (the decoder's mask) |
        hull+learned (their product).
    erode: how far the hull shrinks before feathering, as a share of the face size (sqrt of the
        hull area); not applied to the learned mask.
    feather: sigma of the Gaussian blur of the mask edge, as a share of the face size.
    """

    color: str = "reinhard"
    sharpen: str = "none"
    sharpen_amount: float = 0.5
    composite: str = "alpha"
    mask: str = "hull+learned"
    erode: float = 0.02
    feather: float = 0.06

    def __post_init__(self) -> None:
        _check_choice("color", self.color, COLOR_MODES)
        _check_choice("sharpen", self.sharpen, SHARPEN_MODES)
        _check_choice("composite", self.composite, COMPOSITE_MODES)
        _check_choice("mask", self.mask, MASK_MODES)
        for name in ("sharpen_amount", "erode", "feather"):
            _check_non_negative(name, getattr(self, name))


def face_masks(face: Face, settings: BlendSettings) -> tuple[np.ndarray, np.ndarray]:
    """The masks of one face in its crop: (hard, soft), each (S, S) float32 in [0, 1].

    hard: the eroded hull and/or learned mask, before feathering (colour statistics use > 0.5).
    soft: hard feathered, and faded to 0 at the crop edge so no square seam shows in the frame.
    Sizes are in shares of the face size measured in the crop, so they scale with the face.
    """
    size = face.swapped.shape[0]
    hull = hull_mask(transform_points(face.landmarks[FACE_OVAL], face.matrix), (size, size))
    face_px = math.sqrt(max(float(hull.sum()), 1.0))
    learned = np.ones((size, size), np.float32) if face.mask is None else face.mask.astype(np.float32)

    k = int(round(settings.erode * face_px))
    if k > 0 and settings.mask != "learned":
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
        # The crop edge counts as outside: a face cut off by the crop erodes from there too.
        hull = cv2.erode(hull, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    hard = {"hull": hull, "learned": learned, "hull+learned": hull * learned}[settings.mask]

    sigma = settings.feather * face_px
    soft = cv2.GaussianBlur(hard, (0, 0), sigma) if sigma > 0.1 else hard.copy()
    ramp = max(1.0, min(2.0 * sigma, size / 8))
    edge = np.minimum(np.arange(size), np.arange(size)[::-1]).astype(np.float32)
    window = np.clip(edge / ramp, 0, 1)  # (S,) 0 on the crop's outermost pixels
    soft *= window[:, None] * window[None, :]
    soft[soft < _ALPHA_FLOOR] = 0
    return hard, np.clip(soft, 0, 1)


class BlendStage(Stage):
    """Composites face.swapped into packet.frame for every face that is ok and has been swapped.

    Faces with errors, or without swapped/matrix, are skipped: their pixels stay as they were.
    A packet with at least one blended face gets a new C-contiguous frame; the old one is not
    modified. settings defaults to BlendSettings().
    """

    name = "blend"
    needs = Needs(cpu_share=0.25)

    def __init__(self, settings: BlendSettings | None = None) -> None:
        self.settings = settings if settings is not None else BlendSettings()

    def process(self, batch: list[FramePacket]) -> list[FramePacket]:
        for packet in batch:
            faces = [f for f in packet.faces if f.ok and f.swapped is not None and f.matrix is not None]
            if not faces:
                continue
            out = np.array(packet.frame, dtype=np.uint8, order="C", copy=True)
            for face in faces:
                box = self.blend_face(out, face, packet.frame)
                if box is not None:
                    packet.touched.append(box)
            packet.frame = out
        return batch

    def blend_face(self, out: np.ndarray, face: Face, source: np.ndarray) -> tuple[int, int, int, int] | None:
        """Composite one face into out ((H, W, 3) uint8 RGB, written in place); returns the box
        (x0, y0, x1, y1), end-exclusive, it wrote, or None.

        source: the unmodified input frame, to cut the original crop from if face.crop is missing.
        """
        s = self.settings
        size = face.swapped.shape[0]
        m = np.asarray(face.matrix, np.float64)
        det = np.linalg.det(m[:, :2])
        if not (np.isfinite(m).all() and abs(det) > 1e-9):
            face.skip(Why.DEGENERATE, f"alignment matrix det={det:.3g}")
            return None
        mask_shape = (size, size) if face.mask is None else face.mask.shape
        if face.swapped.shape != (size, size, 3) or mask_shape != (size, size):
            raise ValueError(f"blend: swapped/mask shapes disagree: {face!r}")
        hard, alpha = face_masks(face, s)
        target = face.crop if face.crop is not None else cv2.warpAffine(source, m, (size, size))
        new = transfer_color(face.swapped, target, hard, s.color)
        new = sharpen(new, s.sharpen, s.sharpen_amount, radius=max(1.0, size / 128))

        # A face much smaller in the frame than the crop: shrink the crop first (area filter) so
        # the warp back does not alias. Only to twice the final size: bicubic handles a 2x
        # reduction well, and each extra resampling softens the face.
        scale = math.sqrt(abs(det))  # crop px per frame px
        if scale > 2.5:
            small = max(8, int(round(2 * size / scale)))
            new = cv2.resize(new, (small, small), interpolation=cv2.INTER_AREA)
            alpha = cv2.resize(alpha, (small, small), interpolation=cv2.INTER_AREA)
            f = small / size  # resize maps pixel centres: u -> (u + 0.5) * f - 0.5
            m = m * f
            m[:, 2] += 0.5 * f - 0.5
        return paste(out, new, alpha, m, seamless=s.composite == "seamless")


def _roi(m: np.ndarray, size: int, shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    """Frame box (x0, y0, x1, y1), end-exclusive, holding the crop's footprint plus 1 px, clipped."""
    corners = transform_points(np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64),
                               invert_affine(m))
    x0, y0 = np.floor(corners.min(0)).astype(int) - 1
    x1, y1 = np.ceil(corners.max(0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, shape[1]), min(y1, shape[0])
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def paste(out: np.ndarray, face: np.ndarray, alpha: np.ndarray, m: np.ndarray,
          seamless: bool) -> tuple[int, int, int, int] | None:
    """Warp a crop back into out and composite it, touching only where the warped alpha is > 0.

    out: (H, W, 3) uint8 RGB frame, written in place. face: (S, S, 3) uint8 RGB crop. alpha:
    (S, S) float32 in [0, 1]. m: (2, 3) frame -> crop affine. Returns the box (x0, y0, x1, y1),
    frame px, end-exclusive, that was written, or None when nothing was.
    """
    box = _roi(m, face.shape[0], out.shape)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    # Shift the matrix so ROI pixel (x, y) samples the crop where frame pixel (x0 + x, y0 + y) does.
    m_roi = m.copy()
    m_roi[:, 2] += m[:, :2] @ np.array([x0, y0], np.float64)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    a = cv2.warpAffine(alpha, m_roi, (x1 - x0, y1 - y0), flags=flags, borderMode=cv2.BORDER_CONSTANT)
    a[a < _ALPHA_FLOOR] = 0
    rows, cols = np.flatnonzero(a.any(1)), np.flatnonzero(a.any(0))
    if rows.size == 0:
        return None
    # Tighten to the pixels alpha touches; still in ROI coordinates.
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    m_sub = m_roi.copy()
    m_sub[:, 2] += m_roi[:, :2] @ np.array([c0, r0], np.float64)
    # Bicubic for the face: two bilinear resamplings (align's and this one) visibly soften it.
    warped = cv2.warpAffine(face.astype(np.float32), m_sub, (c1 - c0, r1 - r0),
                            flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    a = a[r0:r1, c0:c1]
    fx0, fy0 = x0 + c0, y0 + r0  # frame position of the tightened box
    dst = out[fy0:fy0 + a.shape[0], fx0:fx0 + a.shape[1]]
    if seamless:
        cloned = _seamless_clone(out, warped, a, fx0, fy0)
        if cloned is not None:
            warped = cloned
    # dst + a * (warped - dst), in place; where a == 0 it is exactly dst, so those pixels keep
    # their bits.
    base = dst.astype(np.float32)
    warped -= base
    warped *= a[..., None]
    warped += base
    warped += 0.5
    dst[...] = np.clip(warped, 0, 255, out=warped).astype(np.uint8)
    return fx0, fy0, fx0 + a.shape[1], fy0 + a.shape[0]


def _seamless_clone(out: np.ndarray, warped: np.ndarray, a: np.ndarray, fx0: int,
                    fy0: int) -> np.ndarray | None:
    """Poisson-clone warped into out over a > 0; returns the cloned box, float32 like warped.

    Returns None (the caller falls back to alpha) when the box is not at least 1 px inside the
    frame on every side: the Poisson solve takes its boundary values from the frame around the
    mask, and a face cut off by the frame edge has none there.
    """
    h, w = a.shape
    H, W = out.shape[:2]
    if fx0 < 1 or fy0 < 1 or fx0 + w > W - 1 or fy0 + h > H - 1 or min(h, w) < 3:
        return None
    # Pad by 1 px: seamlessClone clears the mask's outer pixel ring and needs frame pixels there.
    dst = np.ascontiguousarray(out[fy0 - 1:fy0 + h + 1, fx0 - 1:fx0 + w + 1])
    src = dst.copy()
    src[1:-1, 1:-1] = np.clip(warped + 0.5, 0, 255).astype(np.uint8)
    mask = np.zeros(dst.shape[:2], np.uint8)
    mask[1:-1, 1:-1] = (a > 0) * 255
    # seamlessClone centres the mask's bounding box (here (1, 1, w, h)) on p.
    try:
        cloned = cv2.seamlessClone(src, dst, mask, (1 + w // 2, 1 + h // 2), cv2.NORMAL_CLONE)
    except cv2.error:
        return None
    return cloned[1:-1, 1:-1].astype(np.float32)
