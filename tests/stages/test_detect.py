"""Detect stage on real frames with real MediaPipe."""

from fractions import Fraction
from itertools import islice

import cv2
import numpy as np
import pytest

from swapstream.core.errors import ConfigError
from swapstream.core.packet import FramePacket
from swapstream.pipeline.samples import background, render_frames
from swapstream.stages.face.detect import DetectSettings, DetectStage, search_tiles


def packets(frames, start=0):
    """Consecutive packets from `start`: each follows the one before; the first starts afresh."""
    return [FramePacket(start + i, start + i, Fraction(1, 30), f, follows=start + i - 1 if i else None)
            for i, f in enumerate(frames)]


@pytest.fixture(scope="module")
def detect():
    d = DetectStage()
    d.setup()
    yield d
    d.close()


def test_one_face_with_478_landmarks_on_the_face(detect):
    frame = next(render_frames(["astronaut"], 1, 400, 300, 0.6))
    [p] = detect.process(packets([frame], 1000))
    assert len(p.faces) == 1
    face = p.faces[0]
    assert face.landmarks.shape == (478, 2) and face.landmarks.dtype == np.float32
    x0, y0, x1, y1 = face.bbox
    # the head cut-out (180 px) is centred near (200, 150 +- 18); the face is its middle half
    assert 120 < (x0 + x1) / 2 < 280 and 100 < (y0 + y1) / 2 < 200
    assert 60 < y1 - y0 < 140


def test_no_face_gives_empty_list(detect):
    [p] = detect.process(packets([background(320, 240)], 2000))
    assert p.faces == []


def test_several_faces_per_frame(detect):
    frame = next(render_frames(["astronaut", "grace_hopper", "astronaut"], 1, 960, 400, 0.5))
    [p] = detect.process(packets([frame], 3000))
    assert len(p.faces) == 3
    xs = sorted((f.bbox[0] + f.bbox[2]) / 2 for f in p.faces)
    assert xs[0] < 320 < xs[1] < 640 < xs[2]


@pytest.mark.parametrize("head_px", [128, 1080])
def test_small_and_full_height_faces_in_1080p(detect, head_px):
    """Faces ~64 px tall (head cut-out 128 px) and a face filling the frame height are found."""
    faces = ["astronaut", "grace_hopper"] if head_px < 500 else ["astronaut"]
    frame = next(render_frames(faces, 1, 1920, 1080, head_px / 1080))
    [p] = detect.process(packets([frame], 4000 + head_px))
    assert len(p.faces) == len(faces)
    heights = [f.bbox[3] - f.bbox[1] for f in p.faces]
    assert all(0.35 * head_px < h < 0.8 * head_px for h in heights), heights


def test_tracking_skips_full_searches_and_keeps_faces(monkeypatch):
    d = DetectStage(DetectSettings(detect_every=8))
    d.setup()
    calls = []
    real = d._search
    monkeypatch.setattr(d, "_search", lambda f, regions: calls.append(1) or real(f, regions))  # spy
    frames = list(render_frames(["astronaut", "grace_hopper"], 120, 560, 300, 0.6))[:24]
    out = d.process(packets(frames))
    assert [len(p.faces) for p in out] == [2] * 24
    assert len(calls) == 4  # frames 0, 8, 16, and the batch's last (convert looks back from it)
    # a frame that does not follow the last one starts with a full search
    d.process(packets(frames[:1], 500))
    assert len(calls) == 5
    d.close()


def test_search_tiles_cover_the_frame_and_shrink_to_the_smallest_face():
    tiles = search_tiles(1920, 1080, 64)
    assert tiles[0] == (0, 0, 1920)
    smallest = min(t[2] for t in tiles)
    assert smallest <= 8 * 64 * 1.25
    cover = np.zeros((1080, 1920), bool)
    for x, y, s in tiles[1:]:
        if s == smallest:
            cover[y:y + s, x:x + s] = True
    assert cover.all()
    assert search_tiles(320, 240, 64) == [(0, 0, 320)]  # small frames: the whole frame is enough


def test_bad_settings():
    with pytest.raises(ConfigError):
        DetectSettings(min_face=4)
    with pytest.raises(ConfigError, match="look_back false"):
        DetectSettings(background=True)  # look_back is on by default


