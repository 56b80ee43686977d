"""The whole-face crop (--face whole): the forehead inside the crop on a real face, the same crop in
training and at conversion, and the default crop unchanged bit for bit."""

import math
from fractions import Fraction

import cv2
import numpy as np
import pytest

from swapstream.core.faceset import load_faceset
from swapstream.core.geometry import (
    FACE_OVAL,
    STABLE_LANDMARKS,
    alignment_matrix,
    crop_face,
    face_template,
    template_in_crop,
    transform_points,
    umeyama,
)
from swapstream.core.packet import Face, FramePacket
from swapstream.pipeline.samples import render_frames
from swapstream.stages.face.align import AlignSettings, AlignStage
from swapstream.training.augment import AugmentConfig, TrainingFaces, crop_to_faceset, working_size

FOREHEAD = [10, 338, 297, 109, 67]  # MediaPipe's top points, on the upper forehead
S = 256


@pytest.fixture(scope="module")
def astronaut() -> tuple[np.ndarray, np.ndarray]:
    """(frame (480, 640, 3) uint8, its (478, 2) float32 MediaPipe landmarks)."""
    import mediapipe as mp

    frame = next(render_frames(["astronaut"], 1, 640, 480, 0.7))
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True) as mesh:
        res = mesh.process(frame)
    lm = np.array([[p.x * 640, p.y * 480] for p in res.multi_face_landmarks[0].landmark], np.float32)
    return frame, lm


def _aligned(frame: np.ndarray, lm: np.ndarray, **kw) -> Face:
    align = AlignStage(AlignSettings(smoothing=False, **kw))
    [p] = align.process([FramePacket(0, 0, Fraction(1, 30), frame, [Face(lm.copy())])])
    return p.faces[0]


def test_whole_face_crop_keeps_the_forehead(astronaut):
    frame, lm = astronaut
    whole = _aligned(frame, lm, size=S, face="whole")
    assert whole.ok and whole.crop.shape == (S, S, 3)
    pts = transform_points(lm, whole.matrix)  # crop px
    top = pts[FOREHEAD, 1]
    assert (top > 0.1 * S).all() and (top < 0.3 * S).all(), top / S  # room above for the hairline
    assert ((pts[FOREHEAD, 0] > 0) & (pts[FOREHEAD, 0] < S)).all()
    assert ((pts[FACE_OVAL] > 0) & (pts[FACE_OVAL] < S)).all()  # forehead to chin, cheek to cheek
    face = _aligned(frame, lm, size=S, coverage=0.7)
    top_face = transform_points(lm, face.matrix)[FOREHEAD, 1]
    assert (top_face < 0.06 * S).all()  # the default crop ends at the top of the mesh
    assert (top - top_face > 0.12 * S).all()
    # what is above the mesh's top in the whole crop is the forehead: the same skin tones as the
    # forehead's points, not the background
    y0 = int(top.min())
    band = whole.crop[int(0.6 * y0):y0, int(pts[109, 0]):int(pts[338, 0])].reshape(-1, 3).astype(float)
    skin = whole.crop[int(pts[10, 1]) + 3, int(pts[10, 0])].astype(float)
    assert np.median(np.abs(band - skin).sum(1)) < 60


def test_default_crop_is_unchanged(astronaut, facesets):
    """"face" is the crop of before the option, bit for bit: align, and training's map and side."""
    frame, lm = astronaut
    tpl = (face_template().astype(np.float64) - 0.5) * (64 * 0.7) + 64 / 2  # the formula of before
    assert np.array_equal(template_in_crop(64, 0.7), tpl)
    expected = umeyama(lm[STABLE_LANDMARKS], tpl[STABLE_LANDMARKS])
    default = _aligned(frame, lm)  # AlignSettings() as convert and live built it before
    assert np.array_equal(default.matrix, expected)
    assert np.array_equal(default.crop, crop_face(frame, expected, 64))
    assert np.array_equal(_aligned(frame, lm, face="face").matrix, expected)
    m = umeyama(template_in_crop(256, 0.5), tpl)
    assert np.array_equal(crop_to_faceset(64, 0.7, 256, 0.5), crop_to_faceset(64, 0.7, 256, 0.5, "face"))
    f2c = np.vstack([m, [0, 0, 1]])
    to_norm = lambda n: np.array([[2 / n, 0, 1 / n - 1], [0, 2 / n, 1 / n - 1], [0, 0, 1]])  # noqa: E731
    assert np.array_equal(crop_to_faceset(64, 0.7, 256, 0.5),
                          to_norm(256) @ np.linalg.inv(f2c) @ np.linalg.inv(to_norm(64)))
    assert working_size(64, 0.7, 256, 0.5) == min(256, math.ceil(256 * 64 * 0.7 / (256 * 0.5)))
    fs = load_faceset(facesets[0])
    assert TrainingFaces(fs, 64, 0.7).face == "face"


def test_training_crop_is_the_align_crop(facesets):
    """TrainingFaces(face="whole") cuts from the faceset what the align stage cuts from a frame."""
    fs = load_faceset(facesets[0])
    n, s, cov = 6, 64, 0.7
    data = TrainingFaces(fs, s, cov, face="whole")
    assert data.faces.shape[-1] == working_size(s, cov, 256, 0.5, "whole") < working_size(s, cov, 256, 0.5)
    train = data._crop(data.faces[:n], AugmentConfig.off(), None)[1].permute(0, 2, 3, 1).numpy() * 255
    # the align stage's matrix, from each face's own landmarks; the faceset image low-passed first
    # (what training's anti-aliased pre-shrink does: 0.28 crop px a faceset px here)
    sigma = 1.5 * 0.35 / (s * cov * 0.8 / 128)
    align = np.stack([cv2.warpAffine(cv2.GaussianBlur(fs.images[i], (0, 0), sigma),
                                     alignment_matrix(fs.landmarks[i], s, cov, "whole"), (s, s),
                                     flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                      for i in range(n)]).astype(float)
    assert np.abs(train - align).mean() < 1.5, np.abs(train - align).mean()
    plain = TrainingFaces(fs, s, cov).fixed(n).permute(0, 2, 3, 1).numpy() * 255
    assert np.abs(plain - align).mean() > 10  # the whole crop is another crop
    # the training crop of every face has the forehead inside, well below the top
    m = umeyama(template_in_crop(256, 0.5), template_in_crop(s, cov, "whole"))
    top = np.stack([transform_points(lm[FOREHEAD], m) for lm in fs.landmarks])[..., 1]
    assert (top > 0.1 * s).all() and (top < 0.3 * s).all()


def test_unknown_face_type_is_a_config_error():
    from swapstream.core.errors import ConfigError
    from swapstream.training.config import TrainConfig

    with pytest.raises(ConfigError, match="face 'full' is not one of face, whole"):
        TrainConfig("a", "b", "o", face="full").validate()
    with pytest.raises(ConfigError, match="face type 'full'"):
        AlignSettings(face="full")
