"""Align each face to the canonical template and cut the model's input crop.

Runs on frames in order (the runner restores order before it): it keeps one One Euro filter per
tracked face, so landmarks are smoothed over time before the alignment is computed. Tracks end
when a face is lost and all end at a scene cut.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from swapstream.core.errors import ConfigError
from swapstream.core.geometry import (
    FACE_TYPES,
    STABLE_LANDMARKS,
    alignment_matrix,
    crop_face,
    template_in_crop,
    transform_points,
)
from swapstream.core.packet import Face, FramePacket, Why
from swapstream.core.smoothing import OneEuro
from swapstream.stages.base import Needs, Stage


@dataclass
class AlignSettings:
    """size: crop side (px) = model input; coverage: share of the crop side taken by the stable
    landmarks (see geometry.template_in_crop); face: what the crop frames, "face" | "whole"
    (geometry.FACE_TYPES; size, coverage and face come from the model); smoothing: One Euro on
    landmarks per track; scene_cut: mean abs grey-level change (0-255) of a thumbnail that counts
    as a cut;
    max_residual: RMS alignment error (share of face size) above which a face is not swapped."""

    size: int = 64
    coverage: float = 0.7
    face: str = "face"
    smoothing: bool = True
    min_cutoff: float = 1.5
    beta: float = 8.0
    scene_cut: float = 35.0
    max_residual: float = 0.12

    def __post_init__(self) -> None:
        if not 0.2 <= self.coverage <= 1.0:
            raise ConfigError(f"coverage {self.coverage} is outside 0.2-1.0; 0.7 suits most faces")
        if self.face not in FACE_TYPES:
            raise ConfigError(f"face type {self.face!r} is not one of {', '.join(FACE_TYPES)}")
        if self.size < 16:
            raise ConfigError(f"crop size {self.size} is too small; use the model's input size")


@dataclass
class _Track:
    id: int
    filter: OneEuro
    center: np.ndarray
    size: float


class AlignStage(Stage):
    """Sets face.track, smoothed face.landmarks, face.matrix and face.crop; flags bad fits."""

    name = "align"
    needs = Needs(ordered=True, temporal=True)  # One Euro filters need every frame, in order

    def __init__(self, settings: AlignSettings | None = None) -> None:
        self.settings = settings or AlignSettings()
        self._tracks: list[_Track] = []
        self._next_id = 0
        self._thumb: np.ndarray | None = None
        self._last_index: int | None = None

    def process(self, batch: list[FramePacket]) -> list[FramePacket]:
        for packet in batch:
            self._align(packet)
        return batch

    def _scene_cut(self, frame: np.ndarray) -> bool:
        thumb = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), (32, 18),
                           interpolation=cv2.INTER_AREA).astype(np.float32)
        cut = self._thumb is not None and float(np.abs(thumb - self._thumb).mean()) > self.settings.scene_cut
        self._thumb = thumb
        return cut

    def _align(self, packet: FramePacket) -> None:
        s = self.settings
        continues = packet.follows is not None and packet.follows == self._last_index
        if self._scene_cut(packet.frame) or not continues:
            self._tracks = []
        self._last_index = packet.index
        # the frame's own clock (pts, else capture time): a live camera's rate wobbles, and a
        # frame dropped before the pipeline is a longer step, not an assumed 1/30 s
        t = packet.timestamp
        free = list(self._tracks)
        kept: list[_Track] = []
        for face in packet.faces:
            center = face.landmarks.mean(0)
            size = float(np.ptp(face.landmarks[:, 1]))
            track = min(free, key=lambda tr: np.linalg.norm(tr.center - center), default=None)
            if track is None or np.linalg.norm(track.center - center) > 0.5 * max(size, track.size):
                track = _Track(self._next_id, OneEuro(s.min_cutoff, s.beta), center, size)
                self._next_id += 1
            else:
                free.remove(track)
            track.center, track.size = center, size
            kept.append(track)
            face.track = track.id
            if s.smoothing and t is not None:
                face.landmarks = track.filter(face.landmarks, t).astype(np.float32)
            self._fit(packet.frame, face)
        self._tracks = kept  # a track not seen in this frame is lost: its filter restarts

    def _fit(self, frame: np.ndarray, face: Face) -> None:
        s = self.settings
        face.matrix = alignment_matrix(face.landmarks, s.size, s.coverage, s.face)
        tpl = template_in_crop(s.size, s.coverage, s.face)[STABLE_LANDMARKS]
        moved = transform_points(face.landmarks[STABLE_LANDMARKS], face.matrix)
        side = s.size * s.coverage * FACE_TYPES[s.face][0]  # of the stable square, in the crop
        residual = float(np.sqrt(((moved - tpl) ** 2).sum(1).mean())) / side
        if residual > s.max_residual:
            face.skip(Why.ALIGNMENT, f"alignment residual {residual:.2f} > {s.max_residual} "
                                             f"(profile or distorted face)")
            return
        face.crop = crop_face(frame, face.matrix, s.size)
