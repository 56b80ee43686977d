"""Align stage: geometry round trip with real landmarks, smoothing, tracks and scene cuts."""

from fractions import Fraction

import cv2
import numpy as np
import pytest

from swapstream.core.geometry import STABLE_LANDMARKS, invert_affine, transform_points, umeyama
from swapstream.core.packet import Face, FramePacket
from swapstream.core.smoothing import OneEuro
from swapstream.pipeline.samples import background, render_frames
from swapstream.stages.face.align import AlignSettings, AlignStage
from swapstream.stages.face.detect import DetectStage


@pytest.fixture(scope="module")
def mesh():
    import mediapipe as mp

    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True) as m:
        yield m


def landmarks_of(mesh, img):
    res = mesh.process(img)
    h, w = img.shape[:2]
    return np.array([[p.x * w, p.y * h] for p in res.multi_face_landmarks[0].landmark], np.float32)


def test_umeyama_recovers_a_similarity():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (30, 2))
    a = np.deg2rad(25)
    m = np.array([[1.7 * np.cos(a), -1.7 * np.sin(a), 12], [1.7 * np.sin(a), 1.7 * np.cos(a), -5]])
    np.testing.assert_allclose(umeyama(src, transform_points(src, m)), m, atol=1e-9)


def test_crop_then_warp_back_lands_within_1px(mesh):
    """Landmarks found again on the aligned crop, mapped back to the frame, match the originals."""
    frame = next(render_frames(["astronaut"], 1, 640, 480, 0.7))
    lm = landmarks_of(mesh, frame)
    align = AlignStage(AlignSettings(size=256, coverage=0.5, smoothing=False))
    [p] = align.process([FramePacket(0, 0, Fraction(1, 30), frame, [Face(lm)])])
    face = p.faces[0]
    assert face.crop.shape == (256, 256, 3) and face.ok
    back = transform_points(landmarks_of(mesh, face.crop), invert_affine(face.matrix))
    err = np.linalg.norm(back - lm, axis=1)[STABLE_LANDMARKS]
    assert err.mean() < 1.0, err.mean()


def test_one_euro_cuts_jitter_and_follows_motion():
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 100, (478, 2))
    f = OneEuro()
    still = [f(base + rng.normal(0, 1.5, base.shape), i / 30) for i in range(90)]
    assert np.std(np.array(still[30:]) - base) < 0.45 * 1.5
    f = OneEuro()
    moving = [f(base + [200 * i / 30, 0], i / 30) for i in range(60)]  # 200 px/s, a face of 100 px
    lag = np.abs(moving[-1] - (base + [200 * 59 / 30, 0])).max()
    assert lag < 10, lag


def test_tracks_persist_and_reset_at_a_scene_cut():
    frames = list(render_frames(["astronaut", "grace_hopper"], 90, 560, 300, 0.6))[:10]
    frames += [background(560, 300, seed=9)] + list(render_frames(["astronaut"], 90, 560, 300, 0.6))[:5]
    pk = [FramePacket(i, i, Fraction(1, 30), f, follows=i - 1 if i else None) for i, f in enumerate(frames)]
    DetectStage().process(pk)
    AlignStage().process(pk)
    before = [sorted(f.track for f in p.faces) for p in pk[:10]]
    assert before == [before[0]] * 10 and len(before[0]) == 2
    after = {f.track for p in pk[11:] for f in p.faces}
    assert after and not after & set(before[0])
    for p in pk[:10]:
        for f in p.faces:
            assert f.crop.shape == (64, 64, 3) and f.crop.dtype == np.uint8


def test_smoothing_reduces_crop_jitter_on_video():
    """Landmark noise across frames of a still face: the aligned crop moves less when smoothed."""
    frame = next(render_frames(["astronaut"], 1, 400, 300, 0.6))
    lm = DetectStage().process([FramePacket(0, 0, Fraction(1, 30), frame)])[0].faces[0].landmarks
    rng = np.random.default_rng(2)
    shifts = {}
    for smoothing in (False, True):
        align = AlignStage(AlignSettings(smoothing=smoothing))
        pk = [FramePacket(i, i, Fraction(1, 30), frame, [Face(lm + rng.normal(0, 1.0, lm.shape))],
                          follows=i - 1 if i else None) for i in range(40)]
        align.process(pk)
        shifts[smoothing] = np.std([p.faces[0].matrix[:, 2] for p in pk[10:]], axis=0).mean()
    assert shifts[True] < 0.5 * shifts[False], shifts


def test_large_faces_are_area_averaged():
    frame = next(render_frames(["astronaut"], 1, 1280, 1080, 1.0))
    pk = [FramePacket(0, 0, Fraction(1, 30), frame)]
    DetectStage().process(pk)
    AlignStage().process(pk)
    crop = pk[0].faces[0].crop
    # aliasing shows as high-frequency energy: an area-averaged crop is close to its own blur
    assert np.abs(crop.astype(float) - cv2.GaussianBlur(crop, (3, 3), 0)).mean() < 6


def test_smoothing_runs_on_the_frames_own_clock():
    """Live frames carry capture times, not pts: the One Euro filter takes the real time step, so
    the same landmark noise is smoothed more at 30 fps than at 5 fps (each step is 6x longer)."""
    frame = next(render_frames(["astronaut"], 1, 400, 300, 0.6))
    lm = DetectStage().process([FramePacket(0, 0, Fraction(1, 30), frame)])[0].faces[0].landmarks
    noise = np.random.default_rng(3).normal(0, 1.0, (40, *lm.shape))
    jitter = {}
    for fps in (30, 5):
        align = AlignStage(AlignSettings())
        pk = [FramePacket(i, None, Fraction(1, 30), frame, [Face(lm + noise[i])],
                          follows=i - 1 if i else None, capture_time=100.0 + i / fps) for i in range(40)]
        align.process(pk)
        jitter[fps] = np.std([p.faces[0].landmarks - lm for p in pk[10:]])
    assert jitter[30] < 0.8 * jitter[5] < 0.8 * 1.0, jitter


def test_tracks_continue_over_dropped_frames_and_restart_without_follows():
    frames = list(render_frames(["astronaut"], 30, 400, 300, 0.6))
    det, align = DetectStage(), AlignStage()
    # frames 0, 1, then 5 (2-4 dropped before the chain: 5 follows 1), then 6 starting afresh
    tb = Fraction(1, 30)
    pk = [FramePacket(0, 0, tb, frames[0]), FramePacket(1, 1, tb, frames[1], follows=0),
          FramePacket(5, 5, tb, frames[5], follows=1), FramePacket(6, 6, tb, frames[6])]
    align.process(det.process(pk))
    tracks = [p.faces[0].track for p in pk]
    assert tracks[0] == tracks[1] == tracks[2] != tracks[3]
