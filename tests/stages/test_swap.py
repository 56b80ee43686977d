"""Swap stage: batches the crops of many frames through a real engine."""

from fractions import Fraction

import numpy as np
import pytest
import torch

from swapstream.core.errors import ConfigError, ModelError
from swapstream.core.packet import Face, FramePacket, Why
from swapstream.engines.checkpoint import save_checkpoint
from swapstream.engines.model import SwapModel, preset
from swapstream.stages.face.swap import SwapSettings, SwapStage


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("m") / "ck", SwapModel(preset("lite64"), ["a", "b"]),
                           "lite64")


def _packet(i, n_faces, rng, error=False):
    faces = []
    for _ in range(n_faces):
        f = Face(rng.uniform(0, 100, (478, 2)))
        f.crop = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        if error:
            f.skip(Why.ALIGNMENT, "residual too high")
        faces.append(f)
    return FramePacket(i, i, Fraction(1, 30), np.zeros((120, 160, 3), np.uint8), faces)


def test_swaps_every_ready_face_across_frames(ckpt):
    rng = np.random.default_rng(0)
    batch = [_packet(0, 2, rng), _packet(1, 0, rng), _packet(2, 1, rng), _packet(3, 1, rng, error=True)]
    stage = SwapStage(SwapSettings(str(ckpt), "b2a", batch_size=2))
    stage.setup()
    out = stage.process(batch)
    ready = [f for p in out[:3] for f in p.faces]
    assert len(ready) == 3
    for f in ready:
        assert f.swapped.shape == (64, 64, 3) and f.swapped.dtype == np.uint8
        assert f.mask.shape == (64, 64) and 0 <= f.mask.min() and f.mask.max() <= 1
    assert out[3].faces[0].swapped is None  # a face with errors is left alone
    # batching across frames gives what one face at a time gives
    single, _ = stage.engine.swap(ready[0].crop[None], "a")
    np.testing.assert_array_equal(single[0], ready[0].swapped)


def test_direction_and_identity_checks(ckpt, tmp_path):
    with pytest.raises(ConfigError, match="a2b, b2a"):
        SwapSettings(str(ckpt), "a2c")
    only_a = save_checkpoint(tmp_path / "a", SwapModel(preset("lite64"), ["a"]), "lite64")
    with pytest.raises(ModelError, match="cannot swap a2b"):
        SwapStage(SwapSettings(str(only_a), "a2b")).setup()


def test_each_face_goes_through_its_persons_model_cut_for_it(ckpt, tmp_path):
    """A map of three people and two models: face.person picks the model; one engine a model; a
    model that takes another crop (coverage 0.6) gets its faces cut again from the frame."""
    from swapstream.core.geometry import alignment_matrix, crop_face
    from swapstream.stages.face.align import AlignSettings

    torch.manual_seed(1)
    other = save_checkpoint(tmp_path / "other", SwapModel(preset("lite64"), ["a", "b"]), "lite64")
    models = ((str(ckpt), AlignSettings(64, 0.7)), (str(other), AlignSettings(64, 0.6)),
              (str(ckpt), AlignSettings(64, 0.7)))
    stage = SwapStage(SwapSettings(str(ckpt), "a2b", models=models))
    stage.setup()
    assert list(stage.engines) == [str(ckpt), str(other)]  # the first model twice: one engine
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    base = np.array([[160, 120]]) + rng.normal(0, 40, (478, 2))
    faces = []
    for person in (0, 1, 2):
        f = Face(base + person)
        f.matrix = alignment_matrix(f.landmarks, 64, 0.7)
        f.crop = crop_face(frame, f.matrix, 64)
        f.person = person
        faces.append(f)
    first = [f.crop.copy() for f in faces]
    stage.process([FramePacket(0, 0, Fraction(1, 30), frame, faces)])
    np.testing.assert_array_equal(faces[0].crop, first[0])  # cut as align cut it
    np.testing.assert_allclose(faces[1].matrix, alignment_matrix(faces[1].landmarks, 64, 0.6))
    np.testing.assert_array_equal(faces[1].crop, crop_face(frame, faces[1].matrix, 64))
    for f, (path, _) in zip(faces, models):
        np.testing.assert_array_equal(f.swapped, stage.engines[path].swap(f.crop[None], "b")[0][0])
    lost = Face(base)
    lost.crop = first[0]
    with pytest.raises(ValueError, match="identify must decide"):  # person not set: a wiring bug
        stage.process([FramePacket(1, 1, Fraction(1, 30), frame, [lost])])
