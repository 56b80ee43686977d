"""Hands stage: find hands in front of the faces, so the blend leaves them in front.

A hand is the commonest thing between a face and the camera. MediaPipe's hand landmarker ships
in the mediapipe wheel (palm detection + 21 hand landmarks, `mp.solutions.hands`), so this needs
no downloaded weights. It runs only where a face is: on one square region around the faces
being swapped (each face's box grown by REACH face sizes on every side), shrunk to ROI_SIDE px,
and it tracks: while a hand is followed from frame to frame MediaPipe only runs the landmark
model on it; while none is, the palm search runs every `search_every` frames (4; live 6). In a
conversion a hand the search finds is then followed backwards over the frames the search
skipped (`look_back`, as the detect stage does with faces), so it is cut from its first frame.
Live runs the tracker on a thread of its own (`background`): a frame takes the newest hands
found (from the frame before, mostly; none older than STALE frames), so a palm search, ~10-15 ms
on a CPU core, is not added to that frame's latency (MediaPipe releases the GIL while it runs).

For each face a hand overlaps, the hand's region goes into Face.occlusion (an (S, S) float32 mask
in the face's crop): the convex hull of its 21 landmarks grown by FINGER x the hand's size
(fingers are wider than their joints' line), 1 inside. The blend cuts it out of the face mask
(BlendSettings.occlusion: hands or both).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from swapstream.core.errors import ConfigError
from swapstream.core.geometry import FACE_OVAL, hull_mask, transform_points
from swapstream.core.packet import Face, FramePacket
from swapstream.stages.base import Needs, Stage

ROI_SIDE = 256  # px the region around the faces is shrunk to (the palm detector sees 192)
REACH = 0.75  # the region: each face box grown by this many face sizes on every side
FINGER = 0.22  # hand hull grown by this x the hand's size (wrist to middle knuckle)
MIN_OVERLAP = 0.002  # share of the face hull a hand must cover to count as over the face
STALE = 5  # frames: background mode drops hands found longer ago than this


@dataclass
class HandSettings:
    """search_every: frames between palm searches while no hand is followed (1: every frame);
    look_back: also search each batch's last frame, and follow a hand a search finds backwards
    over the frames before it that were not searched (convert: a hand gets its region from the
    first frame it is in; live cannot look back); max_hands: hands followed at once; confidence:
    palm detection and landmark presence threshold (0-1); complexity: 0 (lite model, faster) or
    1 (full model); roi: px the region around the faces is shrunk to (ROI_SIDE; live 192, the
    palm detector's own input size: a search costs ~40 % less, the landmarks are coarser);
    background: run the tracker on a thread (live; no look_back then), each frame taking the
    newest hands found."""

    search_every: int = 4
    look_back: bool = True
    max_hands: int = 2
    confidence: float = 0.5
    complexity: int = 0
    roi: int = ROI_SIDE
    background: bool = False

    def __post_init__(self) -> None:
        if self.background and self.look_back:
            raise ConfigError("hands: background mode cannot look back; set look_back false")
        if self.roi < 128:
            raise ConfigError(f"hands: roi {self.roi} px is too small; use 128 or more (192-256)")
        if self.search_every < 1 or self.max_hands < 1:
            raise ConfigError("hands: search_every and max_hands must be 1 or more")
        if not 0.0 < self.confidence < 1.0:
            raise ConfigError(f"hands: confidence {self.confidence} must be between 0 and 1")
        if self.complexity not in (0, 1):
            raise ConfigError(f"hands: complexity {self.complexity} must be 0 (lite) or 1 (full)")


def face_region(faces: list[Face], shape: tuple[int, ...]) -> tuple[int, int, int] | None:
    """The square (x0, y0, side), frame px, around all faces grown by REACH face sizes, clipped
    to the frame (then no longer square); None when it is empty."""
    boxes = np.array([f.bbox for f in faces], np.float64)  # (F, 4)
    size = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    x0 = float((boxes[:, 0] - REACH * size).min())
    y0 = float((boxes[:, 1] - REACH * size).min())
    x1 = float((boxes[:, 2] + REACH * size).max())
    y1 = float((boxes[:, 3] + REACH * size).max())
    side = max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    x0, y0 = int(math.floor(cx - side / 2)), int(math.floor(cy - side / 2))
    side = int(math.ceil(side))
    if x0 >= shape[1] or y0 >= shape[0] or x0 + side <= 0 or y0 + side <= 0:
        return None
    return x0, y0, side


def hand_mask(hand: np.ndarray, face: Face, size: int) -> np.ndarray:
    """(S, S) float32 in {0, 1}: hand (21, 2) frame px landmarks as a region in face's crop."""
    pts = transform_points(hand, face.matrix)  # (21, 2) crop px
    mask = hull_mask(pts, (size, size))
    grow = FINGER * float(np.linalg.norm(pts[0] - pts[9]))  # wrist to middle-finger knuckle
    k = int(round(grow))
    if k > 0:
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)))
    return mask


