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
