"""The blend's masks for one face, in its aligned crop: where the new face goes, and what is cut
out of it (occluders in front of the face, the mouth's interior), and where the frame's fine
detail is carried over.

Everything here is in the face's (S, S) crop and in shares of the face size (the square root of
the face-oval hull's area in the crop), so it scales with the face and the model's size.

- The region: the landmark hull (eroded), the decoder's learned mask, or their product
  (BlendSettings.mask).
- Occluders (BlendSettings.occlusion): `learned` cuts out what the decoder's mask, which training
  with pasted occluders teaches to leave out whatever covers the face, leaves out: the mask is
  read as a classifier (below LEARNED_CUT[0] occluded, above LEARNED_CUT[1] face, a smooth ramp
  between, each a share of the mask's own level over the face), and the cut is feathered
  inwards onto the face, not over the occluder, as segmenting tools threshold their occlusion
  masks; `hands` cuts out the hands the hands stage found over the face (Face.occlusion);
  `both`; `none`.
- The mouth (BlendSettings.mouth): `keep` always shows A's own mouth interior (the inner-lip
  polygon, a little dilated and feathered) through the swapped face; `swap` never; `auto` keeps
  it in proportion to how much wider A's mouth is open than the widest B's faceset showed (the
  model's `mouth_reach`, recorded at training): a decoder that never saw an open mouth draws a
  closed one over it. The other way round, `auto` also keeps A's whole mouth, lips included (the
  outer-lip hull, dilated and feathered), in proportion to how much narrower A's lip gap is than
  the narrowest B's faceset showed (the model's `mouth_floor`, recorded at training, less
  FLOOR_MARGIN): a decoder that only saw an open smile draws open lips and teeth over a closed
  mouth. A model without a recorded floor (trained before it was kept) never keeps the lips.
  Each weight is a smooth function of the gap, so it cannot pop.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from swapstream.core.geometry import (
    FACE_OVAL,
    INNER_LIPS,
    LEFT_BROW,
    LEFT_EYE,
    LIPS,
    RIGHT_BROW,
    RIGHT_EYE,
    hull_mask,
    mouth_gap,
    polygon_mask,
    transform_points,
)
from swapstream.core.packet import Face

MASK_MODES = ("hull", "learned", "hull+learned")
OCCLUSION_MODES = ("learned", "hands", "both", "none")
MOUTH_MODES = ("auto", "keep", "swap")

# Alpha below this (under half a grey level on any pixel) is rounded to zero, so the Gaussian
# tails of the feather do not touch pixels that would not visibly change anyway.
ALPHA_FLOOR = 1.0 / 512

# mouth: auto. A model whose training record has no mouth reach (trained before it was kept) is
# taken to draw mouths open this wide (core.geometry.mouth_gap: lips just parted).
UNKNOWN_REACH = 0.04
MIN_REACH = 0.02  # never keep A's mouth for a gap below this: closed lips are 0-0.02
MOUTH_RAMP = 0.02  # the keep weight goes from 0 to 1 over this much more gap than the reach
MOUTH_GROW = 0.03  # the inner-lip polygon grows by this share of the face before feathering
# The lips are kept where A's lip gap is below the model's mouth floor less this margin (closed
# lips measure 0-0.02, so a faceset whose narrowest mouths are just closed keeps nothing), the
# weight going from 0 to 1 over MOUTH_RAMP less gap.
FLOOR_MARGIN = 0.02
LIPS_GROW = 0.03  # the outer-lip hull grows by this share of the face before feathering
MOUTH_FEATHER = 0.015  # sigma of the mouth cut's edge, share of the face
HAND_GROW = 0.02  # a hand's region grows by this (finger width beyond the landmarks' hull)
HAND_FEATHER = 0.012
# The learned mask as an occluder classifier. Measured on bench_quality's occluder clip (lite64,
# 1400 steps with occluders): over the face 0.93 / 0.95 at the 25th percentile / median, over a
# real cup 0.14 / 0.31 / 0.53 at the median / 75th / 90th: product with the mask (the mask as an
# alpha) left the cup 19 % swapped at the median.
LEARNED_CUT = (0.4, 0.8)
OCCLUSION_GROW = 0.02  # the cut grows by this share of the face: the mask is a 64 px guess at the edge
OCCLUSION_FEATHER = 0.012
FEATURE_GROW = 0.03  # eyes, brows and lips: no detail carried over within this of them


def mouth_weight(face: Face, mode: str, reach: float | None,
                 floor: float | None = None) -> tuple[float, float]:
    """(inner, lips), each a float 0 to 1: how much of A's own mouth interior (the inner-lip
    polygon) and of A's whole mouth, lips included (the outer-lip hull), shows through the swap
    (see the module docstring). mode: BlendSettings.mouth. reach, floor: the widest and narrowest
    mouth gap (core.geometry.mouth_gap, share of the face height) of the model's target faceset,
    or None when the model did not record it. `keep`: (1, 0); `swap`: (0, 0)."""
    if mode == "swap":
        return 0.0, 0.0
    if mode == "keep":
        return 1.0, 0.0
    gap = mouth_gap(face.landmarks)
    lo = max(UNKNOWN_REACH if reach is None else float(reach), MIN_REACH)
    inner = float(np.clip((gap - lo) / MOUTH_RAMP, 0.0, 1.0))
    lips = 0.0
    if floor is not None:  # B's decoder never drew a mouth this closed: keep A's lips
        lips = float(np.clip((float(floor) - FLOOR_MARGIN - gap) / MOUTH_RAMP, 0.0, 1.0))
    return inner, lips


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _grow(mask: np.ndarray, px: float) -> np.ndarray:
    k = int(round(px))
    return cv2.dilate(mask, _disc(k)) if k > 0 else mask


def _blur(mask: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(mask, (0, 0), sigma) if sigma > 0.1 else mask.copy()


def _in_crop(face: Face, points: list[int], size: int) -> np.ndarray:
    return transform_points(face.landmarks[points], face.matrix)


def face_masks(face: Face, settings, mouth_reach: float | None = None,
               mouth_floor: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The masks of one face in its crop: (hard, soft), each (S, S) float32 in [0, 1].

    settings: a BlendSettings (mask, occlusion, mouth, erode, feather). mouth_reach, mouth_floor:
    the widest and narrowest mouth (core.geometry.mouth_gap: the 95th and 5th percentile) the
    target identity's faceset showed (None: unknown; no floor keeps no lips).
    hard: the region with the cuts, before feathering (colour statistics use > 0.5).
    soft: the region feathered, times the feathered cuts, faded to 0 at the crop edge so no
    square seam shows in the frame.
    """
    size = face.swapped.shape[0]
    hull = hull_mask(_in_crop(face, FACE_OVAL, size), (size, size))
    face_px = math.sqrt(max(float(hull.sum()), 1.0))
    learned = np.ones((size, size), np.float32) if face.mask is None else face.mask.astype(np.float32)

    full_hull = hull
    k = int(round(settings.erode * face_px))
    if k > 0 and settings.mask != "learned":
        # The crop edge counts as outside: a face cut off by the crop erodes from there too.
        hull = cv2.erode(hull, _disc(k), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    hard = {"hull": hull, "learned": learned, "hull+learned": hull * learned}[settings.mask]
    keep = np.ones((size, size), np.float32)  # 1 - the cuts, feathered
    if settings.occlusion in ("learned", "both") and settings.mask == "hull" and face.mask is not None:
        # against the mask's own level on this face (its 75th percentile over the hull): a model
        # whose mask is not yet sure of faces (early in training: ~0.5 everywhere) cuts nothing.
        # An occluder over more than ~3/4 of the face sets that level itself and is not cut:
        # a hand that large is the hands stage's to find.
        inside = learned[full_hull > 0.5]
        level = float(np.percentile(inside, 75)) if inside.size else 1.0
        lo, hi = LEARNED_CUT
        t = np.clip((learned / max(level, 0.05) - lo) / (hi - lo), 0, 1)
        cut = _grow((1 - t * t * (3 - 2 * t)) * full_hull, OCCLUSION_GROW * face_px)  # smoothstep
        hard = hard * (1 - cut)  # before the region's feather, which then ramps on the face's side
        keep *= 1 - np.clip(_blur(cut, OCCLUSION_FEATHER * face_px) * 2, 0, 1)  # the occluder fully out
    soft = _blur(hard, settings.feather * face_px)

    if settings.occlusion in ("hands", "both") and face.occlusion is not None:
        hand = _grow(face.occlusion.astype(np.float32), HAND_GROW * face_px)
        hard = hard * (1 - hand)
        keep *= 1 - np.clip(_blur(hand, HAND_FEATHER * face_px) * 2, 0, 1)  # the hand itself fully out
    w, w_lips = mouth_weight(face, settings.mouth, mouth_reach, mouth_floor)
    if w > 0:
        mouth = _grow(polygon_mask(_in_crop(face, INNER_LIPS, size), (size, size)), MOUTH_GROW * face_px)
        hard = hard * (1 - w * mouth)
        keep *= 1 - w * _blur(mouth, MOUTH_FEATHER * face_px)
    if w_lips > 0:  # out of the colour statistics (hard) too, as the interior above
        lips = _grow(hull_mask(_in_crop(face, LIPS, size), (size, size)), LIPS_GROW * face_px)
        hard = hard * (1 - w_lips * lips)
        keep *= 1 - w_lips * _blur(lips, MOUTH_FEATHER * face_px)
    soft = soft * keep

    sigma = settings.feather * face_px
    ramp = max(1.0, min(2.0 * sigma, size / 8))
    edge = np.minimum(np.arange(size), np.arange(size)[::-1]).astype(np.float32)
    window = np.clip(edge / ramp, 0, 1)  # (S,) 0 on the crop's outermost pixels
    soft *= window[:, None] * window[None, :]
    soft[soft < ALPHA_FLOOR] = 0
    return hard, np.clip(soft, 0, 1)


def detail_mask(face: Face, size: int) -> np.ndarray:
    """(S, S) float32 in [0, 1]: where the frame's fine detail may be carried over the swap: the
    face, less A's eyes, brows and lips (grown by FEATURE_GROW and feathered), so skin texture
    comes over and A's features do not."""
    hull = hull_mask(_in_crop(face, FACE_OVAL, size), (size, size))
    face_px = math.sqrt(max(float(hull.sum()), 1.0))
    features = np.zeros((size, size), np.float32)
    for part in (RIGHT_EYE, LEFT_EYE, RIGHT_BROW, LEFT_BROW, LIPS):
        features = np.maximum(features, hull_mask(_in_crop(face, part, size), (size, size)))
    features = _blur(_grow(features, FEATURE_GROW * face_px), FEATURE_GROW * face_px / 2)
    return np.clip(hull * (1 - 1.5 * features), 0, 1)
