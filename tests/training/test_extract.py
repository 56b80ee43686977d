"""`swapstream extract` on real clips and image folders."""

import json

import cv2
import numpy as np
import pytest

from pipeline.samples import render_frames
from stages.errors import ConfigError, InputError
from stages.geometry import STABLE_LANDMARKS, template_in_crop
from training.extract import CONTACT_SHEET, ExtractSettings, extract
from training.faceset import FACESET_COVERAGE, FACESET_SIZE, load_faceset


def test_extract_finds_the_face_in_every_kept_frame(facesets):
    fs = load_faceset(facesets[0])
    assert len(fs) == 30  # 60 frames, every 2nd
    assert fs.images.shape == (30, FACESET_SIZE, FACESET_SIZE, 3)
    assert [f for _, f in fs.sources][:3] == [0, 2, 4]
    # aligned: the stable landmarks sit on the template, within a few px of 256
    tpl = template_in_crop(FACESET_SIZE, FACESET_COVERAGE)[STABLE_LANDMARKS]
    err = np.linalg.norm(fs.landmarks[:, STABLE_LANDMARKS] - tpl, axis=2).mean()
    assert err < 6, err
    sheet = cv2.imread(str(facesets[0] / CONTACT_SHEET))
    assert sheet is not None and sheet.shape[0] >= 96


def test_image_folder_and_blur_filter(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, f in enumerate(render_frames(["grace_hopper"], 90, 400, 300, 0.6)):
        if i % 30 == 0:
            cv2.imwrite(str(photos / f"p{i}.jpg"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    (photos / "readme.txt").write_text("not an image")
    r = extract([photos], tmp_path / "fs", progress=False)
    assert r.faces == 3 and r.frames == 3
    side = json.loads((tmp_path / "fs" / "landmarks.json").read_text())
    assert sorted(side["faces"]) == ["000001.png", "000002.png", "000003.png"]
    # a blur threshold above every face's sharpness keeps none of them (and says so)
    blurry = tmp_path / "blurry"
    blurry.mkdir()
    cv2.imwrite(str(blurry / "b.png"), cv2.GaussianBlur(cv2.imread(str(photos / "p0.jpg")), (0, 0), 1.5))
    from stages.errors import FacesetError

    with pytest.raises(FacesetError, match="no faces"):
        extract([blurry], tmp_path / "fs2", ExtractSettings(blur=1e6), progress=False)
    assert not (tmp_path / "fs2").exists()


def test_min_size_drops_small_faces(clips, tmp_path):
    r = extract([clips["a"]], tmp_path / "fs", ExtractSettings(every=20, min_size=64), progress=False)
    assert r.faces == 3 and r.too_small == 0
    from stages.errors import FacesetError

    with pytest.raises(FacesetError):
        extract([clips["a"]], tmp_path / "fs_big", ExtractSettings(every=20, min_size=400), progress=False)


def test_bad_sources_and_settings(tmp_path):
    with pytest.raises(InputError, match="not found"):
        extract([tmp_path / "nope.mp4"], tmp_path / "fs", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no images"):
        extract([tmp_path / "empty"], tmp_path / "fs", progress=False)
    with pytest.raises(ConfigError):
        ExtractSettings(every=0)
