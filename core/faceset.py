"""Facesets: a directory of aligned face PNGs plus a `landmarks.json` sidecar keyed by file name.

Every face is FACESET_SIZE px square, aligned with
`swapstream.core.geometry.alignment_matrix(landmarks, FACESET_SIZE, FACESET_COVERAGE)`: the stable-landmark
square spans the central FACESET_SIZE * FACESET_COVERAGE px. The sidecar:

    {"version": 1, "size": 256, "coverage": 0.5,
     "faces": {"000001.png": {"landmarks": [[x, y], ...478], "source": "clip.mp4", "frame": 12}}}

landmarks are pixels in the aligned image. A person may delete PNGs by hand: sidecar entries
without a file are ignored, PNGs without an entry are skipped with a warning. Files whose names
start with "_" (the extractor's _contact_sheet.png) are not faces and are left alone.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from swapstream.core.errors import FacesetError
from swapstream.core.geometry import FACE_OVAL, LEFT_EYE, LIPS, NUM_LANDMARKS, RIGHT_EYE, hull_mask

FACESET_SIZE = 256
FACESET_COVERAGE = 0.5
SIDECAR = "landmarks.json"
VERSION = 1
_NAME = re.compile(r"^(\d+)\.png$")
# Grow the eye and mouth hulls by this share of the image side, so lids, lash line and the skin
# around the lips (where a swap shows first) count as features too.
FEATURE_DILATION = 0.04


class FacesetWriter:
    """Adds aligned faces to a faceset directory (created if missing; an existing set is extended).

    The sidecar is written by `close()` (also on leaving a `with` block), atomically.
    """

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.faces: dict[str, dict] = {}
        sidecar = self.dir / SIDECAR
        if sidecar.exists():
            self.faces = _read_sidecar(self.dir)["faces"]
        numbers = [int(m.group(1)) for p in self.dir.iterdir() if (m := _NAME.match(p.name))]
        numbers += [int(m.group(1)) for n in self.faces if (m := _NAME.match(n))]
        self._next = max(numbers, default=0) + 1

    def add(self, face: np.ndarray, landmarks: np.ndarray, source: str, frame: int) -> str:
        """face: (256, 256, 3) uint8 RGB; landmarks: (478, 2) float, pixels in the face. -> file name."""
        if face.dtype != np.uint8 or face.shape != (FACESET_SIZE, FACESET_SIZE, 3):
            raise ValueError(f"face must be ({FACESET_SIZE}, {FACESET_SIZE}, 3) uint8, "
                             f"got {face.dtype}{list(face.shape)}")
        landmarks = np.asarray(landmarks, np.float32)
        if landmarks.shape != (NUM_LANDMARKS, 2):
            raise ValueError(f"landmarks must be ({NUM_LANDMARKS}, 2), got {list(landmarks.shape)}")
        name = f"{self._next:06d}.png"
        self._next += 1
        if not cv2.imwrite(str(self.dir / name), cv2.cvtColor(face, cv2.COLOR_RGB2BGR)):
            raise FacesetError(f"cannot write {self.dir / name}; check the directory is writable "
                               f"and the disk is not full")
        self.faces[name] = {"landmarks": np.round(landmarks.astype(np.float64), 2).tolist(),
                            "source": str(source), "frame": int(frame)}
        return name

    def close(self) -> None:
        data = {"version": VERSION, "size": FACESET_SIZE, "coverage": FACESET_COVERAGE,
                "faces": dict(sorted(self.faces.items()))}
        tmp = self.dir / f".{SIDECAR}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(data, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.dir / SIDECAR)

    def __enter__(self) -> FacesetWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class Faceset:
    """images (N, 256, 256, 3) uint8 RGB; landmarks (N, 478, 2) float32, pixels in the images."""

    dir: Path
    images: np.ndarray
    landmarks: np.ndarray
    names: list[str]
    size: int = FACESET_SIZE
    coverage: float = FACESET_COVERAGE
    sources: list[tuple[str, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)


def read_landmarks(directory: str | Path) -> dict[str, np.ndarray]:
    """The sidecar's landmarks of the faces whose PNG is still there: name -> (478, 2) float32,
    pixels in the aligned image. FacesetError when the sidecar is missing or unreadable."""
    d = Path(directory)
    faces = _read_sidecar(d)["faces"]
    return {n: np.asarray(f["landmarks"], np.float32) for n, f in faces.items() if (d / n).is_file()}


def _read_sidecar(directory: Path) -> dict:
    sidecar = directory / SIDECAR
    try:
        data = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FacesetError(f"{sidecar} is unreadable or corrupt ({e}); re-run `swapstream extract` "
                           f"into a new directory") from None
    if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(
            data.get("faces"), dict):
        raise FacesetError(f"{sidecar} is not a version-{VERSION} faceset sidecar; re-run "
                           f"`swapstream extract` into a new directory")
    if data.get("size") != FACESET_SIZE:
        raise FacesetError(f"{sidecar} says size {data.get('size')}, expected {FACESET_SIZE}; "
                           f"re-run `swapstream extract` with this version")
    return data


def load_faceset(directory: str | Path) -> Faceset:
    """Read a faceset; raises FacesetError if the directory, sidecar or every usable face is missing."""
    d = Path(directory)
    extract = f"run `swapstream extract VIDEO -o {d}` first"
    if not d.is_dir():
        raise FacesetError(f"faceset {d} does not exist or is not a directory; {extract}")
    if not (d / SIDECAR).exists():
        raise FacesetError(f"faceset {d} has no {SIDECAR} (landmarks sidecar); {extract}")
    data = _read_sidecar(d)
    entries = data["faces"]
    # names starting with "_" are ours but not faces (the contact sheet)
    on_disk = sorted(p.name for p in d.glob("*.png") if not p.name.startswith("_"))
    orphans = [n for n in on_disk if n not in entries]
    if orphans:
        warnings.warn(f"faceset {d}: {len(orphans)} PNG(s) without landmarks are skipped "
                      f"(e.g. {orphans[0]})", stacklevel=2)
    listed = [n for n in on_disk if n in entries]
    # filled in place: a large set is GBs, so avoid a list of arrays plus a stacked copy
    images = np.empty((len(listed), FACESET_SIZE, FACESET_SIZE, 3), np.uint8)
    lms, names, sources = [], [], []
    for name in listed:
        entry = entries[name]
        lm = np.asarray(entry.get("landmarks", []), np.float32)
        img = cv2.imread(str(d / name), cv2.IMREAD_COLOR)
        if img is None or img.shape != (FACESET_SIZE, FACESET_SIZE, 3) or lm.shape != (NUM_LANDMARKS, 2):
            warnings.warn(f"faceset {d}: {name} is unreadable, not {FACESET_SIZE} px or has bad "
                          f"landmarks; skipped", stacklevel=2)
            continue
        cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=images[len(names)])
        lms.append(lm)
        names.append(name)
        sources.append((str(entry.get("source", "")), int(entry.get("frame", -1))))
    if not names:
        raise FacesetError(f"faceset {d} has no usable faces (0 PNGs with landmarks); {extract}")
    return Faceset(d, images[:len(names)], np.stack(lms), names, FACESET_SIZE,
                   float(data.get("coverage", FACESET_COVERAGE)), sources)


def hull_masks(landmarks: np.ndarray, size: int) -> np.ndarray:
    """(N, 478, 2) landmarks -> (N, size, size) uint8 in {0, 255}: the convex hull of FACE_OVAL."""
    return np.stack([(hull_mask(lm[FACE_OVAL], (size, size)) * 255).astype(np.uint8)
                     for lm in landmarks])


def feature_masks(landmarks: np.ndarray, size: int, dilation: float = FEATURE_DILATION) -> np.ndarray:
    """(N, 478, 2) landmarks, pixels -> (N, size, size) uint8 in {0, 255}: eyes and mouth.

    The filled convex hulls of RIGHT_EYE, LEFT_EYE and LIPS, each dilated by an elliptical
    kernel of radius round(dilation * size) px; the cheeks and the nose stay 0.
    """
    r = round(dilation * size)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    out = np.empty((len(landmarks), size, size), np.uint8)
    for i, lm in enumerate(landmarks):
        m = sum(hull_mask(lm[idx], (size, size)) for idx in (RIGHT_EYE, LEFT_EYE, LIPS))  # (S, S)
        m = (np.minimum(m, 1) * 255).astype(np.uint8)
        out[i] = cv2.dilate(m, kernel) if r > 0 else m
    return out
