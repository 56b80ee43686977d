"""Blend stage: paste each swapped face back into its frame.

Per face, in the aligned S x S crop: build the masks (swapstream.stages.face.masks: the face
region, less what is in front of it and, where the model cannot draw it, A's open or closed mouth), match
the swapped face's colours to the original crop, sharpen. Then warp the face and mask back with
the inverse of face.matrix into the face's region of interest only (the frame-space bounding box
of the crop), never the whole frame; where the crop is drawn larger than the decoder drew it,
carry the frame's own fine detail (skin texture, not A's features) over it; composite by
feathered alpha or Poisson (cv2.seamlessClone) cloning. Pixels outside the blended region are
bit-identical to the input; the input frame is never written to (it may be read-only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from swapstream.core.color import COLOR_MODES, SHARPEN_MODES, sharpen, transfer_color
from swapstream.core.errors import ConfigError
from swapstream.core.geometry import invert_affine, transform_points
from swapstream.core.packet import Face, FramePacket, Why
from swapstream.stages.base import Needs, Stage
from swapstream.stages.face.masks import (
    ALPHA_FLOOR,
    MASK_MODES,
    MOUTH_MODES,
    OCCLUSION_MODES,
    detail_mask,
    face_masks,
)

COMPOSITE_MODES = ("alpha", "seamless")
# Detail carried over: the frame's high-pass (sigma = DETAIL_SIGMA x the upscale, frame px),
# soft-limited to DETAIL_LIMIT grey levels (texture is faint; a feature's edge is not).
DETAIL_SIGMA = 0.6
DETAIL_LIMIT = 6.0


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
        hull+learned (their product): the face region.
    occlusion: what in front of the face stays in front: learned (the decoder's mask, which
        training with pasted occluders teaches to leave them out, read as a classifier and cut
        out when `mask` is hull; stages.face.masks) | hands (hands found over the face by the
        hands stage are cut out) | both | none.
    mouth: auto (show A's own mouth interior where A's mouth is open wider than the model's
        target faceset ever showed, and A's whole mouth, lips included, where A's is closed
        tighter than that faceset ever showed) | keep (the interior, always) | swap (never).
    detail: 0-1, how much of the frame's fine detail (skin texture; not A's eyes, brows, lips)
        is carried over a face the blend draws larger than the decoder did (full from twice the
        decoder's size, none at or below it).
    erode: how far the hull shrinks before feathering, as a share of the face size (sqrt of the
        hull area); not applied to the learned mask.
    feather: sigma of the Gaussian blur of the mask edge, as a share of the face size.
    """

    color: str = "reinhard"
    sharpen: str = "unsharp"  # the amount scaled by the upscale, up to 2x (see blend_face)
    sharpen_amount: float = 0.5
    composite: str = "alpha"
    mask: str = "hull"
    occlusion: str = "both"
    mouth: str = "auto"
    detail: float = 0.5
    erode: float = 0.02
    feather: float = 0.06

    def __post_init__(self) -> None:
        _check_choice("color", self.color, COLOR_MODES)
        _check_choice("sharpen", self.sharpen, SHARPEN_MODES)
        _check_choice("composite", self.composite, COMPOSITE_MODES)
        _check_choice("mask", self.mask, MASK_MODES)
        _check_choice("occlusion", self.occlusion, OCCLUSION_MODES)
        _check_choice("mouth", self.mouth, MOUTH_MODES)
        for name in ("sharpen_amount", "erode", "feather", "detail"):
            _check_non_negative(name, getattr(self, name))
        if self.detail > 1:
            raise ConfigError(f"blend.detail={self.detail!r} is not allowed; set it to 0-1 (0: off)")


