"""Blend stage on real faces: the astronaut sample frame with MediaPipe FaceMesh landmarks."""

from __future__ import annotations

from fractions import Fraction

import cv2
import numpy as np
import pytest

from swapstream.core.color import hist_match, reinhard, rgb_to_lab, sharpen
from swapstream.core.errors import ConfigError
from swapstream.core.geometry import FACE_OVAL, LIPS, alignment_matrix, hull_mask, mouth_gap
from swapstream.core.packet import Face, FramePacket, Why
from swapstream.pipeline.samples import head, render_frames
from swapstream.stages.face.blend import BlendSettings, BlendStage, face_masks

S, COVERAGE = 64, 0.7
PLAIN = BlendSettings(color="none", sharpen="none")


def _landmarks(mesh, image: np.ndarray, n: int = 1) -> list[np.ndarray]:
    found = mesh.process(image).multi_face_landmarks
    assert found is not None and len(found) >= n, "FaceMesh found no face in the sample"
    h, w = image.shape[:2]
    return [np.array([[p.x * w, p.y * h] for p in f.landmark], np.float32) for f in found]


@pytest.fixture(scope="module")
def real():
    """Astronaut frame (240, 320, 3) uint8 RGB with its (478, 2) landmarks, and Grace Hopper's
    64 x 64 aligned crop to swap in."""
    mp = pytest.importorskip("mediapipe")
    frame = next(render_frames(["astronaut"], 1, 320, 240))
    grace, _ = head("grace_hopper")
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True) as mesh:
        lm = _landmarks(mesh, frame)[0]
        glm = _landmarks(mesh, grace)[0]
    grace_crop = cv2.warpAffine(grace, alignment_matrix(glm, S, COVERAGE), (S, S))
    return frame, lm, grace_crop


def make_face(frame: np.ndarray, lm: np.ndarray, swapped=None, mask=None) -> Face:
    """A face as align + swap leave it; swapped defaults to the original crop itself."""
    m = alignment_matrix(lm, S, COVERAGE)
    crop = cv2.warpAffine(frame, m, (S, S))
    return Face(landmarks=lm, matrix=m, crop=crop, swapped=crop if swapped is None else swapped,
                mask=np.ones((S, S), np.float32) if mask is None else mask)


def run(settings: BlendSettings, frame: np.ndarray, faces: list[Face]) -> np.ndarray:
    frame = frame.copy()
    frame.flags.writeable = False  # as a Ray object-store frame would be
    packet = FramePacket(0, 0, Fraction(1, 30), frame, faces)
    stage = BlendStage(settings)
    stage.setup()
    (out,) = stage.process([packet])
    assert stage.flush() == []
    assert out.frame.flags.c_contiguous and out.frame.shape == frame.shape and out.frame.dtype == np.uint8
    return out.frame


def face_region(frame_shape, lm: np.ndarray) -> np.ndarray:
    return hull_mask(lm[FACE_OVAL], frame_shape[:2]) > 0


def far_region(frame_shape, lm: np.ndarray, margin: int = 40) -> np.ndarray:
    """Pixels more than margin px from the face bbox (the whole 64-px crop footprint is inside)."""
    x0, y0 = np.floor(lm.min(0)).astype(int) - margin
    x1, y1 = np.ceil(lm.max(0)).astype(int) + margin
    far = np.ones(frame_shape[:2], bool)
    far[max(y0, 0):y1, max(x0, 0):x1] = False
    return far


def centre(lm: np.ndarray) -> tuple[slice, slice]:
    """9 x 9 px around the nose tip (landmark 1)."""
    x, y = np.round(lm[1]).astype(int)
    return slice(y - 4, y + 5), slice(x - 4, x + 5)


