"""The face-identity embedding (engines/faceid.py, engines/identity.py) and reference loading
(stages/reference.py) on the sample faces, with real MediaPipe and dlib's real weights."""

from fractions import Fraction

import cv2
import numpy as np
import pytest

from swapstream.core.packet import FramePacket
from swapstream.engines.faceid import load_facenet, weights_path
from swapstream.engines.identity import (
    CHIP,
    SAME_PERSON,
    FaceEmbedder,
    chip_matrix,
    distance,
    distance_to,
    face_chip,
    group_identities,
)
from swapstream.pipeline.samples import render_frames, source_image
from swapstream.stages.face.detect import DetectSettings, DetectStage
from swapstream.training.reference import ReferenceError, load_reference

PEOPLE = ("astronaut", "grace_hopper")


@pytest.fixture(scope="module")
def detect():
    d = DetectStage(DetectSettings(min_face=32))
    d.setup()
    yield d
    d.close()


@pytest.fixture(scope="module")
def embedder():
    return FaceEmbedder()


def landmarks(detect, frame):
    return [f.landmarks for f in detect.process([FramePacket(0, None, Fraction(1, 30), frame)])[0].faces]


@pytest.fixture(scope="module")
def clip_faces(detect, embedder):
    """Embeddings of each sample person over a clip of moving, turning, scaling heads."""
    out = {}
    for who in PEOPLE:
        items = [(f, lm) for f in render_frames([who], 24, 480, 270) for lm in landmarks(detect, f)]
        assert len(items) == 24
        out[who] = embedder.embed_faces(items)
    return out


def test_the_torch_network_gives_dlibs_own_descriptor():
    dlib = pytest.importorskip("dlib")
    rec = dlib.face_recognition_model_v1(str(weights_path()))
    net = load_facenet()
    rng = np.random.default_rng(0)
    img = source_image("astronaut")
    chips = [np.ascontiguousarray(img[60:210, 150:300]), rng.integers(0, 256, (CHIP, CHIP, 3), np.uint8)]
    import torch

    with torch.inference_mode():
        ours = net(torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float()).numpy()
    for chip, mine in zip(chips, ours):
        theirs = np.array(rec.compute_face_descriptor(chip))
        assert np.abs(mine - theirs).max() < 1e-4, np.abs(mine - theirs).max()


def test_our_chip_matches_dlibs_face_chip(detect):
    """Cut from MediaPipe's five points, our chip is dlib's get_face_chip of the same points."""
    dlib = pytest.importorskip("dlib")
    img = source_image("grace_hopper")
    [lm] = landmarks(detect, img)
    ours = face_chip(img, lm)
    five = lm[[263, 362, 33, 133, 2]]
    shape = dlib.full_object_detection(dlib.rectangle(0, 0, 1, 1),
                                       [dlib.point(int(round(x)), int(round(y))) for x, y in five])
    theirs = dlib.get_face_chip(img, shape, size=CHIP, padding=0.25)
    assert ours.shape == theirs.shape == (CHIP, CHIP, 3)
    assert np.abs(ours.astype(int) - theirs.astype(int)).mean() < 12  # the same face, same place
    # the outer eye corners land where dlib's template puts them
    eyes = (chip_matrix(lm) @ np.c_[lm[[263, 33]], np.ones(2)].T).T
    template = (0.25 + np.array([[0.8596, 0.2135], [0.1206, 0.2137]])) / 1.5 * CHIP
    assert np.abs(eyes - template).max() < 3, (eyes, template)


def test_embeddings_are_unit_length_and_tell_the_two_people_apart(clip_faces, embedder, detect):
    a, g = clip_faces["astronaut"], clip_faces["grace_hopper"]
    assert a.dtype == np.float32 and a.shape == (24, 128)
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    within = max(distance(a[:, None], a[None]).max(), distance(g[:, None], g[None]).max())
    across = distance(a[:, None], g[None]).min()
    assert within < 0.25 < SAME_PERSON < across, (within, across)
    # the source photos match their own person's clip
    for who, other in (PEOPLE, PEOPLE[::-1]):
        img = source_image(who)
        [lm] = landmarks(detect, img)
        e = embedder.embed(img, lm)
        own, others = distance_to(e[None], clip_faces[who])[0], distance_to(e[None], clip_faces[other])[0]
        assert own < SAME_PERSON < others, (who, own, others)


def test_grouping_puts_each_person_in_one_group_largest_first(clip_faces):
    e = np.concatenate([clip_faces["astronaut"][:20], clip_faces["grace_hopper"][:9]])
    labels = group_identities(e)
    assert list(labels) == [0] * 20 + [1] * 9


def test_references_from_a_photo_a_faceset_and_a_video(tmp_path, embedder, facesets, clips, clip_faces):
    photo = tmp_path / "hopper.jpg"
    cv2.imwrite(str(photo), cv2.cvtColor(source_image("grace_hopper"), cv2.COLOR_RGB2BGR))
    ref = load_reference([photo], embedder)
    assert len(ref) == 1
    assert distance_to(clip_faces["grace_hopper"], ref.embeddings).max() < SAME_PERSON
    fs = load_reference([facesets[0]], embedder)  # faceset A: astronaut
    assert len(fs) > 10 and distance_to(clip_faces["astronaut"], fs.embeddings).max() < SAME_PERSON
    vid = load_reference([clips["a"]], embedder)
    assert len(vid) > 5 and distance_to(clip_faces["astronaut"], vid.embeddings).max() < SAME_PERSON


def test_bad_references_say_what_is_wrong(tmp_path, embedder):
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((240, 320, 3), 90, np.uint8))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = {blank: "no face found in reference", broken: "cannot be read as an image",
             tmp_path / "missing.png": "not found", empty: "holds no photos"}
    for path, words in cases.items():
        with pytest.raises(ReferenceError, match=words):
            load_reference([path], embedder)