class HandsStage(Stage):
    """Sets Face.occlusion on the faces to be swapped that a hand overlaps (see module docstring).

    Faces not ok or not aligned are left alone; frames without such faces cost nothing. Copes
    with gaps (FramePacket.follows): tracking restarts on a frame that does not continue the
    last one it saw.
    """

    name = "hands"
    needs = Needs(temporal=True, cpu_share=0.25)

    def __init__(self, settings: HandSettings | None = None) -> None:
        self.settings = settings if settings is not None else HandSettings()
        self._hands = None
        self._last: int | None = None
        self._idle = 0  # frames since the last palm search that found nothing
        self._followed = False
        self._pool = None  # background mode: one thread running the tracker
        self._pending = None  # (Future of hands, frame index) in flight
        self._recent: tuple[list[np.ndarray], int] = ([], 0)  # newest hands found, their frame index

    def setup(self) -> None:
        self._restart()

    def _restart(self) -> None:
        self._wait()
        if self._hands is not None:
            self._hands.close()
        self._hands = _tracker(self.settings)
        self._followed, self._idle = False, 0

    def process(self, batch: list[FramePacket]) -> list[FramePacket]:
        if self._hands is None:
            self._restart()
        s = self.settings
        if s.background:
            return self._process_background(batch)
        looked = -1  # position in the batch of the last frame looked at (or without faces)
        for j, packet in enumerate(batch):
            if self._last is not None and packet.follows != self._last:
                self._restart()
                looked = j - 1
            self._last = packet.index
            faces = _faces(packet)
            if not faces:
                self._followed, self._idle = False, 0
                looked = j
                continue
            due = self._followed or self._idle % s.search_every == 0 or (s.look_back and j == len(batch) - 1)
            if not due:
                self._idle += 1
                continue
            was_followed = self._followed
            hands = self.find(self._hands, packet.frame, faces, s.roi)
            self._followed = bool(hands)
            self._idle = 0 if hands else self._idle + 1
            _mark_all(faces, hands)
            if hands and not was_followed and s.look_back:
                self._look_back(batch, looked + 1, j)
            looked = j
        return batch

    def _look_back(self, batch: list[FramePacket], first: int, found_at: int) -> None:
        """A hand first found at batch[found_at]: follow it backwards over the frames before it
        down to batch[first] (those the palm search skipped), with a tracker of its own."""
        s = self.settings
        with _tracker(s) as back:
            self.find(back, batch[found_at].frame, _faces(batch[found_at]), s.roi)  # start on the hand
            for k in range(found_at - 1, first - 1, -1):
                faces = _faces(batch[k])
                if not faces or batch[k + 1].follows != batch[k].index:
                    return
                hands = self.find(back, batch[k].frame, faces, s.roi)
                if not hands:
                    return
                _mark_all(faces, hands)

    def _process_background(self, batch: list[FramePacket]) -> list[FramePacket]:
        """Live: searches and follows hands on the thread, each frame marked with the newest hands
        found (if found within STALE frames)."""
        s = self.settings
        for packet in batch:
            if self._last is not None and packet.follows != self._last:
                self._restart()
                self._recent = ([], packet.index)
            self._last = packet.index
            if self._pending is not None and self._pending[0].done():
                self._recent = (self._pending[0].result(), self._pending[1])
                self._followed, self._pending = bool(self._recent[0]), None
            faces = _faces(packet)
            if not faces:
                self._followed, self._idle = False, 0
                continue
            if self._pending is None and (self._followed or self._idle % s.search_every == 0):
                if self._pool is None:
                    from concurrent.futures import ThreadPoolExecutor

                    self._pool = ThreadPoolExecutor(1, thread_name_prefix="hands")
                roi = _roi(packet.frame, faces, s.roi)  # cut here: the frame may change later
                self._pending = (self._pool.submit(_track, self._hands, roi), packet.index)
                self._idle = 1
            else:
                self._idle += 1
            hands, at = self._recent
            if hands and packet.index - at <= STALE:
                _mark_all(faces, hands)
        return batch

    def _wait(self) -> None:
        """Lets a background search in flight end (before the tracker is closed or replaced)."""
        if self._pending is not None:
            self._pending[0].result()
            self._pending = None

    @staticmethod
    def find(tracker, frame: np.ndarray, faces: list[Face], roi_side: int = ROI_SIDE) -> list[np.ndarray]:
        """Hands around the faces, by `tracker` (a MediaPipe Hands), in the region around them
        shrunk to roi_side px: a list of (21, 2) float32 landmark arrays, frame px."""
        return _track(tracker, _roi(frame, faces, roi_side))

    def flush(self) -> list[FramePacket]:
        return []

    def close(self) -> None:
        self._wait()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self._hands is not None:
            self._hands.close()
            self._hands = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        # MediaPipe graphs and threads do not pickle; setup() makes fresh ones
        state.update(_hands=None, _pool=None, _pending=None)
        return state


