"""Reference faces of a person (`--only REF`, `--like REF`): photos, a faceset, a video -> embeddings.

- A photo: its largest face (a group photo: the largest face is taken, and said).
- A folder with a faceset's landmarks.json: every face of the faceset (cut with the landmarks
  stored beside it). Another folder: each photo in it, as above; photos without a face are
  skipped.
- A video: up to VIDEO_SAMPLES frames spread over it, the largest face of each; when more than
  one person shows, the person seen most is kept (and said).

Every problem is a ReferenceError naming the file and the fix: a missing or unreadable file, a
reference without any face.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from swapstream.core.errors import InputError, SwapstreamError
from swapstream.engines.identity import FaceEmbedder, group_identities

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SAMPLES = 24
MIN_FACE = 32  # px: smaller reference faces carry too little of the person


class ReferenceError(InputError):
    """A reference that gives no face of the person."""


@dataclass
class Reference:
    """embeddings: (M, 128) float32 unit vectors of the person; notes: lines for the user."""

    embeddings: np.ndarray
    sources: list[str]
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.embeddings)


def _largest(frame: np.ndarray, detect) -> tuple[np.ndarray | None, int]:
    """The landmarks ((478, 2) float32) of the largest face in an RGB frame, and how many faces."""
    from swapstream.core.packet import FramePacket

    packet = FramePacket(0, None, Fraction(1, 1), np.ascontiguousarray(frame))
    faces = detect.process([packet])[0].faces
    if not faces:
        return None, 0
    best = max(faces, key=lambda f: np.ptp(f.landmarks[:, 1]))
    return best.landmarks, len(faces)


def _read_image(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ReferenceError(f"reference {path} cannot be read as an image; give a JPEG or PNG photo "
                             f"of the person, a faceset folder or a video")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _faceset(folder: Path, embedder: FaceEmbedder) -> np.ndarray:
    from swapstream.core.faceset import load_faceset

    fs = load_faceset(folder)
    return embedder.embed_faces(list(zip(fs.images, fs.landmarks)))


def _photos(paths: list[Path], embedder: FaceEmbedder, detect, notes: list[str]) -> np.ndarray:
    items = []
    for p in paths:
        img = _read_image(p)
        lm, n = _largest(img, detect)
        if lm is None:
            continue
        if n > 1:
            notes.append(f"reference {p}: {n} faces, the largest is taken")
        items.append((img, lm))
    return embedder.embed_faces(items)


def _video(path: Path, embedder: FaceEmbedder, detect, notes: list[str]) -> np.ndarray:
    from swapstream.stages.sources.file import DecodeSettings, DecodeStage

    dec = DecodeStage(DecodeSettings(str(path)))
    info = dec.open()  # InputError for a broken or non-video file
    step = max(1, (info.frames or VIDEO_SAMPLES) // VIDEO_SAMPLES)
    items = []
    try:
        for packet in dec.packets():
            if packet.index % step == 0:
                lm, _ = _largest(packet.frame, detect)
                if lm is not None:
                    items.append((packet.frame, lm))
                if len(items) >= VIDEO_SAMPLES:
                    break
    finally:
        dec.close()
    e = embedder.embed_faces(items)
    if len(e) > 1:
        groups = group_identities(e)
        if groups.max() > 0:
            notes.append(f"reference {path}: {groups.max() + 1} people seen; the one in "
                         f"{(groups == 0).sum()} of {len(e)} sampled frames is taken")
        e = e[groups == 0]
    return e


def load_reference(paths: list[str | Path], embedder: FaceEmbedder | None = None) -> Reference:
    """Embeddings of the person shown by `paths` (photos, folders, videos). ReferenceError when a
    path is missing or unreadable, or gives no face."""
    from swapstream.stages.face.detect import DetectSettings, DetectStage

    if not paths:
        raise ReferenceError("no reference given; pass photos, a faceset folder or a video of the person")
    embedder = embedder or FaceEmbedder()
    detect = DetectStage(DetectSettings(min_face=MIN_FACE, max_faces=8))
    parts, notes = [], []
    try:
        for path in map(Path, paths):
            if not path.exists():
                raise ReferenceError(f"reference {path} not found; give photos, a faceset folder or "
                                     f"a video of the person")
            if path.is_dir() and (path / "landmarks.json").is_file():
                try:
                    e = _faceset(path, embedder)
                except (OSError, ValueError, SwapstreamError) as err:
                    raise ReferenceError(f"reference faceset {path} cannot be read ({err}); "
                                         f"extract it again with swapstream extract") from None
            elif path.is_dir():
                photos = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS)
                if not photos:
                    raise ReferenceError(f"reference folder {path} holds no photos; give photos, a "
                                         f"faceset folder or a video of the person")
                e = _photos(photos, embedder, detect, notes)
            elif path.suffix.lower() in IMAGE_EXTS:
                e = _photos([path], embedder, detect, notes)
            else:
                e = _video(path, embedder, detect, notes)
            if len(e) == 0:
                raise ReferenceError(f"no face found in reference {path}; give a photo or video where "
                                     f"the person's face is in view and at least {MIN_FACE} px tall")
            parts.append(e)
    finally:
        detect.close()
    return Reference(np.concatenate(parts), [str(p) for p in paths], notes)
