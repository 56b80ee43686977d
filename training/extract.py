"""`swapstream extract`: find, align and save the faces of videos and image folders as a faceset.

Uses the same decode / detect / align stages as conversion, so training crops and conversion
crops are cut the same way. Writes aligned FACESET_SIZE px PNGs, the landmarks sidecar and a
contact sheet (`_contact_sheet.png`) to look over what was kept.

Every face is also embedded (swapstream.engines.identity, in batches of EMBED_BATCH, cut from the frame as
dlib cuts it). With `like` (reference photos, a faceset or a video of one person) only faces
within `threshold` of the reference are written; the others are counted in `not_like`. Either
way the faces seen are grouped by person, so a faceset that mixes people is reported
(`identities`) before hours of training on it.
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

from swapstream.core.errors import ConfigError, FacesetError, InputError, SwapstreamError
from swapstream.core.faceset import FACESET_COVERAGE, FACESET_SIZE, FacesetWriter
from swapstream.core.geometry import FACE_OVAL, hull_mask, transform_points
from swapstream.core.packet import FramePacket
from swapstream.core.paths import check_writable_dir
from swapstream.engines.identity import SAME_PERSON, FaceEmbedder, distance_to, face_chip, group_identities
from swapstream.stages.face.align import AlignSettings, AlignStage
from swapstream.stages.face.detect import DetectSettings, DetectStage
from swapstream.stages.sources.file import DecodeSettings, DecodeStage, probe
from swapstream.training.reference import Reference, load_reference

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
CONTACT_SHEET = "_contact_sheet.png"
EMBED_BATCH = 32  # faces embedded together: ~3 ms a face batched on a CPU, ~10 ms one by one
# A group of faces counts as a person when it holds at least this share of the faces and at least
# NOISE_FACES of them; smaller groups are a few bad detections, profiles or a passer-by.
NOISE_SHARE, NOISE_FACES = 0.03, 2


@dataclass
class ExtractSettings:
    """every: keep every Nth frame of a video; min_size: smallest face height (frame px) kept;
    blur: minimum sharpness (variance of the Laplacian inside the face, 0 = keep all); like:
    references of the one person to keep (photos, a faceset folder, a video; empty: keep every
    face); threshold: a face is that person when its distance_to the reference is at most this."""

    every: int = 1
    min_size: int = 64
    blur: float = 0.0
    max_faces: int = 8
    like: list[str] = field(default_factory=list)
    threshold: float = SAME_PERSON

    def __post_init__(self) -> None:
        if isinstance(self.like, (str, Path)):
            self.like = [self.like]
        self.like = [str(x) for x in self.like]
        if not 0.0 < self.threshold < 2.0:
            raise ConfigError(f"--threshold {self.threshold} is outside (0, 2); {SAME_PERSON} is "
                              f"dlib's same-person distance")
        if self.every < 1:
            raise ConfigError(f"--every {self.every} must be 1 or more")
        if self.min_size < 16:
            raise ConfigError(f"--min-size {self.min_size} must be 16 px or more")


@dataclass
class ExtractReport:
    """faces: written; not_like: dropped as not the `like` person; identities: people among the
    faces seen (kept and dropped; noise groups not counted), identity_sizes: their face counts,
    largest first; notes: lines about the references (a group photo, a video of several people)."""

    faces: int = 0
    frames: int = 0
    too_small: int = 0
    too_blurry: int = 0
    not_like: int = 0
    identities: int = 0
    identity_sizes: list[int] = field(default_factory=list)
    sources_without_faces: list[str] = field(default_factory=list)
    contact_sheet: Path | None = None
    notes: list[str] = field(default_factory=list)


def people(labels: np.ndarray) -> list[int]:
    """(N,) int labels from group_identities -> the face counts of the groups that are people
    (NOISE_SHARE of the faces and NOISE_FACES or more), largest first. When no group is that
    large (a handful of faces), the largest group stands for one person."""
    if len(labels) == 0:
        return []
    counts = np.bincount(labels)
    least = max(NOISE_FACES, NOISE_SHARE * len(labels))
    return sorted((int(c) for c in counts if c >= least), reverse=True) or [int(counts.max())]


class _Keeper:
    """Collects faces, embeds them EMBED_BATCH at a time, writes those of the reference person
    (every face without a reference) and keeps every embedding for the identity count."""

    def __init__(self, writer: FacesetWriter, embedder: FaceEmbedder, reference: Reference | None,
                 threshold: float, report: ExtractReport) -> None:
        self.writer, self.embedder, self.reference = writer, embedder, reference
        self.threshold, self.report = threshold, report
        self.pending: list[tuple[np.ndarray, np.ndarray, np.ndarray, str, int]] = []
        self.embeddings: list[np.ndarray] = []
        self.thumbs: list[np.ndarray] = []

    def add(self, crop: np.ndarray, lm: np.ndarray, chip: np.ndarray, source: str, frame: int) -> None:
        """crop (256, 256, 3) uint8, lm (478, 2) in the crop, chip (150, 150, 3) uint8."""
        self.pending.append((crop, lm, chip, source, frame))
        if len(self.pending) >= EMBED_BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        e = self.embedder.embed_chips(np.stack([p[2] for p in self.pending]))  # (n, 128)
        self.embeddings.append(e)
        keep = (np.ones(len(e), bool) if self.reference is None
                else distance_to(e, self.reference.embeddings) <= self.threshold)
        for (crop, lm, _, source, frame), ok in zip(self.pending, keep):
            if not ok:
                self.report.not_like += 1
                continue
            self.writer.add(crop, lm, source, frame)
            self.report.faces += 1
            if len(self.thumbs) < 400:
                self.thumbs.append(cv2.resize(crop, (96, 96), interpolation=cv2.INTER_AREA))
        self.pending.clear()

    def identities(self) -> list[int]:
        """Face counts of the people among every face seen, largest first."""
        if not self.embeddings:
            return []
        return people(group_identities(np.concatenate(self.embeddings)))


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
    """Extract every face of `sources` (videos and/or image folders) into faceset `out`; with
    settings.like, only the faces of that person. Sources and references are checked first."""
    s = settings or ExtractSettings()
    check_writable_dir(out)
    for src in map(Path, sources):  # all of them, before hours of work on the first
        _check_source(src)
    embedder = FaceEmbedder()
    # ReferenceError here, before anything is written
    reference = load_reference(s.like, embedder) if s.like else None
    created = not Path(out).exists()
    try:
        return _extract(sources, Path(out), s, progress, embedder, reference)
    except SwapstreamError:
        if created:  # leave nothing behind that looks like a faceset
            shutil.rmtree(out, ignore_errors=True)
        raise


def _extract(sources: list[str | Path], out: Path, s: ExtractSettings, progress: bool,
             embedder: FaceEmbedder, reference: Reference | None) -> ExtractReport:
    report = ExtractReport(notes=list(reference.notes) if reference is not None else [])
    detect = DetectStage(DetectSettings(min_face=max(16, min(s.min_size, 64)), max_faces=s.max_faces))
    detect.setup()
    writer = FacesetWriter(out)
    keeper = _Keeper(writer, embedder, reference, s.threshold, report)
    try:
        for src in map(Path, sources):
            packets, total, dec = _sources(src, s.every)
            align = AlignStage(AlignSettings(size=FACESET_SIZE, coverage=FACESET_COVERAGE,
                                             smoothing=False))
            before = report.faces
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
                        keeper.add(face.crop, lm, face_chip(packet.frame, face.landmarks),
                                   src.name, packet.index)
                    bar.set_postfix(faces=report.faces, refresh=False)
                keeper.flush()  # this source's last faces, so its count below is complete
            finally:
                bar.close()
                if dec is not None:
                    dec.close()
            if report.faces == before:
                report.sources_without_faces.append(str(src))
    finally:
        writer.close()
        detect.close()
    sizes = keeper.identities()
    report.identities, report.identity_sizes = len(sizes), sizes
    if report.faces == 0 and report.not_like:
        raise FacesetError(f"none of the {report.not_like} faces found is the --like person "
                           f"({', '.join(s.like)}); check the reference shows the same person, or "
                           f"raise --threshold (now {s.threshold})")
    if report.faces == 0:
        raise FacesetError(f"no faces of at least {s.min_size} px found in {', '.join(map(str, sources))}; "
                           f"check that the sources show faces, or lower --min-size / --blur")
    report.contact_sheet = Path(out) / CONTACT_SHEET
    cv2.imwrite(str(report.contact_sheet), cv2.cvtColor(contact_sheet(keeper.thumbs), cv2.COLOR_RGB2BGR))
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