def _tracker(s: HandSettings):
    """A MediaPipe Hands that follows hands from call to call (video mode), as `s` sets it."""
    import mediapipe as mp

    return mp.solutions.hands.Hands(static_image_mode=False, max_num_hands=s.max_hands,
                                    model_complexity=s.complexity, min_detection_confidence=s.confidence,
                                    min_tracking_confidence=s.confidence)


def _roi(frame: np.ndarray, faces: list[Face], side_px: int):
    """The region around the faces, shrunk to side_px: (roi (side_px, side_px, 3) uint8, x0, y0,
    scale: roi px per frame px), or None when the region is off the frame."""
    region = face_region(faces, frame.shape)
    if region is None:
        return None
    x0, y0, side = region
    scale = side_px / side
    m = np.float64([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]])
    roi = cv2.warpAffine(frame, m, (side_px, side_px), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_CONSTANT)
    return roi, x0, y0, scale


def _track(tracker, job) -> list[np.ndarray]:
    """MediaPipe Hands on a _roi job: (21, 2) float32 landmarks of each hand, frame px."""
    if job is None:
        return []
    roi, x0, y0, scale = job
    found = tracker.process(roi).multi_hand_landmarks or []
    side = roi.shape[0]
    return [(np.array([(p.x, p.y) for p in hand.landmark], np.float64) * side / scale + [x0, y0])
            .astype(np.float32) for hand in found]


def _faces(packet: FramePacket) -> list[Face]:
    """The faces of a packet to be swapped (ok and aligned)."""
    return [f for f in packet.faces if f.ok and f.matrix is not None and f.crop is not None]


def _mark_all(faces: list[Face], hands: list[np.ndarray]) -> None:
    for hand in hands:
        for face in faces:
            _mark(face, hand)


def _mark(face: Face, hand: np.ndarray) -> None:
    """Adds the hand's region to face.occlusion where it overlaps the face."""
    size = face.crop.shape[0]
    mask = hand_mask(hand, face, size)
    hull = hull_mask(transform_points(face.landmarks[FACE_OVAL], face.matrix), (size, size))
    if float((mask * hull).sum()) < MIN_OVERLAP * max(float(hull.sum()), 1.0):
        return
    face.occlusion = mask if face.occlusion is None else np.maximum(face.occlusion, mask)
