import dataclasses

import cv2
import numpy as np
import pytest
import torch

from swapstream.core.faceset import load_faceset
from swapstream.core.geometry import LEFT_EYE, LIPS, RIGHT_EYE, template_in_crop
from swapstream.training.augment import AugmentConfig, TrainingFaces, augment, prepare_faces, working_size

S, COV = 64, 0.7
OFF = AugmentConfig.off()


def _gen(seed: int = 0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _faceset_to_crop(p: np.ndarray) -> np.ndarray:
    """The documented map, written out independently of the code under test."""
    return (p - 128) * S * COV / 128 + S / 2


@pytest.fixture(scope="module")
def faces_a(facesets):
    return load_faceset(facesets[0])


@pytest.fixture(scope="module")
def data_a(faces_a):
    return TrainingFaces(faces_a, S, COV)


def test_shapes_dtypes_ranges(data_a):
    warped, target, mask = data_a.sample(8, _gen())
    assert warped.shape == target.shape == (8, 3, S, S) and mask.shape == (8, 2, S, S)
    for x in (warped, target, mask):
        assert x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
    assert 0.4 < mask[:, 0].mean() < 0.9  # the face hull fills most of a coverage-0.7 crop
    assert 0.05 < mask[:, 1].mean() < 0.25  # eyes + mouth: a part of the face
    assert (mask[:, 1] - mask[:, 0]).clamp(min=0).mean() < 0.01  # ... inside the hull
    assert data_a.faces.dtype == torch.uint8 and data_a.faces.shape[1] == 5
    assert data_a.faces.shape[-1] == working_size(S, COV, 256, 0.5) < 256  # pre-shrunk once


def test_warp_moves_only_the_input(data_a):
    off = dataclasses.replace(AugmentConfig(), warp=False)
    w0, t0, m0 = data_a._crop(data_a.faces[:8], off, _gen(3))
    assert torch.equal(w0, t0)  # no warp: the input is the target
    w1, t1, m1 = data_a._crop(data_a.faces[:8], AugmentConfig(), _gen(3))
    assert torch.equal(t1, t0) and torch.equal(m1, m0)  # same affine draw, warp on or off
    diff = (w1 - t1).abs().mean()
    assert 0.005 < diff < 0.1  # warped, but still the same face


def test_target_is_the_plain_aligned_crop(faces_a, data_a):
    target = data_a._crop(data_a.faces, OFF, None)[1].permute(0, 2, 3, 1).numpy() * 255  # (N, S, S, 3)
    k = S * COV / 128
    m = np.array([[k, 0, S / 2 - 128 * k], [0, k, S / 2 - 128 * k]])
    # OpenCV reference: low-pass (what the anti-aliased shrink does) then the affine crop
    ref = np.stack([cv2.warpAffine(cv2.GaussianBlur(im, (0, 0), 1.2), m, (S, S), flags=cv2.INTER_LINEAR)
                    for im in faces_a.images])
    assert np.abs(target - ref).mean() < 2.5


def test_affine_moves_target_and_mask_alike(faces_a):
    # put a copy of the red channel into the mask channel: after augmentation they must agree
    imgs = faces_a.images[:6]
    faces = prepare_faces(imgs, imgs[..., 0].copy(), working_size(S, COV, 256, 0.5))  # (6, 4, ...)
    cfg = dataclasses.replace(AugmentConfig(), rotation=30.0, scale=0.2, shift=0.1)
    _, target, mask = augment(faces, S, COV, cfg, _gen(1))
    assert mask.shape == (6, 1, S, S)  # a 4-channel faceset gives the hull only
    torch.testing.assert_close(mask[:, 0], target[:, 0], atol=1e-6, rtol=0)
    base = augment(faces, S, COV, OFF)[1]
    assert (target - base).abs().mean() > 0.02  # the affine did move things


def test_feature_mask_moves_with_the_target(data_a):
    # the real feature mask copied into the RGB channels: the affine (flip included) and the crop
    # must move mask channel 1 exactly as it moves the target
    faces = data_a.faces[:8][:, [4, 4, 4, 3, 4]]
    cfg = dataclasses.replace(AugmentConfig(), rotation=30.0, scale=0.2, shift=0.1, flip=0.5)
    warped, target, mask = augment(faces, S, COV, cfg, _gen(2))
    assert mask.shape == (8, 2, S, S)
    torch.testing.assert_close(mask[:, 1], target[:, 0], atol=1e-6, rtol=0)
    still = augment(faces, S, COV, OFF)[2][:, 1]
    assert (mask[:, 1] - still).abs().mean() > 0.02  # it did move
    assert (warped[:, 0] - mask[:, 1]).abs().mean() > 0.005  # and the warp moved the input only


def test_feature_mask_lands_on_the_crop_eyes_and_mouth(faces_a, data_a):
    mask = data_a._crop(data_a.faces, OFF, None)[2][:, 1]  # (N, S, S)
    lm = _faceset_to_crop(faces_a.landmarks.astype(np.float64))  # (N, 478, 2) crop px
    for idx in (RIGHT_EYE, LEFT_EYE, LIPS):
        x, y = np.round(lm[:, idx].mean(1)).astype(int).T  # (N,) centres
        assert (mask[np.arange(len(mask)), y, x] > 0.99).all()
    x, y = np.round(lm[:, 50]).astype(int).T  # right cheek
    assert (mask[np.arange(len(mask)), y, x] < 0.01).all()


def test_flip_mirrors_about_the_crop_centre(data_a):
    faces = data_a.faces[:4]
    base = data_a._crop(faces, OFF, None)
    flipped = data_a._crop(faces, dataclasses.replace(OFF, flip=1.0), _gen())
    for x, y in zip(base, flipped):
        torch.testing.assert_close(y, x.flip(-1), atol=1e-4, rtol=0)


def _blob_image(points: np.ndarray, size: int = 256, sigma: float = 3.0) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    img = sum(np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2)) for x, y in points)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def _centroid(img: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    w = img.astype(np.float64)
    return np.array([(xx * w).sum() / w.sum(), (yy * w).sum() / w.sum()])


def test_eye_centres_land_where_coverage_says(faces_a):
    lm = faces_a.landmarks[0].astype(np.float64)
    eyes_f = np.stack([lm[RIGHT_EYE].mean(0), lm[LEFT_EYE].mean(0)])  # faceset px
    blob = _blob_image(eyes_f)
    img = np.repeat(blob[None, ..., None], 3, -1)  # (1, 256, 256, 3)
    faces = prepare_faces(img, blob[None], working_size(S, COV, 256, 0.5))
    _, target, _ = augment(faces, S, COV, OFF)
    out = target[0, 0].numpy()
    found = np.stack([_centroid(out[:, : S // 2]), _centroid(out[:, S // 2:]) + [S // 2, 0]])
    np.testing.assert_allclose(found, _faceset_to_crop(eyes_f), atol=0.25)
    # and a real aligned face puts its eyes at the template's eyes for this coverage
    tpl = template_in_crop(S, COV)
    expected = np.stack([tpl[RIGHT_EYE].mean(0), tpl[LEFT_EYE].mean(0)])
    np.testing.assert_allclose(found, expected, atol=1.5)


def test_warp_magnitude_matches_2017(data_a):
    cfg = dataclasses.replace(OFF, warp=True)
    from swapstream.training.augment import random_flow

    flow = random_flow(64, S, cfg, _gen())  # normalised units: the crop side is 2
    px = flow * S / 2
    assert 0.5 < px.std() < 2.5  # ~2 px at 64 px, as 5 px over the 160 px crop of 2017
