"""Hands stage on a real face with a hand drawn over it: MediaPipe's hand landmarker finds it, the
face's occlusion mask covers it, and the blend leaves it in front of the swapped face."""

from __future__ import annotations

from fractions import Fraction

import cv2
import numpy as np
import pytest

from swapstream.core.errors import ConfigError
from swapstream.core.geometry import FACE_OVAL, alignment_matrix, hull_mask, transform_points
from swapstream.core.packet import Face, FramePacket, Why
from swapstream.pipeline.samples import head, render_frames
from swapstream.stages.face.blend import BlendSettings, BlendStage
from swapstream.stages.face.hands import HandSettings, HandsStage
from swapstream.training.occluders import draw_hand

S, COVERAGE = 64, 0.7
W, H = 640, 480


def _landmarks(mesh, image: np.ndarray) -> np.ndarray:
    found = mesh.process(image).multi_face_landmarks
    assert found, "FaceMesh found no face in the sample"
    return np.array([[p.x * image.shape[1], p.y * image.shape[0]] for p in found[0].landmark], np.float32)


@pytest.fixture(scope="module")
def scene():
    """The astronaut at 640x480 with her landmarks (found before the hand is drawn), the frame with
    a hand over her mouth and cheek, the hand's mask (H, W) bool, and Grace Hopper's crop."""
    mp = pytest.importorskip("mediapipe")
    frame = next(render_frames(["astronaut"], 1, W, H))
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True) as mesh:
        lm = _landmarks(mesh, frame)
        grace, _ = head("grace_hopper")
        glm = _landmarks(mesh, grace)
    mouth = lm[13]
    covered, hand = draw_hand(frame, (float(mouth[0]) + 15, float(mouth[1]) + 30), 40, angle=-0.3)
    crop = cv2.warpAffine(grace, alignment_matrix(glm, S, COVERAGE), (S, S))
    return frame, covered, hand, lm, crop


def _face(frame: np.ndarray, lm: np.ndarray, swapped: np.ndarray | None = None) -> Face:
    m = alignment_matrix(lm, S, COVERAGE)
    crop = cv2.warpAffine(frame, m, (S, S))
    return Face(landmarks=lm, matrix=m, crop=crop, swapped=crop if swapped is None else swapped,
                mask=np.ones((S, S), np.float32))


def _packets(frames: list[np.ndarray], lm: np.ndarray, swapped=None) -> list[FramePacket]:
    return [FramePacket(i, i, Fraction(1, 30), f, [_face(f, lm, swapped)], follows=i - 1 if i else None)
            for i, f in enumerate(frames)]


@pytest.mark.parametrize("roi", [256, 192])  # convert's region size and live's
def test_a_hand_over_the_face_is_found_and_masked(scene, roi):
    frame, covered, hand, lm, _ = scene
    stage = HandsStage(HandSettings(roi=roi))
    stage.setup()
    try:
        packets = stage.process(_packets([covered] * 3, lm))
    finally:
        stage.close()
    face = packets[-1].faces[0]
    assert face.occlusion is not None and face.occlusion.shape == (S, S)
    m = face.matrix
    hand_crop = cv2.warpAffine(hand.astype(np.float32), m, (S, S)) > 0.5
    hull = hull_mask(transform_points(lm[FACE_OVAL], m), (S, S)) > 0
    on_face = hand_crop & hull
    assert on_face.sum() > 50, "the drawn hand should cover part of the face"
    # The mask covers the hand where it is over the face, and not much of the face beside it.
    assert face.occlusion[on_face].mean() > 0.9
    assert face.occlusion[hull & ~hand_crop].mean() < 0.25


@pytest.mark.parametrize("look_back", [True, False])
def test_a_hand_the_search_skipped_is_followed_backwards(scene, look_back):
    """Clean frames 0-2, the hand from frame 3; the palm search runs every 4th frame (0, 4) and,
    in a conversion, follows the hand it finds at 4 back to frame 3, where it came in."""
    frame, covered, _, lm, _ = scene
    stage = HandsStage(HandSettings(search_every=4, look_back=look_back))
    stage.setup()
    try:
        packets = stage.process(_packets([frame] * 3 + [covered] * 3, lm))
    finally:
        stage.close()
    marked = [p.faces[0].occlusion is not None for p in packets]
    assert marked == [False, False, False, look_back, True, True]


def test_live_follows_the_hand_on_a_thread_of_its_own(scene):
    """Background mode (live): a frame takes the newest hands the thread found, so the frame a
    hand comes in on is not marked yet (nothing waits for the search), the frames after it are;
    when the hand leaves, the marks stop within STALE frames."""
    import time

    from swapstream.stages.face.hands import STALE

    frame, covered, _, lm, _ = scene
    stage = HandsStage(HandSettings(search_every=1, look_back=False, roi=192, background=True))
    stage.setup()
    marked = []
    try:
        for p in _packets([frame] * 2 + [covered] * 4 + [frame] * (STALE + 3), lm):
            [p] = stage.process([p])
            marked.append(p.faces[0].occlusion is not None)
            deadline = time.monotonic() + 20  # the next camera frame comes after the search ends
            while stage._pending is not None and not stage._pending[0].done() and time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        stage.close()
    assert marked[:3] == [False, False, False]
    assert all(marked[3:6])
    assert not any(marked[-2:])
    with pytest.raises(ConfigError, match="look back"):
        HandSettings(background=True)


def test_no_hand_no_mask_and_no_face_no_search(scene):
    frame, covered, _, lm, _ = scene
    stage = HandsStage()
    stage.setup()
    try:
        [p] = stage.process(_packets([frame], lm))
        assert p.faces[0].occlusion is None
        # A face marked not to be swapped is not looked at, even with a hand over it.
        [q] = _packets([covered], lm)
        q.faces[0].skip(Why.OTHER_PERSON)
        assert stage.process([q])[0].faces[0].occlusion is None
    finally:
        stage.close()


def test_the_blend_keeps_the_hand_in_front(scene):
    _, covered, hand, lm, grace = scene
    stage, blend = HandsStage(), BlendStage(BlendSettings(color="none", occlusion="hands"))
    stage.setup()
    try:
        packets = stage.process(_packets([covered] * 3, lm, swapped=grace))
    finally:
        stage.close()
    out = blend.process(packets[-1:])[0].frame
    hull = hull_mask(lm[FACE_OVAL], (H, W)) > 0
    kept = np.abs(out.astype(int) - covered.astype(int)).max(2) <= 8
    assert kept[hand & hull].mean() > 0.9  # the hand's pixels over the face are the input's
    assert not kept[hull & ~hand].all()  # the face beside it was swapped
    # Without the hands cut the swap paints over the hand.
    packets2 = _packets([covered], lm, swapped=grace)
    out2 = BlendStage(BlendSettings(color="none", occlusion="none")).process(packets2)[0].frame
    kept2 = np.abs(out2.astype(int) - covered.astype(int)).max(2) <= 8
    assert kept2[hand & hull].mean() < 0.6


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="search_every"):
        HandSettings(search_every=0)
    with pytest.raises(ConfigError, match="complexity"):
        HandSettings(complexity=2)
    with pytest.raises(ConfigError, match="roi"):
        HandSettings(roi=64)
