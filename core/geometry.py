"""Face geometry shared by every layer: landmark index sets, Umeyama, templates, crops, box overlap.

Landmarks are MediaPipe FaceMesh's 478 points: (478, 2) float32, x then y, in pixels of the image
they were found in. The template (core/data/face_template.npy, made by tools/make_face_template.py)
holds the same 478 points for a canonical frontal face, scaled so that STABLE_LANDMARKS fill the
unit square [0, 1]^2.
"""

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

NUM_LANDMARKS = 478

FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
             377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]
RIGHT_EYE = [33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173]
LEFT_EYE = [263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398]
RIGHT_BROW = [46, 53, 52, 65, 55, 70, 63, 105, 66, 107]
LEFT_BROW = [276, 283, 282, 295, 285, 300, 293, 334, 296, 336]
NOSE = [1, 2, 4, 5, 6, 168, 197, 195, 98, 327, 129, 358]
LIPS = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409]
# The inner edge of the lips, in order around the mouth's opening (upper lip from the right
# corner 78 to the left corner 308, then the lower lip back): what shows between them is the
# mouth's interior (teeth, tongue, dark).
INNER_LIPS = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95]
# Points that move with the skull, not the jaw: what alignment fits (the jaw line would make the
# crop swing every time the mouth opens).
STABLE_LANDMARKS = RIGHT_EYE + LEFT_EYE + RIGHT_BROW + LEFT_BROW + NOSE + LIPS


@lru_cache(maxsize=1)
def face_template() -> np.ndarray:
    """(478, 2) float32 canonical face; STABLE_LANDMARKS span the unit square."""
    return np.load(Path(__file__).with_name("data") / "face_template.npy")


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation) taking src to dst.

    src, dst: (N, 2) float arrays of matching points. Returns (2, 3) float64 matrix M with
    dst ~= src @ M[:, :2].T + M[:, 2]. (Umeyama 1991, without reflection.)
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    var_s = (s**2).sum() / len(src)
    scale = (sig * sign).sum() / var_s if var_s > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


# What a crop frames (training's --face, kept in the checkpoint, used by align at conversion):
# (share of `coverage` the stable square keeps, template y at the crop's centre). "face": the
# stable square centred (brows to lower lip, the 2017 crop). "whole": the square smaller and
# lower, so the forehead above MediaPipe's top points (10, 109, 338: template y -0.15) and the
# chin (152: y 1.22) fit, as faceswap's "face" centering and DeepFaceLab's whole_face; at
# coverage 0.7, point 10 lies 19% of the side below the top and the chin 4% above the bottom.
FACE_TYPES: dict[str, tuple[float, float]] = {"face": (1.0, 0.5), "whole": (0.8, 0.4)}


def face_type(face: str) -> tuple[float, float]:
    """(coverage share, template y at the crop's centre) of a face type; ValueError if unknown."""
    if face not in FACE_TYPES:
        raise ValueError(f"face type {face!r} is not one of {', '.join(FACE_TYPES)}")
    return FACE_TYPES[face]


def template_in_crop(size: int, coverage: float, face: str = "face") -> np.ndarray:
    """(478, 2) float64 template placed in a size x size crop.

    coverage in (0, 1]: the share of the crop's side taken by the stable-landmark square
    (brows to lower lip). 1.0 is the tight 2017 crop; 0.6 leaves room for the chin and cheeks.
    face: a FACE_TYPES key ("whole" shrinks the square and moves it down for the forehead).
    """
    share, centre_y = face_type(face)
    return (face_template().astype(np.float64) - (0.5, centre_y)) * (size * coverage * share) + size / 2


def alignment_matrix(landmarks: np.ndarray, size: int, coverage: float, face: str = "face") -> np.ndarray:
    """(2, 3) float64 matrix taking frame pixels to crop pixels for a face with these landmarks."""
    tpl = template_in_crop(size, coverage, face)
    return umeyama(landmarks[STABLE_LANDMARKS], tpl[STABLE_LANDMARKS])


def transform_points(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine matrix to (N, 2) points; returns (N, 2) float64."""
    return np.asarray(points, np.float64) @ m[:, :2].T + m[:, 2]


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine matrix, as (2, 3) float64."""
    return cv2.invertAffineTransform(np.asarray(m, np.float64))


def hull_mask(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) float32 mask in [0, 1]: 1 inside the convex hull of (N, 2) points, 0 outside."""
    mask = np.zeros(shape, np.uint8)
    hull = cv2.convexHull(np.round(points).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1)
    return mask.astype(np.float32)


def polygon_mask(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) float32 mask in [0, 1]: 1 inside the polygon of (N, 2) points taken in order
    (need not be convex), 0 outside."""
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(np.asarray(points) * 16).astype(np.int32)], 1, shift=4)  # 1/16 px
    return mask.astype(np.float32)


def mouth_gap(landmarks: np.ndarray) -> float:
    """How open a mouth is: the inner lips' gap (points 13 and 14) over the face's height (10 to
    152), from (478, 2) landmarks in any pixels. Closed lips 0-0.02; a smile with parted lips
    0.06-0.09; a wide-open mouth 0.2 and more."""
    lm = np.asarray(landmarks, np.float64)
    height = float(np.linalg.norm(lm[10] - lm[152]))
    return float(np.linalg.norm(lm[13] - lm[14])) / max(height, 1e-6)


def crop_face(frame: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Warp (H, W, 3) uint8 frame into a (size, size, 3) uint8 crop with the (2, 3) matrix.

    Large faces are first warped at a multiple of the size and then area-averaged down, so that
    a 600 px face shrunk to 64 px does not alias.
    """
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    k = int(min(4, max(1, np.floor(1 / max(scale, 1e-6)))))
    if k == 1:
        return cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
    big = cv2.warpAffine(frame, matrix * [[k], [k]], (size * k, size * k), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
    return cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA)


def iou(a: tuple, b: tuple) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes, 0 to 1 (0 for empty boxes)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
