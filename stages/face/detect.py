"""Detect faces and their 478 landmarks with MediaPipe, small faces in large frames included.

Both MediaPipe models shrink what they are given to 128-192 px, so on a whole 1080p frame they
miss faces under ~190 px (docs/platform.md). So a full search runs the full-range detector over
a pyramid of overlapping square tiles, each tile small enough that the smallest wanted face is
>= 1/8 of it, then runs FaceMesh on a crop around each face found (the face filling about half
the crop). Between full searches, each known face is tracked: FaceMesh runs on a crop around its
last landmarks. A full search runs every `detect_every` frames, when a track is lost, and when
a frame does not continue the last one this stage saw (FramePacket.follows: a detect actor in a
pool gets chunks of the video, a live source drops frames).

Faces start where the face starts. Convert (`look_back`) also searches the last frame of every
batch, and a face a search finds that no track followed is tracked backwards over the batch's
earlier frames, so a face that walks or pans into view gets landmarks from its first frame in
view, not from the next search. Live cannot look back: it spreads each full search over at most
`search_frames` frames (or `search_budget` detector calls a frame) and starts one every
`detect_every` frames (live: 3; the next at once where a search takes that long), so no frame
waits for the whole tile pyramid and a new face waits ~3 frames (100 ms).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import types
from dataclasses import dataclass

import cv2
import numpy as np

from swapstream.core.errors import ConfigError
from swapstream.core.geometry import iou
from swapstream.core.packet import Face, FramePacket
from swapstream.stages.base import Needs, Stage

MESH_INPUT = 256  # crop side given to FaceMesh
# A sweep skips a tile whose pixels have not changed since it was last searched: the detector
# would see the same picture. Changes are measured on a grey thumbnail of CELL x CELL px cells
# (a face the sweeps look for, >= 16 px, changes whole cells), ignoring cells around the faces
# already tracked (TRACKED_MARGIN x their box), and a tile counts as changed when any cell moved
# more than CHANGE grey levels (sensor noise and codec flicker move a cell's mean by ~1).
CELL = 16
CHANGE = 6.0
TRACKED_MARGIN = 2.0
# The full-range detector finds faces down to about 1/10 of its image width (docs/platform.md); face
# height is ~1.25x face width, so a tile of side 8 * min_face still finds faces min_face px tall.
TILE_PER_FACE = 8


@dataclass
class DetectSettings:
    """min_face: smallest face height (frame px) to find; max_faces: per frame; detect_every:
    frames between full searches (a sweep of the tile pyramid) while faces are tracked (convert
    also sweeps each batch's last frame; its batches are 16 frames: one sweep a batch);
    search_budget: detector calls of a sweep per frame (0: the whole sweep in one frame, as
    convert does); search_frames: spread each sweep over at most this many frames (live; wins
    over search_budget; 0: off); look_back: search each batch's last frame and track new faces
    backwards over the batch (convert); min_face_share: smallest face as a share of the frame
    height, when that is more than min_face (live: 1/8, a webcam's faces are large, and the tile
    pyramid for 64 px faces in 720p is 19 detector calls a sweep, for 90 px faces 3);
    background: run the detector on a thread of its own (live; no look_back then): a frame
    starts a search when one is due and none is running, and the faces a search finds are
    placed (FaceMesh around each box) in the first frame after it ends, so no frame waits for
    the detector."""

    min_face: int = 64
    max_faces: int = 8
    detect_every: int = 16
    det_confidence: float = 0.5
    mesh_confidence: float = 0.5
    search_budget: int = 0
    search_frames: int = 0
    look_back: bool = True
    min_face_share: float = 0.0
    background: bool = False

    def __post_init__(self) -> None:
        if self.background and self.look_back:
            raise ConfigError("detect: background search cannot look back; set look_back false")
        if self.min_face < 16:
            raise ConfigError(f"min_face {self.min_face} is below 16 px; FaceMesh cannot place "
                              f"478 landmarks on smaller faces: use 16 or more")
        if self.detect_every < 1 or self.max_faces < 1:
            raise ConfigError("detect_every and max_faces must be 1 or more")
        if not 0.0 <= self.min_face_share <= 0.5:
            raise ConfigError(f"min_face_share {self.min_face_share} is outside 0-0.5 (a share of the "
                              f"frame height; 0: min_face alone decides)")
        if self.search_budget < 0 or self.search_frames < 0:
            raise ConfigError(f"search_budget {self.search_budget} and search_frames {self.search_frames} "
                              f"must be 0 (whole sweep at once) or more")


def search_tiles(width: int, height: int, min_face: int) -> list[tuple[int, int, int]]:
    """Square tiles (x, y, side) for a full search: the whole frame, then ever smaller tiles.

    Each level halves the tile side until a face `min_face` px tall is >= 1/8 of a tile; tiles
    overlap by a quarter of their side, so a face up to that size lies whole in some tile, and
    larger ones are found at the coarser level.
    """
    tiles = [(0, 0, max(width, height))]  # the whole frame (the detector pads to square)
    reach = TILE_PER_FACE * min_face * 1.25  # the detector still works a little past 1/8
    side = min(width, height)
    while max(width, height) > reach and side >= 64:
        stride = max(int(side * 0.75), 1)
        xs = list(range(0, max(width - side, 0) + 1, stride))
        ys = list(range(0, max(height - side, 0) + 1, stride))
        if xs[-1] + side < width:
            xs.append(width - side)
        if ys[-1] + side < height:
            ys.append(height - side)
        tiles += [(x, y, side) for y in ys for x in xs]
        if side <= reach:
            break
        side //= 2
    return tiles


def _contained(a: tuple, b: tuple) -> float:
    """Share of the smaller box that lies inside the other."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return ix * iy / small if small > 0 else 0.0


@dataclass
class _Track:
    """A tracked face: its last landmarks ((478, 2) float32 frame px) and its own FaceMesh."""

    landmarks: np.ndarray
    mesh: object = None


def _tiles(frame: np.ndarray, regions: list[tuple[int, int, int]]) -> list[tuple[int, int, np.ndarray]]:
    """The square tiles `regions` ((x, y, side) each) of (H, W, 3) uint8 `frame`, as (x, y,
    contiguous copy): MediaPipe reads a read-only array (as Ray delivers them) in place."""
    return [(x, y, np.ascontiguousarray(frame[y:y + side, x:x + side])) for x, y, side in regions]


class DetectStage(Stage):
    """Adds Face records (landmarks, score) to each FramePacket; keeps tracks across frames."""

    name = "detect"
    # tracks carry over between frames, but a copy that gets a chunk of the video starts its
    # tracks afresh, so detect may be pooled: half the CPUs' worth pays off
    needs = Needs(temporal=True, cpu_share=0.5)

    def __init__(self, settings: DetectSettings | None = None) -> None:
        self.settings = settings or DetectSettings()
        self._detector = None
        self._mesh = None  # FaceMesh on single images: faces the detector found
        self._tracks: list[_Track] = []  # the tracked faces
        self._last_index: int | None = None  # index of the last frame seen
        self._since_search = 0  # frames since the last sweep began
        self._sweep: list[tuple[int, int, int]] = []  # tiles of the sweep still to search
        self._sweep_size = 0  # tiles of the current sweep, all told
        self._lost = False
        # per tile (x, y, side): the cells it showed when last searched, and which to ignore
        self._seen: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}
        self.tiles_searched = 0  # detector calls of sweeps, and tiles skipped as unchanged
        self.tiles_skipped = 0
        self._pool = None  # background: one thread running the detector
        self._pending = None  # background: the Future of a search's boxes in flight

    def setup(self) -> None:
        mp = import_mediapipe()  # heavy import, only where the stage runs

        s = self.settings
        with _quiet_stderr():
            self._detector = mp.solutions.face_detection.FaceDetection(
                model_selection=1, min_detection_confidence=s.det_confidence)
            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=True, max_num_faces=2, refine_landmarks=True,
                min_detection_confidence=s.mesh_confidence)
            # first inference starts the TFLite delegates, which log to stderr from C++
            blank = np.zeros((MESH_INPUT, MESH_INPUT, 3), np.uint8)
            self._detector.process(blank)
            self._mesh.process(blank)

    def process(self, batch: list[FramePacket]) -> list[FramePacket]:
        if self._mesh is None:
            self.setup()
        # a batch of one has no earlier frames to look back over (and would sweep every frame)
        look_back = self.settings.look_back and not self.settings.search_frames and len(batch) > 1
        for i, packet in enumerate(batch):
            found, new = self._faces_in(packet, sweep=look_back and i == len(batch) - 1)
            packet.faces = [Face(lm, score) for lm, score in found]
            if look_back and new and i:
                self._look_back(batch[:i + 1], new)
        return batch

    def _look_back(self, packets: list[FramePacket], new: list[np.ndarray]) -> None:
        """Track faces a search found in packets[-1] ((478, 2) landmarks each) backwards over the
        packets before it (frame order), adding each to the frames where it was already in view:
        until FaceMesh loses it, it meets a face already there, or the frames stop being
        consecutive (a cut in the batch, a gap)."""
        for lm in new:
            mesh, prev = self._video_mesh(), lm
            try:
                for packet, after in zip(packets[-2::-1], packets[:0:-1]):
                    if after.follows != packet.index:
                        break
                    got = self._mesh_around(packet.frame, _bbox(prev), 1.7, mesh)
                    if got is None or iou(_bbox(got), _bbox(prev)) <= 0.3:
                        break
                    if len(packet.faces) >= self.settings.max_faces or any(
                            iou(_bbox(got), f.bbox) > 0.3 for f in packet.faces):
                        break
                    packet.faces.append(Face(got, 1.0))
                    prev = got
            finally:
                mesh.close()

    def close(self) -> None:
        self._discard_pending()
        try:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None
        finally:
            self._drop_tracks(self._tracks)
            self._tracks = []
            for m in (self._detector, self._mesh):
                if m is not None:
                    m.close()
            self._detector = self._mesh = None

    def _video_mesh(self):
        """A FaceMesh in video mode for one track: it follows the face from its last landmarks
        instead of detecting it again in every crop (5.3 vs 7.8 ms a face here)."""
        mp = import_mediapipe()

        with _quiet_stderr():
            return mp.solutions.face_mesh.FaceMesh(
                static_image_mode=False, max_num_faces=1, refine_landmarks=True,
                min_detection_confidence=self.settings.mesh_confidence,
                min_tracking_confidence=self.settings.mesh_confidence)

    @staticmethod
    def _drop_tracks(tracks: list[_Track]) -> None:
        for t in tracks:
            if t.mesh is not None:
                t.mesh.close()
                t.mesh = None

    # --- per frame -------------------------------------------------------------------------
    def _faces_in(self, packet: FramePacket, sweep: bool = False
                  ) -> tuple[list[tuple[np.ndarray, float]], list[np.ndarray]]:
        """The faces of one frame ((landmarks, score) each) and, of those, the ones a search found
        that no track followed into this frame. sweep: search the whole pyramid now."""
        frame = packet.frame
        consecutive = packet.follows is not None and packet.follows == self._last_index
        if not consecutive:  # tracks and a sweep in progress saw other frames
            self._drop_tracks(self._tracks)
            self._tracks, self._sweep = [], []
            self._seen = {}
            self._discard_pending()
        found, kept = self._follow(frame)
        if self.settings.background:
            boxes = self._finished_boxes()
        else:
            regions = self._regions(frame, found, consecutive, sweep)
            boxes = self._search(frame, regions) if regions else []
        new: list[np.ndarray] = []
        for box, score in boxes:
            if len(found) >= self.settings.max_faces:
                break
            if any(_contained(box, _bbox(lm)) > 0.5 for lm, _ in found):
                continue
            lm = self._mesh_around(frame, box, 2.0)
            if lm is not None and not any(iou(_bbox(lm), _bbox(o)) > 0.3 for o, _ in found):
                found.append((lm, score))
                kept.append(_Track(lm))
                new.append(lm)
        if self.settings.background:  # after placing the last search's faces: not searched again
            self._start_search(frame, found, consecutive)
        self._tracks = kept
        self._last_index = packet.index
        return found, new

    def _follow(self, frame: np.ndarray) -> tuple[list[tuple[np.ndarray, float]], list[_Track]]:
        """Each track followed into this frame: ((landmarks, 1.0) found, the tracks kept); a track
        lost, or one that met another on the same face, is dropped."""
        found: list[tuple[np.ndarray, float]] = []
        kept: list[_Track] = []
        for track in self._tracks:
            prev = track.landmarks
            if track.mesh is None:
                track.mesh = self._video_mesh()
            lm = self._mesh_around(frame, _bbox(prev), 1.7, track.mesh)
            if lm is None or iou(_bbox(lm), _bbox(prev)) <= 0.3:
                # a fast move or a dropped frame: look once more over a wider crop before a sweep
                lm = self._mesh_around(frame, _bbox(prev), 3.0)
                if lm is not None and iou(_bbox(lm), _bbox(prev)) <= 0.1:
                    lm = None
            if lm is None or any(iou(_bbox(lm), _bbox(o)) > 0.3 for o, _ in found):
                # lost, or two tracks that met on one face continue as one
                self._lost = self._lost or lm is None
                self._drop_tracks([track])
                continue
            track.landmarks = lm
            found.append((lm, 1.0))
            kept.append(track)
        return found, kept

    def _regions(self, frame: np.ndarray, found: list, consecutive: bool, sweep: bool
                 ) -> list[tuple[int, int, int]]:
        """The (x, y, side) regions to search in this frame: the sweep's share of it (a new sweep
        when one is due), less the unchanged tiles, and the whole frame while no face is in view."""
        s = self.settings
        h, w = frame.shape[:2]
        self._since_search += 1
        due = not consecutive or self._lost or self._since_search >= s.detect_every
        if sweep and not due:  # convert's sweep at a batch's end: whatever remains, at once
            self._sweep = []
        if not self._sweep and (due or sweep):
            self._sweep = search_tiles(w, h, max(s.min_face, int(s.min_face_share * h)))
            self._since_search, self._lost = 0, False
            self._sweep_size = len(self._sweep)
        # The sweep's tiles: all at once, over `search_frames` frames, or `search_budget`
        # detector calls a frame (live).
        if s.search_frames:
            take = -(-self._sweep_size // s.search_frames)
        else:
            take = len(self._sweep) if not s.search_budget or sweep else s.search_budget
        regions, self._sweep = self._sweep[:take], self._sweep[take:]
        whole = (0, 0, max(w, h))
        if regions:
            regions = self._changed(frame, regions, found)
        if not found and whole not in regions:
            # With no face in view the whole frame is searched every frame (one detector call
            # finds a face after a cut at once); the tile pyramid (~70 calls on a 4K frame) only
            # when a sweep is due.
            regions = [whole, *regions]
        return regions

    def _changed(self, frame: np.ndarray, regions: list[tuple[int, int, int]],
                 found: list[tuple[np.ndarray, float]]) -> list[tuple[int, int, int]]:
        """Of a sweep's tiles (x, y, side), those to search now: the whole frame always, the
        others unless no cell of theirs changed by more than CHANGE since they were last searched
        (cells near tracked faces, now or then, aside). Records what the searched ones show."""
        h, w = frame.shape[:2]
        gh, gw = -(-h // CELL), -(-w // CELL)
        grey = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
        cells = cv2.resize(grey, (gw, gh), interpolation=cv2.INTER_AREA).astype(np.float32)
        ignore = np.zeros((gh, gw), bool)
        for lm, _ in found:
            x0, y0, x1, y1 = _bbox(lm)
            cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, TRACKED_MARGIN * max(x1 - x0, y1 - y0) / 2
            ignore[max(0, int((cy - r) // CELL)):int((cy + r) // CELL) + 1,
                   max(0, int((cx - r) // CELL)):int((cx + r) // CELL) + 1] = True
        out = []
        for x, y, side in regions:
            key = (x, y, side)
            if x or y or side < max(w, h):
                sl = (slice(y // CELL, -(-(y + side) // CELL)), slice(x // CELL, -(-(x + side) // CELL)))
                last = self._seen.get(key)
                if last is not None:
                    moved = np.abs(cells[sl] - last[0]) > CHANGE
                    if not (moved & ~ignore[sl] & ~last[1]).any():
                        self.tiles_skipped += 1
                        continue
                self._seen[key] = (cells[sl].copy(), ignore[sl].copy())
            self.tiles_searched += 1
            out.append(key)
        return out

    def _finished_boxes(self) -> list[tuple[tuple, float]]:
        """Background mode: the boxes of the search that ended since the last frame (found in an
        earlier frame; FaceMesh places them in this one), else none. A failed search raises."""
        if self._pending is None or not self._pending.done():
            return []
        done, self._pending = self._pending, None
        return done.result()

    def _start_search(self, frame: np.ndarray, found: list, consecutive: bool) -> None:
        """Background mode: start the next search on the thread when one is due and none runs."""
        if self._pending is not None:
            return
        regions = self._regions(frame, found, consecutive, False)
        if not regions:
            return
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(1, thread_name_prefix="face-search")
        # The thread reads the tiles while later stages run; they draw into copies (blend copies
        # the frame), and every frame is a new array, so a tile that is a view stays as it is.
        self._pending = self._pool.submit(self._search_tiles, _tiles(frame, regions))

    def _discard_pending(self) -> None:
        """Background mode: a search in flight saw frames before a gap (or the stage closes): let
        it end, unused; its error, if it failed, too (the next search reports its own)."""
        done, self._pending = self._pending, None
        if done is not None:
            with contextlib.suppress(Exception):
                done.result()

    def _search(self, frame: np.ndarray, regions: list[tuple[int, int, int]]) -> list[tuple[tuple, float]]:
        """Detector boxes (x0, y0, x1, y1) in frame px with scores, duplicates merged, over the
        square tiles `regions` (x, y, side) of the frame."""
        return self._search_tiles(_tiles(frame, regions))

    def _search_tiles(self, tiles: list[tuple[int, int, np.ndarray]]) -> list[tuple[tuple, float]]:
        """_search over tiles cut already: (x, y, (side, side, 3) uint8 contiguous) each."""
        boxes: list[tuple[tuple, float]] = []
        for x, y, tile in tiles:
            th, tw = tile.shape[:2]
            res = self._detector.process(tile)
            for d in res.detections or []:
                r = d.location_data.relative_bounding_box
                box = (x + r.xmin * tw, y + r.ymin * th, x + (r.xmin + r.width) * tw,
                       y + (r.ymin + r.height) * th)
                boxes.append((box, float(d.score[0])))
        boxes.sort(key=lambda b: -b[1])
        kept: list[tuple[tuple, float]] = []
        for box, score in boxes:
            if all(iou(box, k) < 0.3 and _contained(box, k) < 0.6 for k, _ in kept):
                kept.append((box, score))
        return kept

    def _mesh_around(self, frame: np.ndarray, box: tuple, zoom: float, mesh=None) -> np.ndarray | None:
        """FaceMesh (`mesh`, else the single-image one) on a square crop `zoom` x the box, centred
        on it: (478, 2) float32 frame px, or None."""
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        side = zoom * max(box[2] - box[0], box[3] - box[1], 8.0)
        s = MESH_INPUT / side
        m = np.array([[s, 0, MESH_INPUT / 2 - s * cx], [0, s, MESH_INPUT / 2 - s * cy]])
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        crop = cv2.warpAffine(frame, m, (MESH_INPUT, MESH_INPUT), flags=interp,
                              borderMode=cv2.BORDER_REPLICATE)
        res = (mesh or self._mesh).process(crop)
        if not res.multi_face_landmarks:
            return None
        cands = [landmarks_xy(f) * MESH_INPUT for f in res.multi_face_landmarks]
        best = min(cands, key=lambda c: np.linalg.norm(c.mean(0) - MESH_INPUT / 2))
        return ((best - m[:, 2]) / s).astype(np.float32)  # back to frame px


# a NormalizedLandmark as FaceMesh serialises it: field 1 (length 15) holding x, y, z as fixed32
_LANDMARK_WIRE = np.dtype([("tag", "u1"), ("size", "u1"), ("tx", "u1"), ("x", "<f4"), ("ty", "u1"),
                           ("y", "<f4"), ("tz", "u1"), ("z", "<f4")])


def landmarks_xy(landmarks) -> np.ndarray:
    """(n, 2) float64 x, y of a MediaPipe NormalizedLandmarkList (in [0, 1] of the image).

    Read from the message's wire bytes when every landmark is exactly x, y and z (as FaceMesh
    writes them; every tag byte is checked): ~0.01 ms for 478 points where reading them as
    protobuf objects took ~0.2 ms. Any other layout is read object by object."""
    n = len(landmarks.landmark)
    buf = landmarks.SerializeToString()
    if n and len(buf) == n * _LANDMARK_WIRE.itemsize:
        rec = np.frombuffer(buf, _LANDMARK_WIRE)
        if ((rec["tag"] == 0x0A) & (rec["size"] == 15) & (rec["tx"] == 0x0D) & (rec["ty"] == 0x15)
                & (rec["tz"] == 0x1D)).all():
            return np.stack([rec["x"], rec["y"]], 1).astype(np.float64)
    return np.array([(p.x, p.y) for p in landmarks.landmark], np.float64).reshape(-1, 2)


def import_mediapipe():
    """`import mediapipe`, with matplotlib.pyplot loaded only when first used.

    mediapipe's package init imports its drawing helpers, which import matplotlib.pyplot (~0.15 s
    of every conversion's start here) for plots no stage draws. Where nothing has imported pyplot
    yet, a stand-in takes its place in sys.modules for that import: the first attribute anyone
    reads from it imports the real pyplot, which replaces it, and is answered from there.
    """
    if "matplotlib.pyplot" not in sys.modules and "mediapipe" not in sys.modules:
        sys.modules["matplotlib.pyplot"] = _PyplotOnUse("matplotlib.pyplot")
    import mediapipe

    return mediapipe


class _PyplotOnUse(types.ModuleType):
    """Stands in for matplotlib.pyplot until an attribute is read from it (see import_mediapipe)."""

    __spec__ = None  # the import system's check of a module in sys.modules finds nothing to load

    def __getattr__(self, name: str):
        if sys.modules.get("matplotlib.pyplot") is self:
            del sys.modules["matplotlib.pyplot"]
        real = importlib.import_module("matplotlib.pyplot")
        return getattr(real, name)


@contextlib.contextmanager
def _quiet_stderr():
    """Send file descriptor 2 to /dev/null (C++ logs bypass Python) unless SWAPSTREAM_VERBOSE."""
    if os.environ.get("SWAPSTREAM_VERBOSE"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _bbox(lm: np.ndarray) -> tuple[float, float, float, float]:
    lo, hi = lm.min(0), lm.max(0)
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])
