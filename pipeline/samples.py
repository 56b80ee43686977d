"""Sample media built from public-domain faces that ship in packages; nothing is downloaded.

`astronaut` is scikit-image's astronaut (Eileen Collins), `grace_hopper` matplotlib's sample photo,
`cameraman` scikit-image's camera (grey, turned towards his camera: a third person for scenes of
several people; align's default max_residual leaves his near-profile face unswapped).
A clip renders one or more of them as heads that move, turn and change scale over a textured
background, with a sine-tone audio track. Used by the demo and by the tests' fixtures.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from fractions import Fraction
from functools import cache
from pathlib import Path

import av
import cv2
import numpy as np

# Landmark boxes (x0, y0, x1, y1) of the face in each source image, measured with FaceMesh.
_FACE_BOX = {"astronaut": (179, 71, 271, 177), "grace_hopper": (173, 132, 356, 334),
             "cameraman": (197, 128, 256, 193)}
FACES = tuple(_FACE_BOX)


@cache
def source_image(name: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB photo of the named sample face."""
    if name == "astronaut":
        from skimage import data

        return np.ascontiguousarray(data.astronaut())
    if name == "grace_hopper":
        import matplotlib.cbook
        from PIL import Image

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
            return np.asarray(Image.open(f).convert("RGB"))
    if name == "cameraman":
        from skimage import data

        return np.ascontiguousarray(np.repeat(data.camera()[..., None], 3, axis=2))
    raise ValueError(f"unknown sample face {name!r}; choose from {', '.join(FACES)}")


@cache
def head(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Square head cut-out: ((S, S, 3) uint8 RGB, (S, S) float32 alpha in [0, 1]); face ~ S/2."""
    img = source_image(name)
    x0, y0, x1, y1 = _FACE_BOX[name]
    cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, 2.0 * max(x1 - x0, y1 - y0)
    s = 256
    m = np.array([[s / side, 0, s / 2 - cx * s / side], [0, s / side, s / 2 - cy * s / side]])
    rgb = cv2.warpAffine(img, m, (s, s), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)
    alpha = np.zeros((s, s), np.float32)
    cv2.ellipse(alpha, (s // 2, s // 2 + 8), (int(s * 0.36), int(s * 0.46)), 0, 0, 360, 1.0, -1)
    return rgb, cv2.GaussianBlur(alpha, (0, 0), 6)


def background(width: int, height: int, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 smooth coloured texture: gradient plus blurred noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([60 + 80 * xx / width, 90 + 40 * yy / height, 140 - 60 * xx / width], -1)
    noise = cv2.GaussianBlur(rng.normal(0, 25, (height, width, 3)).astype(np.float32), (0, 0), 3)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def render_frames(faces: Sequence[str], n: int, width: int = 640, height: int = 360,
                  face_height: float = 0.5, seed: int = 0, pan: float = 0.0):
    """Yield n frames, (height, width, 3) uint8 RGB, the heads moving, turning and scaling.

    face_height: head cut-out side as a share of the frame height (the face is about half of it).
    pan: the camera pans over the background this many px a frame (0: a still camera).
    """
    span = int(np.ceil(pan * n))
    wide = background(width + span, height, seed)
    if pan:  # a scene with detail (blocks of 12 px), so the pan changes the picture everywhere
        rng = np.random.default_rng(seed + 1)
        blocks = rng.normal(0, 30, (-(-height // 12), -(-(width + span) // 12), 3)).astype(np.float32)
        detail = cv2.resize(blocks, (width + span, height), interpolation=cv2.INTER_NEAREST)
        wide = np.clip(wide.astype(np.float32) + detail, 0, 255).astype(np.uint8)
    cutouts = [head(f) for f in faces]
    k = len(faces)
    for i in range(n):
        t = i / max(n - 1, 1)
        x0 = int(round(pan * i))
        frame = wide[:, x0:x0 + width].astype(np.float32)
        for j, (rgb, alpha) in enumerate(cutouts):
            phase = 2 * np.pi * (t + j / max(k, 1))
            side = face_height * height * (1.0 + 0.2 * np.sin(phase))
            cx = width * (j + 0.5) / k + 0.12 * width / k * np.sin(phase)
            cy = height * (0.5 + 0.06 * np.cos(phase))
            angle = 12 * np.sin(2 * phase + j)
            squeeze = 1.0 - 0.12 * (0.5 + 0.5 * np.sin(3 * phase))  # a turn of the head
            s = side / rgb.shape[0]
            rot = cv2.getRotationMatrix2D((0, 0), angle, 1.0)[:, :2] @ np.diag([s * squeeze, s])
            m = np.hstack([rot, (np.array([cx, cy]) - rot @ [rgb.shape[1] / 2, rgb.shape[0] / 2])[:, None]])
            warped = cv2.warpAffine(rgb, m, (width, height), flags=cv2.INTER_LINEAR)
            a = cv2.warpAffine(alpha, m, (width, height), flags=cv2.INTER_LINEAR)[..., None]
            frame = frame * (1 - a) + warped.astype(np.float32) * a
        yield np.clip(frame, 0, 255).astype(np.uint8)


def write_clip(path: str | Path, frames, fps: int = 30, audio: bool = True,
               pts: Sequence[int] | None = None, time_base: Fraction | None = None,
               codec: str = "libx264", pix_fmt: str = "yuv420p") -> Path:
    """Encode frames ((H, W, 3) uint8 RGB) to a video file, with a 440 Hz AAC tone if audio.

    pts/time_base give explicit (e.g. variable-rate) timestamps; default is i / fps.
    """
    path = Path(path)
    frames = iter(frames)  # streamed: a long clip is never held in memory whole
    first = next(frames)
    tb = time_base or Fraction(1, fps)
    pts = list(pts) if pts is not None else None
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=fps)
        vs.width, vs.height = first.shape[1], first.shape[0]
        vs.pix_fmt = pix_fmt
        vs.time_base = tb
        vs.codec_context.time_base = tb
        if codec == "libx264":
            vs.options = {"crf": "16", "preset": "veryfast"}
        aus = None
        if audio:
            aus = out.add_stream("aac", rate=48000, layout="mono")
        written = []
        for i, f in enumerate(itertools.chain([first], frames)):
            if pts is not None and i >= len(pts):
                break
            p = pts[i] if pts is not None else i
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts, vf.time_base = p, tb
            out.mux(vs.encode(vf))
            written.append(p)
        pts = written
        out.mux(vs.encode())
        if aus is not None:
            duration = float((pts[-1] + (pts[-1] - pts[-2] if len(pts) > 1 else 1)) * tb)
            sr, chunk = 48000, 1024
            total = int(duration * sr)
            for start in range(0, total, chunk):
                n = min(chunk, total - start)
                tt = (start + np.arange(n)) / sr
                samples = (0.2 * np.sin(2 * np.pi * 440 * tt)).astype(np.float32)[None]
                af = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
                af.sample_rate, af.pts, af.time_base = sr, start, Fraction(1, sr)
                out.mux(aus.encode(af))
            out.mux(aus.encode())
    return path


def make_clip(path: str | Path, faces: Sequence[str] = ("astronaut",), seconds: float = 4.0,
              fps: int = 30, width: int = 640, height: int = 360, face_height: float = 0.5,
              audio: bool = True, seed: int = 0, pan: float = 0.0) -> Path:
    """Render and write a sample clip; returns its path. pan: see render_frames."""
    n = int(round(seconds * fps))
    return write_clip(path, render_frames(faces, n, width, height, face_height, seed, pan), fps, audio)
