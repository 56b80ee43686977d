"""Colour transfer and sharpening of a swapped face crop, used by the blend stage.

Every function takes and returns (S, S, 3) uint8 RGB crops; masks are (S, S) arrays whose values
> 0.5 mark the face pixels that statistics are taken over. All work is on the small aligned crop,
never on the full frame.
"""

from __future__ import annotations

import cv2
import numpy as np

COLOR_MODES = ("none", "reinhard", "hist")
SHARPEN_MODES = ("none", "unsharp", "gaussian", "box")

# Fewer face pixels than this and the statistics are noise: use the whole crop instead.
_MIN_PIXELS = 16


def _select(mask: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """(S, S) uint8, 1 on the pixels to take statistics over (the form cv2's mask arguments take)."""
    if mask is not None:
        sel = (np.asarray(mask) > 0.5).astype(np.uint8)
        if cv2.countNonZero(sel) >= _MIN_PIXELS:
            return sel
    return np.ones(shape, np.uint8)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> float32 CIELAB: L in [0, 100], a and b in about [-127, 127]."""
    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """float32 CIELAB -> uint8 RGB (out-of-gamut colours clipped)."""
    rgb = cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_Lab2RGB)
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def reinhard(source: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Reinhard et al. 2001 colour transfer in CIELAB: give source the target's mean and std.

    source: (S, S, 3) uint8 RGB, the swapped face; target: (S, S, 3) uint8 RGB, the original
    face it replaces; mask: (S, S) face pixels (> 0.5) that the statistics are taken over, the
    same pixels in both crops since they are aligned. Returns (S, S, 3) uint8 RGB.
    """
    sel = _select(mask, source.shape[:2])
    src, tgt = rgb_to_lab(source), rgb_to_lab(target)
    mu_s, sd_s = (v.ravel().astype(np.float32) for v in cv2.meanStdDev(src, mask=sel))
    mu_t, sd_t = (v.ravel().astype(np.float32) for v in cv2.meanStdDev(tgt, mask=sel))
    # A flat source channel has no spread to scale; only shift it.
    gain = np.where(sd_s > 1e-3, sd_t / np.maximum(sd_s, 1e-3), 1.0).astype(np.float32)
    return lab_to_rgb((src - mu_s) * gain + mu_t)


def hist_match(source: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-channel histogram matching of source to target over the masked face pixels.

    Same layout as reinhard. Each RGB channel of source is mapped through a lookup table that
    takes its masked CDF onto the target's; pixels outside the mask use the same table.
    """
    sel = _select(mask, source.shape[:2])
    source, target = np.ascontiguousarray(source), np.ascontiguousarray(target)
    out = np.empty_like(source)
    levels = np.arange(256, dtype=np.float64)
    for c in range(3):
        cdf_s = np.cumsum(cv2.calcHist([source], [c], sel, [256], [0, 256]).ravel(), dtype=np.float64)
        cdf_t = np.cumsum(cv2.calcHist([target], [c], sel, [256], [0, 256]).ravel(), dtype=np.float64)
        cdf_s /= cdf_s[-1]
        cdf_t /= cdf_t[-1]
        lut = np.interp(cdf_s, cdf_t, levels)
        out[..., c] = np.clip(lut + 0.5, 0, 255).astype(np.uint8)[source[..., c]]
    return out


def transfer_color(source: np.ndarray, target: np.ndarray, mask: np.ndarray | None, mode: str) -> np.ndarray:
    """Dispatch on mode in COLOR_MODES; "none" returns source itself."""
    if mode == "none":
        return source
    if mode == "reinhard":
        return reinhard(source, target, mask)
    if mode == "hist":
        return hist_match(source, target, mask)
    raise ValueError(f"unknown colour mode {mode!r}; choose from {', '.join(COLOR_MODES)}")


def sharpen(image: np.ndarray, mode: str, amount: float, radius: float = 1.0) -> np.ndarray:
    """Sharpen a (S, S, 3) uint8 RGB crop; amount 0 or mode "none" returns image itself.

    All three are unsharp masking, out = image + amount * (image - blur(image)), and differ in
    the blur and where it applies:
      unsharp:  Gaussian blur of sigma radius, on CIELAB lightness only (no colour fringes), and
                only where the detail exceeds 2 levels, so flat skin and noise are left alone;
      gaussian: Gaussian blur of sigma radius, on all three RGB channels;
      box:      box blur of side 2 * radius + 1, on all three RGB channels.
    radius: in crop pixels; the decoder's blur is in crop pixels, so scale it with S, not the face.
    """
    if mode == "none" or amount == 0:
        return image
    if mode == "unsharp":
        lab = rgb_to_lab(image)
        lum = lab[..., 0]
        detail = lum - cv2.GaussianBlur(lum, (0, 0), radius)
        # Lightness is 0..100: 2 of 255 RGB levels is about 0.8 L units.
        lab[..., 0] = lum + amount * detail * (np.abs(detail) > 0.8)
        return lab_to_rgb(lab)
    img = image.astype(np.float32)
    if mode == "gaussian":
        blur = cv2.GaussianBlur(img, (0, 0), radius)
    elif mode == "box":
        side = 2 * max(1, int(round(radius))) + 1
        blur = cv2.blur(img, (side, side))
    else:
        raise ValueError(f"unknown sharpen mode {mode!r}; choose from {', '.join(SHARPEN_MODES)}")
    return np.clip(img + amount * (img - blur) + 0.5, 0, 255).astype(np.uint8)
