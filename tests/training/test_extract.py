"""`swapstream extract` on real clips and image folders."""

import json
import re

import cv2
import numpy as np
import pytest

from swapstream.core.errors import ConfigError, InputError
from swapstream.core.faceset import FACESET_COVERAGE, FACESET_SIZE, load_faceset
from swapstream.core.geometry import STABLE_LANDMARKS, template_in_crop
from swapstream.engines.identity import SAME_PERSON, FaceEmbedder, distance_to
from swapstream.pipeline.cli import main
from swapstream.pipeline.samples import render_frames, source_image
from swapstream.training.extract import CONTACT_SHEET, ExtractSettings, extract, people
from swapstream.training.reference import load_reference


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
    from swapstream.core.errors import FacesetError

    with pytest.raises(FacesetError, match="no faces"):
        extract([blurry], tmp_path / "fs2", ExtractSettings(blur=1e6), progress=False)
    assert not (tmp_path / "fs2").exists()


def test_min_size_drops_small_faces(clips, tmp_path):
    r = extract([clips["a"]], tmp_path / "fs", ExtractSettings(every=20, min_size=64), progress=False)
    assert r.faces == 3 and r.too_small == 0
    from swapstream.core.errors import FacesetError

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


# --like and the identity count: real MediaPipe, dlib's real recogniser, the sample people


def _photo(tmp_path, who):
    path = tmp_path / f"{who}.png"
    cv2.imwrite(str(path), cv2.cvtColor(source_image(who), cv2.COLOR_RGB2BGR))
    return path


def test_like_keeps_only_that_person(clips, tmp_path, capsys):
    out = tmp_path / "fs"
    ref = _photo(tmp_path, "astronaut")
    assert main(["-q", "extract", str(clips["ab"]), "--like", str(ref), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    dropped = int(re.search(r"(\d+) not the --like person", printed).group(1))
    fs = load_faceset(out)
    assert dropped > 0 and len(fs) > 0 and len(fs) + dropped == 60, printed  # 30 frames, 2 faces each
    embedder = FaceEmbedder()
    e = embedder.embed_faces(list(zip(fs.images, fs.landmarks)))
    astronaut = load_reference([ref], embedder).embeddings
    hopper = load_reference([_photo(tmp_path, "grace_hopper")], embedder).embeddings
    assert distance_to(e, astronaut).max() <= SAME_PERSON < distance_to(e, hopper).min()
    assert "different people" not in printed
    # nobody like the reference: an error that says so, and no faceset left behind
    from swapstream.core.errors import FacesetError

    with pytest.raises(FacesetError, match="none of the 10 faces found is the --like person"):
        extract([clips["b"]], tmp_path / "none", ExtractSettings(every=6, like=[ref]), progress=False)
    assert not (tmp_path / "none").exists()


def test_several_people_are_noted_one_is_not(clips, tmp_path, capsys):
    assert main(["-q", "extract", str(clips["ab"]), "-o", str(tmp_path / "ab")]) == 0
    printed = capsys.readouterr().out
    assert "note: 2 different people in this faceset (30 and 30 faces)" in printed, printed
    assert "swapstream sort" in printed
    r = extract([clips["b"]], tmp_path / "b", ExtractSettings(every=6), progress=False)
    assert r.identities == 1 and r.identity_sizes == [10] and r.not_like == 0  # no note then


def test_a_few_stray_faces_are_not_a_person():
    labels = np.array([0] * 50 + [1] * 20 + [2] * 2 + [3])  # 3 % of 73 faces is 2.2
    assert people(labels) == [50, 20]
    assert people(np.array([0])) == [1] and people(np.zeros(0, np.int64)) == []


def test_bad_references_stop_extract_before_any_work(clips, tmp_path, capsys):
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((240, 320, 3), 90, np.uint8))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    cases = {blank: "no face found in reference", broken: "cannot be read as an image",
             tmp_path / "missing.png": "not found"}
    for ref, words in cases.items():
        out = tmp_path / f"fs_{ref.stem}"
        assert main(["-q", "extract", str(clips["a"]), "--like", str(ref), "-o", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("swapstream: error:") and words in err[0], err
        assert not out.exists()
    with pytest.raises(ConfigError, match="threshold"):
        ExtractSettings(threshold=0)
