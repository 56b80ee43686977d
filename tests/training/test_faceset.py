import json
import shutil

import numpy as np
import pytest

from swapstream.core.errors import FacesetError
from swapstream.core.faceset import FACESET_SIZE, SIDECAR, FacesetWriter, hull_masks, load_faceset
from swapstream.core.geometry import RIGHT_EYE, template_in_crop


def _face(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (FACESET_SIZE, FACESET_SIZE, 3), dtype=np.uint8)
    lm = (template_in_crop(FACESET_SIZE, 0.5) + rng.normal(0, 1, (478, 2))).astype(np.float32)
    return img, lm


def test_writer_round_trip_is_exact(tmp_path):
    faces = [_face(i) for i in range(3)]
    with FacesetWriter(tmp_path / "fs") as w:
        names = [w.add(img, lm, "clip.mp4", 10 + i) for i, (img, lm) in enumerate(faces)]
    assert names == ["000001.png", "000002.png", "000003.png"]
    side = json.loads((tmp_path / "fs" / SIDECAR).read_text())
    assert side["version"] == 1 and side["size"] == 256 and side["coverage"] == 0.5
    assert side["faces"]["000002.png"]["frame"] == 11 and side["faces"]["000002.png"]["source"] == "clip.mp4"
    fs = load_faceset(tmp_path / "fs")
    assert fs.names == names and fs.sources[2] == ("clip.mp4", 12)
    assert fs.images.dtype == np.uint8 and fs.images.shape == (3, 256, 256, 3)
    assert fs.landmarks.dtype == np.float32 and fs.landmarks.shape == (3, 478, 2)
    for i, (img, lm) in enumerate(faces):
        np.testing.assert_array_equal(fs.images[i], img)  # PNG is lossless, RGB order kept
        np.testing.assert_allclose(fs.landmarks[i], lm, atol=0.0051)  # 2 decimals in the sidecar


def test_writer_extends_an_existing_set(tmp_path):
    with FacesetWriter(tmp_path) as w:
        w.add(*_face(0), "x.mp4", 0)
    with FacesetWriter(tmp_path) as w:
        assert w.add(*_face(1), "y.mp4", 5) == "000002.png"
    assert load_faceset(tmp_path).names == ["000001.png", "000002.png"]


def test_writer_rejects_wrong_shapes(tmp_path):
    w = FacesetWriter(tmp_path)
    img, lm = _face(0)
    with pytest.raises(ValueError, match="uint8"):
        w.add(img[:128], lm, "x", 0)
    with pytest.raises(ValueError, match="478"):
        w.add(img, lm[:68], "x", 0)


def test_real_faceset_loads_aligned(facesets):
    for d in facesets:
        fs = load_faceset(d)
        assert len(fs) >= 10
        # aligned with coverage 0.5: the right eye sits where the 256 px template puts it
        eye = fs.landmarks[:, RIGHT_EYE].mean(1)  # (N, 2)
        expected = template_in_crop(256, 0.5)[RIGHT_EYE].mean(0)
        assert np.abs(eye - expected).max() < 6
        masks = hull_masks(fs.landmarks[:2], 256)
        assert masks.dtype == np.uint8 and set(np.unique(masks)) == {0, 255}
        assert 0.3 < (masks > 0).mean() < 0.7


def test_deleting_pngs_by_hand_keeps_the_set_valid(facesets, tmp_path):
    d = tmp_path / "a"
    shutil.copytree(facesets[0], d)
    (d / "000003.png").unlink()
    shutil.copy(d / "000004.png", d / "999999.png")  # a PNG without landmarks
    with pytest.warns(UserWarning, match="without landmarks"):
        fs = load_faceset(d)
    full = load_faceset(facesets[0])
    assert len(fs) == len(full) - 1 and "000003.png" not in fs.names and "999999.png" not in fs.names
    i, j = full.names.index("000004.png"), fs.names.index("000004.png")
    np.testing.assert_array_equal(fs.images[j], full.images[i])
    np.testing.assert_array_equal(fs.landmarks[j], full.landmarks[i])


def test_missing_or_empty_faceset_raises_with_a_fix(tmp_path):
    with pytest.raises(FacesetError, match="does not exist.*swapstream extract"):
        load_faceset(tmp_path / "nope")
    (tmp_path / "bare").mkdir()
    with pytest.raises(FacesetError, match="no landmarks.json.*swapstream extract"):
        load_faceset(tmp_path / "bare")
    with FacesetWriter(tmp_path / "emptied") as w:
        w.add(*_face(0), "x.mp4", 0)
    (tmp_path / "emptied" / "000001.png").unlink()
    with pytest.raises(FacesetError, match="no usable faces.*swapstream extract"):
        load_faceset(tmp_path / "emptied")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / SIDECAR).write_text("{not json")
    with pytest.raises(FacesetError, match="corrupt"):
        load_faceset(tmp_path / "bad")