class BlendStage(Stage):
    """Composites face.swapped into packet.frame for every face that is ok and has been swapped.

    Faces with errors, or without swapped/matrix, are skipped: their pixels stay as they were.
    A packet with at least one blended face gets a new C-contiguous frame; the old one is not
    modified. settings defaults to BlendSettings(). mouth_reach: the widest mouth the model's
    target faceset showed (core.geometry.mouth_gap, its 95th percentile, a float share of the
    face height; the model's training record), or None when unknown; `mouth: auto` keeps A's
    mouth interior where A's is open wider. mouth_floor: the narrowest (its 5th percentile),
    or None when unknown (a model trained before it was recorded: nothing kept for it);
    `mouth: auto` keeps A's whole mouth, lips included, where A's is narrower.
    person_reach, person_floor: the same for each person of a --map (indexed by Face.person),
    each drawn by its own model.
    """

    name = "blend"
    needs = Needs(cpu_share=0.25)

    def __init__(self, settings: BlendSettings | None = None, mouth_reach: float | None = None,
                 person_reach: tuple[float | None, ...] = (), mouth_floor: float | None = None,
                 person_floor: tuple[float | None, ...] = ()) -> None:
        self.settings = settings if settings is not None else BlendSettings()
        self.mouth_reach, self.person_reach = mouth_reach, tuple(person_reach)
        self.mouth_floor, self.person_floor = mouth_floor, tuple(person_floor)

    def reach_of(self, face: Face) -> float | None:
        """The mouth reach of the model that drew this face: its person's (Face.person, a --map
        entry) where the chain has several models, else the one model's."""
        if 0 <= face.person < len(self.person_reach):
            return self.person_reach[face.person]
        return self.mouth_reach

    def floor_of(self, face: Face) -> float | None:
        """The mouth floor of the model that drew this face, chosen as reach_of chooses."""
        if 0 <= face.person < len(self.person_floor):
            return self.person_floor[face.person]
        return self.mouth_floor

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
        hard, alpha = face_masks(face, s, self.reach_of(face), self.floor_of(face))
        target = face.crop if face.crop is not None else cv2.warpAffine(source, m, (size, size))
        new = transfer_color(face.swapped, target, hard, s.color)
        scale = math.sqrt(abs(det))  # crop px per frame px
        upscale = 1 / scale  # frame px per crop px: > 1 where the face is drawn larger than the crop
        # Sharpening adapts to the size the face is drawn at, in proportion to the upscale: less
        # where the warp shrinks it (that sharpens by itself; half the amount at half the size),
        # up to twice the amount where it is drawn 2x or more larger.
        amount = s.sharpen_amount * float(np.clip(upscale, 0.0, 2.0))
        new = sharpen(new, s.sharpen, amount, radius=max(1.0, size / 128))
        detail = None
        if s.detail > 0 and upscale > 1:
            detail = detail_mask(face, size) * (s.detail * min(upscale - 1, 1.0))

        # A face much smaller in the frame than the crop: shrink the crop first (area filter) so
        # the warp back does not alias. Only to twice the final size: bicubic handles a 2x
        # reduction well, and each extra resampling softens the face.
        if scale > 2.5:
            small = max(8, int(round(2 * size / scale)))
            new = cv2.resize(new, (small, small), interpolation=cv2.INTER_AREA)
            alpha = cv2.resize(alpha, (small, small), interpolation=cv2.INTER_AREA)
            f = small / size  # resize maps pixel centres: u -> (u + 0.5) * f - 0.5
            m = m * f
            m[:, 2] += 0.5 * f - 0.5
        return paste(out, new, alpha, m, seamless=s.composite == "seamless", detail=detail,
                     detail_sigma=DETAIL_SIGMA * upscale)


def _roi(m: np.ndarray, size: int, shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    """Frame box (x0, y0, x1, y1), end-exclusive, holding the crop's footprint plus 1 px, clipped."""
    corners = transform_points(np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64),
                               invert_affine(m))
    x0, y0 = np.floor(corners.min(0)).astype(int) - 1
    x1, y1 = np.ceil(corners.max(0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, shape[1]), min(y1, shape[0])
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def paste(out: np.ndarray, face: np.ndarray, alpha: np.ndarray, m: np.ndarray,
          seamless: bool, detail: np.ndarray | None = None,
          detail_sigma: float = 1.0) -> tuple[int, int, int, int] | None:
    """Warp a crop back into out and composite it, touching only where the warped alpha is > 0.

    out: (H, W, 3) uint8 RGB frame, written in place. face: (S, S, 3) uint8 RGB crop. alpha:
    (S, S) float32 in [0, 1]. m: (2, 3) frame -> crop affine. detail: (S, S) float32 weights
    (0 - 1) of the frame's own fine detail (its high-pass at detail_sigma frame px, soft-limited
    to DETAIL_LIMIT grey levels) added to the warped face, or None. Returns the box
    (x0, y0, x1, y1), frame px, end-exclusive, that was written, or None when nothing was.
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
    a[a < ALPHA_FLOOR] = 0
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
    if detail is not None:
        d = cv2.warpAffine(detail, m_sub, (c1 - c0, r1 - r0), flags=flags, borderMode=cv2.BORDER_CONSTANT)
        warped += _fine_detail(dst, detail_sigma) * d[..., None]
    # dst + a * (warped - dst), in place; where a == 0 it is exactly dst, so those pixels keep
    # their bits.
    base = dst.astype(np.float32)
    warped -= base
    warped *= a[..., None]
    warped += base
    warped += 0.5
    dst[...] = np.clip(warped, 0, 255, out=warped).astype(np.uint8)
    return fx0, fy0, fx0 + a.shape[1], fy0 + a.shape[0]


def _fine_detail(frame: np.ndarray, sigma: float) -> np.ndarray:
    """(h, w, 3) float32: the frame's high-pass (frame - its Gaussian blur at sigma px), each
    value soft-limited to DETAIL_LIMIT grey levels (texture passes, strong edges do not)."""
    f = frame.astype(np.float32)
    high = f - cv2.GaussianBlur(f, (0, 0), max(sigma, 0.3), borderType=cv2.BORDER_REFLECT)
    return DETAIL_LIMIT * np.tanh(high / DETAIL_LIMIT)


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