def test_faceless_frames_run_the_tile_pyramid_only_every_detect_every(monkeypatch):
    d = DetectStage(DetectSettings(detect_every=8))
    d.setup()
    calls = []
    real = d._detector.process
    monkeypatch.setattr(d._detector, "process", lambda img: calls.append(1) or real(img))  # spy
    # a picture that changes all over each frame, as in a pan (tiles that did not change are not
    # searched again: see the next test)
    noise = [np.random.default_rng(i).integers(0, 256, (1080, 1920, 3), dtype=np.uint8) for i in range(20)]
    out = d.process(packets(noise))
    assert all(p.faces == [] for p in out)
    tiles = len(search_tiles(1920, 1080, 64))
    # frames 0, 8, 16 and the batch's last, 19, search the pyramid; the 16 others the whole frame
    assert len(calls) == 4 * tiles + 16, (len(calls), tiles)
    d.close()


def test_a_sweep_searches_only_tiles_that_changed_and_still_finds_a_small_new_face(monkeypatch):
    """A still 1080p shot: after the first sweep, sweeps search the whole frame and only the
    tiles whose pixels changed. A 70 px face (too small for the whole-frame call) that appears at
    frame 12 is found by the sweep at the batch's end (15) and tracked back to frame 12."""
    from swapstream.pipeline.samples import head

    bg = background(1920, 1080)
    rgb, alpha = head("astronaut")  # face ~ half the cut-out
    side = 140
    small = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)
    a = cv2.resize(alpha, (side, side), interpolation=cv2.INTER_AREA)[..., None]
    with_face = bg.copy()
    y, x = 700, 1500
    patch = with_face[y:y + side, x:x + side].astype(np.float32)
    with_face[y:y + side, x:x + side] = np.clip(patch * (1 - a) + small * a, 0, 255).astype(np.uint8)
    frames = [bg] * 12 + [with_face] * 8

    d = DetectStage(DetectSettings(detect_every=8))
    calls = []
    d.setup()
    real = d._detector.process
    monkeypatch.setattr(d._detector, "process", lambda img: calls.append(img.shape) or real(img))  # spy
    pk = packets(frames, 9000)
    out = [p for k in (0, 8, 16) for p in d.process(pk[k:k + 8])]
    d.close()
    tiles = len(search_tiles(1920, 1080, 64))
    assert [len(p.faces) for p in out] == [0] * 12 + [1] * 8
    face = out[12].faces[0].bbox
    assert x < face[0] < face[2] < x + side and y < face[1] < face[3] < y + side
    # sweeps at frames 0 (all tiles), 7, 8 (nothing changed: the whole frame only), 15 (the tiles
    # around the new face), then tracked: no whole-frame calls between sweeps
    assert d.tiles_searched + d.tiles_skipped >= 4 * (tiles - 1)
    assert tiles - 1 + 4 < len(calls) < 2 * tiles, (len(calls), tiles)
    assert 1 <= d.tiles_searched - (tiles - 1) <= 6, d.tiles_searched


def test_a_face_after_a_cut_is_found_at_once():
    d = DetectStage(DetectSettings(detect_every=8))
    face = next(render_frames(["astronaut"], 1, 640, 360, 0.6))
    out = d.process(packets([background(640, 360)] * 3 + [face]))
    assert [len(p.faces) for p in out] == [0, 0, 0, 1]
    d.close()