def warped_back(frame: np.ndarray, lm: np.ndarray, crop: np.ndarray) -> np.ndarray:
    m = alignment_matrix(lm, S, COVERAGE)
    return cv2.warpAffine(crop, m, frame.shape[1::-1], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


@pytest.mark.parametrize("composite", ["alpha", "seamless"])
def test_swap_changes_face_only(real, composite):
    frame, lm, grace = real
    settings = BlendSettings(composite=composite)
    out = run(settings, frame, [make_face(frame, lm, swapped=grace)])
    far = far_region(frame.shape, lm)
    assert far.sum() > 0.5 * far.size
    assert np.array_equal(out[far], frame[far])
    # Centre moved toward the swapped face (compared by structure: reinhard recolours it).
    target = warped_back(frame, lm, grace)
    ys, xs = centre(lm)
    gray = lambda im: cv2.Laplacian(cv2.cvtColor(np.ascontiguousarray(im[ys, xs]), cv2.COLOR_RGB2GRAY),
                                    cv2.CV_32F)
    assert _diff(out[ys, xs], frame[ys, xs]) > 5
    assert _diff(gray(out), gray(target)) < _diff(gray(frame), gray(target))


def test_alpha_centre_is_swapped_face(real):
    frame, lm, grace = real
    out = run(PLAIN, frame, [make_face(frame, lm, swapped=grace)])
    target = warped_back(frame, lm, grace)
    ys, xs = centre(lm)
    # Not equal: blend resamples bicubic, the reference bilinear.
    assert _diff(out[ys, xs], target[ys, xs]) < 4
    assert _diff(frame[ys, xs], target[ys, xs]) > 20


# A face 2.5x larger than the 64-px crop loses detail in the crop itself: a looser bound.
@pytest.mark.parametrize("zoom, tolerance", [(1.0, 3), (0.4, 3), (2.5, 4.5)])
def test_original_crop_round_trips(real, zoom, tolerance):
    """Blending the unchanged crop back is (nearly) a no-op, at the crop's scale, for a small face
    (crop shrunk before the warp back) and for a large one (crop enlarged)."""
    frame, lm, _ = real
    if zoom != 1.0:
        frame = cv2.resize(frame, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_AREA)
        lm = (lm + 0.5) * zoom - 0.5
    out = run(PLAIN, frame, [make_face(frame, lm)])
    region = face_region(frame.shape, lm)
    assert _diff(out[region], frame[region]) < tolerance


def test_input_frame_untouched_and_replaced(real):
    frame, lm, grace = real
    before = frame.copy()
    packet = FramePacket(0, 0, Fraction(1, 30), frame, [make_face(frame, lm, swapped=grace)])
    BlendStage().process([packet])
    assert packet.frame is not frame
    assert np.array_equal(frame, before)


def test_reinhard_matches_lab_mean(real):
    frame, lm, grace = real
    face = make_face(frame, lm, swapped=grace)
    hard, _ = face_masks(face, BlendSettings())
    sel = hard > 0.5
    out = reinhard(grace, face.crop, hard)
    want = rgb_to_lab(face.crop)[sel].mean(0)
    assert np.abs(rgb_to_lab(grace)[sel].mean(0) - want).max() > 5
    assert np.abs(rgb_to_lab(out)[sel].mean(0) - want).max() < 1.5
    assert np.abs(rgb_to_lab(out)[sel].std(0) - rgb_to_lab(face.crop)[sel].std(0)).max() < 1.5


def test_hist_match_reduces_distance(real):
    frame, lm, grace = real
    face = make_face(frame, lm, swapped=grace)
    hard, _ = face_masks(face, BlendSettings())
    sel = hard > 0.5

    def distance(img):  # per-channel 1-D Wasserstein distance over the masked pixels
        return sum(np.abs(np.sort(img[..., c][sel].astype(float)) - np.sort(face.crop[..., c][sel])).mean()
                   for c in range(3))

    out = hist_match(grace, face.crop, hard)
    assert distance(out) < 0.2 * distance(grace)
    assert distance(out) < 3


def _sharpness(img: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


@pytest.mark.parametrize("mode", ["unsharp", "gaussian", "box"])
def test_sharpen_modes(real, mode):
    frame, lm, _ = real
    blurred = cv2.GaussianBlur(make_face(frame, lm).crop, (0, 0), 1.0)
    assert _sharpness(sharpen(blurred, mode, 0.8)) > 1.3 * _sharpness(blurred)
    assert np.array_equal(sharpen(blurred, mode, 0.0), blurred)
    # Through the stage: sharpening the round-tripped crop sharpens the face in the frame.
    face = make_face(frame, lm, swapped=blurred)
    soft = run(PLAIN, frame, [face])
    sharp = run(BlendSettings(color="none", sharpen=mode, sharpen_amount=1.0), frame, [face])
    zero = run(BlendSettings(color="none", sharpen=mode, sharpen_amount=0.0), frame, [face])
    x0, y0 = np.floor(lm.min(0)).astype(int)
    x1, y1 = np.ceil(lm.max(0)).astype(int)
    box = np.s_[y0 + 10:y1 - 10, x0 + 10:x1 - 10]
    assert _sharpness(np.ascontiguousarray(sharp[box])) > _sharpness(np.ascontiguousarray(soft[box]))
    assert np.array_equal(zero, soft)


def shifted(frame: np.ndarray, lm: np.ndarray, dx: float, dy: float) -> tuple[np.ndarray, np.ndarray]:
    """The frame translated by (dx, dy) (edges replicated) and the landmarks with it."""
    t = np.float64([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(frame, t, frame.shape[1::-1], borderMode=cv2.BORDER_REPLICATE), lm + [dx, dy]


@pytest.mark.parametrize("composite", ["alpha", "seamless"])
@pytest.mark.parametrize("dx, dy", [(-150, 0), (0, 100), (-128, -80), (140, 0)])
def test_face_at_frame_border(real, composite, dx, dy):
    frame, lm, grace = real
    frame, lm = shifted(frame, lm, dx, dy)
    out = run(BlendSettings(composite=composite), frame, [make_face(frame, lm, swapped=grace)])
    changed = np.abs(out.astype(int) - frame).max(2) > 0
    assert changed.sum() > 100
    far = far_region(frame.shape, lm)
    assert np.array_equal(out[far], frame[far])


def test_seamless_needs_the_frame_around_the_face(real):
    frame, lm, grace = real
    frame, lm = shifted(frame, lm, -150, 0)  # face cut by the left edge: alpha fallback
    face = make_face(frame, lm, swapped=grace)
    assert np.array_equal(run(BlendSettings(composite="seamless"), frame, [face]),
                          run(BlendSettings(composite="alpha"), frame, [face]))


def test_seamless_near_the_border(real):
    frame, lm, grace = real
    frame, lm = shifted(frame, lm, 8 - lm[:, 0].min(), 0)  # whole face inside, 8 px from the edge
    face = make_face(frame, lm, swapped=grace)
    seamless = run(BlendSettings(composite="seamless"), frame, [face])
    alpha = run(BlendSettings(composite="alpha"), frame, [face])
    assert _diff(seamless, alpha) > 0.1  # Poisson cloning ran, no fallback
    far = far_region(frame.shape, lm)
    assert np.array_equal(seamless[far], frame[far])


def test_small_and_off_frame_faces(real):
    frame, lm, grace = real
    small = cv2.resize(frame, None, fx=0.4, fy=0.4, interpolation=cv2.INTER_AREA)
    lm_small = (lm + 0.5) * 0.4 - 0.5  # face ~20 px wide: the 64-px crop is shrunk before the warp
    out = run(BlendSettings(composite="seamless"), small, [make_face(small, lm_small, swapped=grace)])
    x, y = np.round(lm_small[1]).astype(int)
    assert _diff(out[y - 2:y + 3, x - 2:x + 3], small[y - 2:y + 3, x - 2:x + 3]) > 5
    far = far_region(small.shape, lm_small, margin=20)
    assert np.array_equal(out[far], small[far])
    # A face wholly outside the frame (tracked off-screen) changes nothing.
    gone = make_face(frame, lm, swapped=grace)
    gone.landmarks = lm + np.float32([1000, 0])
    gone.matrix = alignment_matrix(gone.landmarks, S, COVERAGE)
    assert np.array_equal(run(BlendSettings(), frame, [gone]), frame)


def test_faces_not_ready_are_untouched(real):
    frame, lm, grace = real
    bad = make_face(frame, lm, swapped=grace)
    bad.skip(Why.ALIGNMENT, "landmarks jumped")
    unswapped = make_face(frame, lm)
    unswapped.swapped = None
    degenerate = make_face(frame, lm, swapped=grace)
    degenerate.matrix = np.zeros((2, 3))
    assert np.array_equal(run(BlendSettings(), frame, [bad, unswapped, degenerate]), frame)
    assert degenerate.skipped_for(Why.DEGENERATE)
    assert np.array_equal(run(BlendSettings(), frame, []), frame)


def test_learned_mask_limits_the_swap(real):
    frame, lm, grace = real
    empty = np.zeros((S, S), np.float32)
    for mode in ("learned", "hull+learned"):
        out = run(BlendSettings(mask=mode), frame, [make_face(frame, lm, swapped=grace, mask=empty)])
        assert np.array_equal(out, frame)
    # The hull with occlusion "learned" or "both" (the default) still cuts what the learned mask
    # leaves out; with "hands" or "none" it ignores the learned mask.
    for occlusion in ("learned", "both"):
        out = run(BlendSettings(mask="hull", occlusion=occlusion), frame,
                  [make_face(frame, lm, swapped=grace, mask=empty)])
        assert np.array_equal(out, frame)
    for occlusion in ("hands", "none"):
        out = run(BlendSettings(mask="hull", occlusion=occlusion), frame,
                  [make_face(frame, lm, swapped=grace, mask=empty)])
        assert not np.array_equal(out, frame)


def test_learned_occlusion_leaves_the_occluder_whole(real):
    """A learned mask that says "face" (0.95) except over a disc on the cheek (0.15, as a decoder
    trained with occluders reads a cup there): the disc's pixels are the frame's own, every one
    of them (not a 15 % blend of the swap), the face around it is swapped; with occlusion "none"
    the disc is painted over."""
    frame, lm, grace = real
    mask = np.full((S, S), 0.95, np.float32)
    cv2.circle(mask, (24, 40), 7, 0.15, -1)
    face = make_face(frame, lm, swapped=grace, mask=mask)
    disc = cv2.warpAffine((mask < 0.5).astype(np.float32), face.matrix,
                          frame.shape[1::-1], flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP) > 0
    assert disc.sum() > 50
    out = run(PLAIN, frame, [make_face(frame, lm, swapped=grace, mask=mask)])
    diff = np.abs(out.astype(int) - frame.astype(int)).max(2)
    assert diff[disc].max() <= 1
    assert diff[face_region(frame.shape, lm) & ~disc].mean() > 10
    painted = run(BlendSettings(color="none", sharpen="none", occlusion="none"), frame,
                  [make_face(frame, lm, swapped=grace, mask=mask)])
    assert np.abs(painted.astype(int) - frame.astype(int)).max(2)[disc].mean() > 10


def test_two_faces_in_one_frame(real):
    frame, lm, grace = real
    wide = np.ascontiguousarray(np.hstack([frame, frame]))
    lm2 = lm + np.float32([frame.shape[1], 0])
    faces = [make_face(wide, lm, swapped=grace), make_face(wide, lm2, swapped=grace)]
    for composite in ("alpha", "seamless"):
        out = run(BlendSettings(composite=composite), wide, faces)
        for points in (lm, lm2):
            ys, xs = centre(points)
            assert _diff(out[ys, xs], wide[ys, xs]) > 5
        far = far_region(wide.shape, lm) & far_region(wide.shape, lm2)
        assert np.array_equal(out[far], wide[far])


def test_feather_scales_with_the_face(real):
    """A face 3x larger in the frame gets a 3x wider soft edge: same look at any size."""
    frame, lm, grace = real
    big = cv2.resize(frame, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
    lm3 = (lm + 0.5) * 3 - 0.5

    def soft_band(img, points):
        out = run(PLAIN, img, [make_face(img, points, swapped=grace)])
        target = warped_back(img, points, grace)
        # share of the way from the frame to the swapped face, per pixel, along a row through the nose
        y = int(round(points[1, 1]))
        num = out[y].astype(float) - img[y]
        den = target[y].astype(float) - img[y]
        ok = np.abs(den).max(1) > 30
        t = np.where(ok, (num * den).sum(1) / np.maximum((den * den).sum(1), 1), np.nan)
        return np.sum((t > 0.1) & (t < 0.9))  # pixels in the feather on that row

    small_band, big_band = soft_band(frame, lm), soft_band(big, lm3)
    assert small_band > 0
    assert 2 < big_band / small_band < 4.5


@pytest.mark.parametrize("field, value", [
    ("color", "lab"), ("sharpen", "laplace"), ("composite", "poisson"), ("mask", "oval"),
    ("erode", -0.1), ("feather", float("nan")), ("sharpen_amount", -1), ("feather", "wide"),
])
def test_bad_settings_raise_config_error(field, value):
    with pytest.raises(ConfigError, match=str(value) if isinstance(value, str) else field):
        BlendSettings(**{field: value})


def test_an_open_mouth_is_kept_where_the_model_cannot_draw_one(real):
    """The astronaut smiles with parted lips; Grace Hopper's mouth is closed. With a model whose
    faceset showed no open mouth, `auto` keeps the astronaut's mouth interior, `swap` paints
    Grace's closed lips over it, `keep` always keeps it."""
    from swapstream.core.geometry import INNER_LIPS, mouth_gap, polygon_mask

    frame, lm, grace = real
    assert mouth_gap(lm) > 0.05  # lips apart
    inner = polygon_mask(lm[INNER_LIPS], frame.shape[:2]) > 0
    core = cv2.erode(inner.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0  # away from the edge
    assert core.sum() > 20

    def mouth_kept(mode: str, reach: float | None) -> float:
        face = make_face(frame, lm, swapped=grace)
        out = BlendStage(BlendSettings(color="none", mouth=mode), mouth_reach=reach).process(
            [FramePacket(0, 0, Fraction(1, 30), frame.copy(), [face])])[0].frame
        return float((np.abs(out.astype(int) - frame.astype(int)).max(2)[core] <= 8).mean())

    assert mouth_kept("auto", 0.01) > 0.95  # B never opened its mouth: A's stays
    assert mouth_kept("keep", 0.5) > 0.95
    assert mouth_kept("swap", 0.01) < 0.5
    assert mouth_kept("auto", 0.5) < 0.5  # B's faceset shows wider mouths than this: swapped
    with pytest.raises(ConfigError, match="mouth"):
        BlendSettings(mouth="open")
    with pytest.raises(ConfigError, match="occlusion"):
        BlendSettings(occlusion="xseg")


@pytest.fixture(scope="module")
def closed_mouth():
    """Grace Hopper's frame (240, 320, 3) uint8 RGB, lips closed, with its (478, 2) landmarks, the
    astronaut's 64 x 64 aligned crop (an open smile, teeth showing) as what B's decoder draws,
    and a FaceMesh to measure the output's lip gap with."""
    mp = pytest.importorskip("mediapipe")
    frame = next(render_frames(["grace_hopper"], 1, 320, 240))
    smile, _ = head("astronaut")
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True) as mesh:
        lm = _landmarks(mesh, frame)[0]
        slm = _landmarks(mesh, smile)[0]
        crop = cv2.warpAffine(smile, alignment_matrix(slm, S, COVERAGE), (S, S))
        yield frame, lm, crop, lambda image: mouth_gap(_landmarks(mesh, image)[0])


def test_a_closed_mouth_is_kept_where_the_model_only_draws_an_open_one(closed_mouth):
    """Grace Hopper's lips are closed; the astronaut's decoder draws an open smile. With a model
    whose faceset's narrowest mouth (mouth_floor) is wider than Grace's, `auto` keeps her whole
    mouth, lips included, and the output's lips stay closed; a model without a recorded floor (old
    model.json), or one whose faceset shows closed lips, swaps the open smile in as before."""
    frame, lm, smile, gap_of = closed_mouth
    assert mouth_gap(lm) < 0.01 and gap_of(frame) < 0.01  # lips closed
    lips = hull_mask(lm[LIPS], frame.shape[:2]) > 0  # the whole mouth in the frame
    assert lips.sum() > 60

    def blended(mode: str = "auto", floor: float | None = 0.06, color: str = "none", **people) -> np.ndarray:
        face = make_face(frame, lm, swapped=smile)
        face.person = people.pop("person", -1)
        stage = BlendStage(BlendSettings(color=color, mouth=mode), mouth_reach=0.09, mouth_floor=floor,
                           **people)
        return stage.process([FramePacket(0, 0, Fraction(1, 30), frame.copy(), [face])])[0].frame

    def lips_kept(out: np.ndarray) -> float:
        return float((np.abs(out.astype(int) - frame.astype(int)).max(2)[lips] <= 8).mean())

    for color in ("none", "reinhard"):
        out = blended(color=color)
        assert lips_kept(out) > 0.95, color
        assert gap_of(out) < 0.01, color  # still closed when measured on the output
        assert _diff(out[centre(lm)], frame[centre(lm)]) > 5  # the rest of the face is swapped
    old = blended(floor=None)
    assert lips_kept(old) < 0.3
    assert gap_of(old) > 0.04  # B's open smile over A's closed mouth
    assert lips_kept(blended(floor=0.02)) < 0.3  # B's faceset shows closed lips: B draws them
    assert lips_kept(blended("swap")) < 0.3
    assert np.array_equal(blended("keep"), blended("keep", floor=None))  # the interior only, as before
    # a --map: the floor of the face's person's model, not the chain's first model's
    assert lips_kept(blended(floor=None, person=0, person_floor=(0.06,))) > 0.95
    assert lips_kept(blended(floor=0.06, person=0, person_floor=(None,))) < 0.3


def test_the_lips_weight_ramps_with_the_gap_below_the_floor(real):
    """mouth_weight's lips share: 1 well below the floor, 0 from FLOOR_MARGIN below it, smooth
    (monotonic, no step larger than the gap moves) between; the interior share unchanged."""
    from swapstream.stages.face.masks import FLOOR_MARGIN, MOUTH_RAMP, mouth_weight

    _, lm, _ = real  # lips parted: gap ~0.067
    g = mouth_gap(lm)
    face = Face(landmarks=lm)
    floors = g + FLOOR_MARGIN + np.linspace(-0.01, MOUTH_RAMP + 0.01, 41)
    w = np.array([mouth_weight(face, "auto", 0.5, f)[1] for f in floors])
    assert w[0] == 0.0 and w[-1] == 1.0
    assert np.all(np.diff(w) >= 0) and np.abs(np.diff(w)).max() <= np.diff(floors).max() / MOUTH_RAMP + 1e-9
    assert mouth_weight(face, "auto", 0.5, None) == (0.0, 0.0)  # old model: as before
    assert mouth_weight(face, "auto", 0.01, None) == (1.0, 0.0)
    assert mouth_weight(face, "keep", 0.5, 1.0) == (1.0, 0.0)
    assert mouth_weight(face, "swap", 0.01, 1.0) == (0.0, 0.0)
