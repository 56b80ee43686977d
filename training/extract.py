"""`swapstream extract`: find, align and save the faces of videos and image folders as a faceset.

Uses the same decode / detect / align stages as conversion, so training crops and conversion
crops are cut the same way. Writes aligned FACESET_SIZE px PNGs, the landmarks sidecar and a
contact sheet (`_contact_sheet.png`) to look over what was kept.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from stages.align import AlignSettings, AlignStage
from stages.decode import DecodeSettings, DecodeStage, probe
from stages.detect import DetectSettings, DetectStage
from stages.errors import ConfigError, FacesetError, InputError, SwapstreamError
from stages.geometry import FACE_OVAL, hull_mask, transform_points
from stages.packet import FramePacket
from training.faceset import FACESET_COVERAGE, FACESET_SIZE, FacesetWriter
from training.paths import check_writable_dir

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
CONTACT_SHEET = "_contact_sheet.png"


@dataclass
class ExtractSettings:
    """every: keep every Nth frame of a video; min_size: smallest face height (frame px) kept;
    blur: minimum sharpness (variance of the Laplacian inside the face, 0 = keep all)."""

    every: int = 1
    min_size: int = 64
    blur: float = 0.0
    max_faces: int = 8

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ConfigError(f"--every {self.every} must be 1 or more")
        if self.min_size < 16:
            raise ConfigError(f"--min-size {self.min_size} must be 16 px or more")


@dataclass
class ExtractReport:
    faces: int = 0
    frames: int = 0
    too_small: int = 0
    too_blurry: int = 0
    sources_without_faces: list[str] = field(default_factory=list)
    contact_sheet: Path | None = None


def sharpness(face: np.ndarray, landmarks: np.ndarray) -> float:
    """Variance of the Laplacian of the grey face inside its hull; (S, S, 3) uint8 -> float."""
    grey = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY)
    lap = cv2.Laplacian(grey, cv2.CV_32F)
    mask = hull_mask(landmarks[FACE_OVAL], grey.shape) > 0
    return float(lap[mask].var()) if mask.any() else 0.0


def _image_packets(folder: Path) -> Iterator[FramePacket]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    for i, p in enumerate(files):
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            continue
        # follows=None: each photo starts afresh, no face is tracked from one into the next
        yield FramePacket(i, None, Fraction(1, 1), cv2.cvtColor(img, cv2.COLOR_BGR2RGB), follows=None)


def _check_source(src: Path) -> int | None:
    """Raise InputError for a source that cannot be read; returns the image count of a folder."""
    if not src.exists():
        raise InputError(f"extract source not found: {src}; pass a video file or a folder of images")
    if src.is_dir():
        n = sum(1 for p in src.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if n == 0:
            raise InputError(f"folder {src} holds no images ({', '.join(sorted(IMAGE_EXTS))}); "
                             f"pass a video or a folder of face photos")
        return n
    probe(src)  # InputError: not a video, no video stream, truncated
    return None


def _sources(src: Path, every: int) -> tuple[Iterator[FramePacket], int | None, DecodeStage | None]:
    if src.is_dir():
        return _image_packets(src), _check_source(src), None
    dec = DecodeStage(DecodeSettings(str(src)))
    info = dec.open()
    return _every(dec.packets(), every), (info.frames // every if info.frames else None), dec


def _every(packets: Iterator[FramePacket], every: int) -> Iterator[FramePacket]:
    """Every `every`th packet; each continues the one kept before it (tracks carry over the gap)."""
    last = None
    for p in packets:
        if p.index % every == 0:
            p.follows, last = (last if p.follows is not None else None), p.index
            yield p


def extract(sources: list[str | Path], out: str | Path, settings: ExtractSettings | None = None,
            progress: bool = True) -> ExtractReport:
    """Extract every face of `sources` (videos and/or image folders) into faceset `out`."""
    s = settings or ExtractSettings()
    check_writable_dir(out)
    for src in map(Path, sources):  # all of them, before hours of work on the first
        _check_source(src)
    created = not Path(out).exists()
    try:
        return _extract(sources, Path(out), s, progress)
    except SwapstreamError:
        if created:  # leave nothing behind that looks like a faceset
            shutil.rmtree(out, ignore_errors=True)
        raise


def _extract(sources: list[str | Path], out: Path, s: ExtractSettings, progress: bool) -> ExtractReport:
    report = ExtractReport()
    detect = DetectStage(DetectSettings(min_face=max(16, min(s.min_size, 64)), max_faces=s.max_faces))
    detect.setup()
    writer = FacesetWriter(out)
    thumbs: list[np.ndarray] = []
    try:
        for src in map(Path, sources):
            packets, total, dec = _sources(src, s.every)
            align = AlignStage(AlignSettings(size=FACESET_SIZE, coverage=FACESET_COVERAGE,
                                             smoothing=False))
            found = 0
            bar = tqdm(packets, total=total, unit="frame", desc=f"extract {src.name}",
                       disable=not progress, leave=False)
            try:
                for packet in bar:
                    report.frames += 1
                    for face in align.process(detect.process([packet]))[0].faces:
                        if np.ptp(face.landmarks[:, 1]) < s.min_size:
                            report.too_small += 1
                            continue
                        if face.crop is None:
                            continue
                        lm = transform_points(face.landmarks, face.matrix).astype(np.float32)
                        if s.blur > 0 and sharpness(face.crop, lm) < s.blur:
                            report.too_blurry += 1
                            continue
                        writer.add(face.crop, lm, src.name, packet.index)
                        found += 1
                        if len(thumbs) < 400:
                            thumbs.append(cv2.resize(face.crop, (96, 96), interpolation=cv2.INTER_AREA))
                    bar.set_postfix(faces=report.faces + found, refresh=False)
            finally:
                bar.close()
                if dec is not None:
                    dec.close()
            report.faces += found
            if not found:
                report.sources_without_faces.append(str(src))
    finally:
        writer.close()
        detect.close()
    if report.faces == 0:
        raise FacesetError(f"no faces of at least {s.min_size} px found in {', '.join(map(str, sources))}; "
                           f"check that the sources show faces, or lower --min-size / --blur")
    report.contact_sheet = Path(out) / CONTACT_SHEET
    cv2.imwrite(str(report.contact_sheet), cv2.cvtColor(contact_sheet(thumbs), cv2.COLOR_RGB2BGR))
    return report


def contact_sheet(thumbs: list[np.ndarray], cols: int = 20) -> np.ndarray:
    """Tile (t, t, 3) uint8 thumbnails into one (rows*t, cols*t, 3) uint8 image."""
    t = thumbs[0].shape[0] if thumbs else 96
    cols = max(1, min(cols, len(thumbs)))
    rows = max(1, -(-len(thumbs) // cols))
    sheet = np.full((rows * t, cols * t, 3), 32, np.uint8)
    for i, th in enumerate(thumbs):
        r, c = divmod(i, cols)
        sheet[r * t:(r + 1) * t, c * t:(c + 1) * t] = th
    return sheet