def test_a_search_budget_spreads_the_sweep_over_frames(monkeypatch):
    """Live mode: at most `search_budget` detector calls of the tile pyramid a frame, so no frame
    waits for a whole sweep; every tile is still searched, over the following frames."""
    tiles = search_tiles(1920, 1080, 64)
    d = DetectStage(DetectSettings(detect_every=30, search_budget=3))
    d.setup()
    calls: list[list] = []
    real = d._detector.process
    monkeypatch.setattr(d._detector, "process", lambda img: calls[-1].append(img.shape) or real(img))
    frames = [background(1920, 1080)] * (len(tiles) // 3 + 3)
    for p in packets(frames):
        calls.append([])
        d.process([p])
    per_frame = [len(c) for c in calls]
    # no face in view: the whole frame each frame, plus at most 3 tiles of the sweep
    assert max(per_frame) <= 1 + 3, per_frame
    assert sum(per_frame) >= len(tiles) + len(frames) - 1, per_frame  # every tile was searched
    d.close()


def test_a_face_found_by_a_spread_sweep_is_tracked(monkeypatch):
    """A small face only the small tiles find is found within one sweep of budgeted frames."""
    frames = list(islice(render_frames(["astronaut"], 150, 1920, 1080, 0.08), 40))  # a ~45 px face
    d = DetectStage(DetectSettings(detect_every=60, search_budget=4, min_face=32))
    out = [d.process([p])[0] for p in packets(frames)]
    sweep_frames = -(-len(search_tiles(1920, 1080, 32)) // 4)
    first = next(i for i, p in enumerate(out) if p.faces)
    assert 0 < first <= sweep_frames, (first, sweep_frames)  # not in the whole frame: in a tile
    assert all(len(p.faces) == 1 for p in out[first:])  # then tracked, frame after frame
    d.close()


def entering(n: int, width: int = 640, height: int = 360, enter_at: int = 3, side: int = 200):
    """n frames: astronaut's head still on the left; Grace Hopper's head slides in from the right
    edge, first fully in view at frame `enter_at`, then stays. (frames, x centre of her head)."""
    from swapstream.pipeline.samples import head

    bg = background(width, height).astype(np.float32)
    rgb_a, alpha_a = head("astronaut")
    rgb_b, alpha_b = head("grace_hopper")
    stop = width - side * 0.75
    frames, xs = [], []
    for i in range(n):
        cx = stop + max(0, enter_at - i) * side * 0.35  # off the edge before enter_at
        f = bg.copy()
        for rgb, alpha, x in ((rgb_a, alpha_a, side * 0.75), (rgb_b, alpha_b, cx)):
            y = height / 2
            s = side / rgb.shape[0]
            m = np.array([[s, 0, x - s * rgb.shape[1] / 2], [0, s, y - s * rgb.shape[0] / 2]])
            w = cv2.warpAffine(rgb, m, (width, height)).astype(np.float32)
            a = cv2.warpAffine(alpha, m, (width, height))[..., None]
            f = f * (1 - a) + w * a
        frames.append(np.clip(f, 0, 255).astype(np.uint8))
        xs.append(cx)
    return frames, xs


def _first_with_two(out) -> int:
    return next(i for i, p in enumerate(out) if len(p.faces) == 2)


def test_a_face_that_comes_into_view_is_tracked_back_to_its_first_frame():
    """Convert: the batch's closing search finds the new face at frame 7; tracked backwards, it
    has landmarks from the frame it is first fully in view (3), not from the next search."""
    frames, _ = entering(16, enter_at=3)
    ahead = DetectStage(DetectSettings(detect_every=8, look_back=False))
    plain = [p for k in (0, 8) for p in ahead.process(packets(frames, 7000)[k:k + 8])]
    ahead.close()
    back = DetectStage(DetectSettings(detect_every=8))
    out = [p for k in (0, 8) for p in back.process(packets(frames, 7000)[k:k + 8])]
    back.close()
    assert _first_with_two(plain) == 8  # without looking back: from the next search on
    assert _first_with_two(out) <= 3, [len(p.faces) for p in out]
    assert all(len(p.faces) == 2 for p in out[3:])
    # the faces found looking back lie where her head was in those frames
    right = [max(f.bbox[2] for f in p.faces) for p in out[3:8]]
    assert all(r > 500 for r in right), right


def paced(d: DetectStage, pkts: list[FramePacket], fps: float = 30.0) -> list[FramePacket]:
    """Each packet through `d` at a camera's pace (`fps` frames of wall-clock time each)."""
    import time

    out, t = [], time.monotonic()
    for p in pkts:
        out.append(d.process([p])[0])
        t += 1 / fps
        time.sleep(max(0.0, t - time.monotonic()))
    return out


def test_live_finds_a_new_face_within_four_frames():
    """Live cannot look back, and searches on a thread of its own (background): a search starts
    every 3rd frame (the next at once where one is spread over 3 frames) and the faces it finds
    are placed in the first frame after it ends, so a face coming into view while another is
    tracked waits ~3-4 frames (100-130 ms at 30 fps)."""
    from swapstream.pipeline.config import live_detect_defaults

    frames, _ = entering(24, 1280, 720, enter_at=10, side=360)
    d = DetectStage(live_detect_defaults())
    assert d.settings.background
    out = paced(d, packets(frames, 8000))
    d.close()
    counts = [len(p.faces) for p in out]
    # found in frame 0, placed after it ends: a frame or two, ~6 where the detector's thread
    # starts cold (the first search of the process: ~200 ms here)
    assert counts[0] == 0 and 1 in counts[1:9], counts
    first = _first_with_two(out)
    # (partly in view from frame 9; a loaded machine's search may end a frame later)
    assert first <= 10 + 5, counts
    assert all(len(p.faces) == 2 for p in out[first:]), counts


def test_a_background_search_finds_what_a_search_in_line_finds():
    """Three faces: in background mode no frame waits for the search (the first frames go out
    without faces while the tile pyramid is searched on the thread), then all three are placed
    and tracked, with the landmarks the in-line search gives on the same frames."""
    import threading

    frame = next(render_frames(["astronaut", "grace_hopper", "astronaut"], 1, 960, 400, 0.5))
    inline = DetectStage(DetectSettings(look_back=False))
    bg = DetectStage(DetectSettings(look_back=False, background=True))
    want = inline.process(packets([frame] * 12, 9000))
    got = paced(bg, packets([frame] * 12, 9000))
    threads = {t.name.split("_")[0] for t in threading.enumerate()}
    inline.close()
    bg.close()
    counts = [len(p.faces) for p in got]
    assert "face-search" in threads  # the detector ran on its own thread
    assert counts[0] == 0, counts  # the first frame did not wait for the search it started
    first = counts.index(3)  # placed once the search ended (a few frames: ~10 detector calls)
    assert first <= 8 and all(c == 3 for c in counts[first:]), counts
    for w, g in zip(want[first:], got[first:]):
        for a, b in zip(sorted(w.faces, key=lambda f: f.bbox[0]), sorted(g.faces, key=lambda f: f.bbox[0])):
            assert np.abs(a.landmarks - b.landmarks).mean() < 2.0  # px, on 200 px faces


def test_a_background_search_from_before_a_gap_is_not_used():
    """A search started on frames before a gap (a cut, dropped frames that do not continue) is
    dropped: its boxes are of another picture. The face after the gap comes from a new search."""
    face = next(render_frames(["astronaut"], 1, 640, 360, 0.6))
    empty = background(640, 360)
    d = DetectStage(DetectSettings(look_back=False, background=True))
    placed = []  # the boxes of searches that FaceMesh was asked to place (zoom 2.0)
    mesh_around = d._mesh_around
    d._mesh_around = lambda frame, box, zoom, mesh=None: (
        placed.append(box) if zoom == 2.0 else None, mesh_around(frame, box, zoom, mesh))[1]
    first = paced(d, packets([face], 9500))  # starts a search on the face
    after = paced(d, packets([empty] * 4, 9600))  # a new start: the search is stale
    d.close()
    assert first[0].faces == []
    assert placed == [], "a box from before the gap was placed on the frames after it"
    assert all(p.faces == [] for p in after)


def test_a_failed_background_search_is_raised_once_and_the_stage_still_closes():
    """A detector that fails on its thread: the frame after the search ends raises its error
    (the session reports it), and close() still ends the thread and closes every graph."""
    face = next(render_frames(["astronaut"], 1, 640, 360, 0.6))
    d = DetectStage(DetectSettings(look_back=False, background=True))
    d.setup()
    d._detector.close()
    d._detector = None  # an unusable detector: the search raises on the thread
    pkts = packets([face] * 40, 9700)
    with pytest.raises(AttributeError):
        for p in pkts:
            d.process([p])
            __import__("time").sleep(0.01)
    d.close()  # does not raise again
    assert d._pool is None and d._mesh is None and d._pending is None
