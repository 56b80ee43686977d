"""The face-network losses (training/faceloss.py): dlib's recogniser, frozen, as a perceptual term on
real face crops and as an identity term on the swap; their flags; a few training steps with both."""

import copy
import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from swapstream.core.errors import ConfigError
from swapstream.core.faceset import load_faceset
from swapstream.core.geometry import template_in_crop
from swapstream.engines.identity import FaceEmbedder, chip_matrix, distance
from swapstream.engines.model import SwapModel, preset
from swapstream.pipeline.cli import main
from swapstream.training.augment import AugmentConfig, TrainingFaces
from swapstream.training.config import TrainConfig
from swapstream.training.faceloss import FaceLossNet, chip_scale, identity_distance
from swapstream.training.losses import LossConfig, LossNets, swap_losses
from swapstream.training.step import PairNet

S, COV = 64, 0.7


@pytest.fixture(scope="module")
def net() -> FaceLossNet:
    return FaceLossNet(S, COV)


N = 12  # faces of each faceset, spread over it


def _spread(n: int) -> np.ndarray:
    return np.linspace(0, n - 1, N).round().astype(int)


@pytest.fixture(scope="module")
def crops(facesets):
    """{"a": (target (N, 3, S, S), mask (N, 2, S, S)), "b": ...}: unaugmented real crops of N
    faces spread over each faceset."""
    out = {}
    for k, d in zip("ab", facesets):
        data = TrainingFaces(load_faceset(d), S, COV)
        _, target, mask = data._crop(data.faces[_spread(len(data))], AugmentConfig.off(), None)
        out[k] = (target, mask)
    return out


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = torch.arange(-4, 5, dtype=torch.float32)
    g = torch.exp(-r**2 / (2 * sigma**2))
    g = (g / g.sum()).view(1, 1, 1, 9).expand(3, 1, 1, 9)
    x = F.conv2d(F.pad(x, (4, 4, 0, 0), mode="replicate"), g, groups=3)
    return F.conv2d(F.pad(x, (0, 0, 4, 4), mode="replicate"), g.transpose(2, 3), groups=3)


def _perceptual(net, pred_rgb, target, mask):
    pred = torch.cat([pred_rgb, mask[:, :1]], 1)
    return swap_losses(pred, target, mask, LossConfig({"perceptual": 1.0}), LossNets(net))["perceptual"]


def test_geometry_comes_from_the_crop_template(net):
    m = chip_matrix(template_in_crop(S, COV))
    assert chip_scale(S, COV) == pytest.approx(np.hypot(*m[:, 0]))
    assert 2.0 < chip_scale(S, COV) < 2.3  # dlib's 150 px chip shows the face ~2.1x the 64 px crop's
    assert net.side == round(S * chip_scale(S, COV)) == 136
    assert FaceLossNet(128, COV).side == 136  # the same face scale whatever the crop's resolution


def test_crop_chip_embeds_like_dlib_chip_of_the_image(net, facesets, crops):
    # the crop -> chip warp derived from the template cuts the chip face_chip cuts from the image's
    # own landmarks: embeddings near those of the image brought to the crop's resolution, and
    # nearer than with the chip 3 crop px off
    fs = load_faceset(facesets[0])
    side = 90  # the faceset image's size at the crop's scale (256 * 64 * 0.7 / (256 * 0.5))
    small = [cv2.resize(cv2.resize(fs.images[i], (side, side), interpolation=cv2.INTER_AREA), (256, 256))
             for i in _spread(len(fs))]
    ref = FaceEmbedder().embed_faces(list(zip(small, fs.landmarks[_spread(len(fs))])))
    with torch.no_grad():
        ours = net.embed(crops["a"][0]).numpy()
        net_off = copy.copy(net)
        net_off.theta = net.theta + torch.tensor([[0, 0, 3 * 2 / S], [0, 0, 0]])
        off = net_off.embed(crops["a"][0]).numpy()
    assert distance(ours, ref).max() < 0.15  # same person: under 0.41
    assert distance(ours, ref).mean() < distance(off, ref).mean() - 0.015


def test_perceptual_zero_for_identical_and_grows_with_blur(net, crops):
    target, mask = crops["a"]
    p0 = _perceptual(net, target, target, mask)
    p1, p2 = (_perceptual(net, _blur(target, s), target, mask) for s in (0.8, 1.6))
    assert p0.item() == 0.0
    assert 0.05 < p1.item() < p2.item()
    g = torch.Generator().manual_seed(0)
    noisy = (target + 0.03 * torch.randn(target.shape, generator=g)).clamp(0, 1)
    assert _perceptual(net, noisy, target, mask).item() > 0.05  # invented detail costs too


def test_gradients_reach_the_prediction_not_the_network(net, crops):
    target, mask = crops["a"]
    pred = torch.cat([_blur(target, 1.0), mask[:, :1]], 1).requires_grad_()
    out = swap_losses(pred, target, mask, LossConfig({"face": 1.0, "perceptual": 1.0}), LossNets(net))
    out["total"].backward()
    g = pred.grad[:, :3].abs().sum(1)  # (N, S, S)
    assert torch.isfinite(pred.grad).all() and g.sum() > 0
    # weighted by the face mask: the face pulls harder than the background
    assert g[mask[:, 0] > 0.99].mean() > 1.5 * g[mask[:, 0] < 0.01].mean()
    assert all(not p.requires_grad and p.grad is None for p in net.net.parameters())
    assert not net.net.training


def test_perceptual_needs_its_network(crops):
    target = crops["a"][0]
    pred = torch.cat([target, torch.ones_like(target[:, :1])], 1)
    with pytest.raises(ValueError, match="perceptual term needs"):
        swap_losses(pred, target, torch.ones_like(pred[:, :1]), LossConfig({"perceptual": 1.0}))


def test_identity_is_lower_for_a_face_of_b(net, crops):
    a, b = crops["a"][0], crops["b"][0]
    ref = net.reference(b[0::2])  # B's mean embedding from half of B's faces
    assert ref.shape == (128,) and torch.linalg.norm(ref).item() == pytest.approx(1, abs=1e-5)
    with torch.no_grad():
        d_b, d_a = identity_distance(net, b[1::2], ref), identity_distance(net, a, ref)
    # cosine distances (0.04 and 0.07 are unit-length distances of 0.28 and 0.37)
    assert d_b.item() < 0.04 and d_a.item() > 0.07
    swapped = a.clone().requires_grad_()
    identity_distance(net, swapped, ref).backward()
    assert swapped.grad.abs().sum() > 0


def test_pair_net_swap_is_a_through_decoder_b_training_the_encoder():
    torch.manual_seed(0)
    model = SwapModel(preset("lite64"), ["a", "b"])
    xa, xb = torch.rand(2, 3, 64, 64), torch.rand(3, 3, 64, 64)
    pa, pb, pab = PairNet(model, swap=True)(xa, xb)
    torch.testing.assert_close(pa, model(xa, "a"))
    torch.testing.assert_close(pb, model(xb, "b"))
    torch.testing.assert_close(pab, model(xa, "b"))
    # the swap trains the encoder only: decoder b learns from B's faces alone
    model.zero_grad()
    PairNet(model, swap=True)(xa, xb)[2].sum().backward()
    assert all(p.grad is None for p in model.decoders["b"].parameters())
    assert all(p.grad is not None for p in model.encoder.parameters())


def test_flags_validate(facesets, tmp_path, capsys):
    base = dict(a=str(facesets[0]), b=str(facesets[1]), out=str(tmp_path / "m"))
    for name in ("perceptual_weight", "identity_weight"):
        with pytest.raises(ConfigError, match=f"{name} = -1.0 must not be negative"):
            TrainConfig(**base, **{name: -1.0}).validate()
    assert "perceptual" not in TrainConfig(**base, perceptual_weight=0.0).loss_config().weights
    assert TrainConfig(**base, perceptual_weight=0.5).loss_config().weights["perceptual"] == 0.5
    argv = ["-q", "train", "--runner", "local", "--a", str(facesets[0]), "--b", str(facesets[1]),
            "-o", str(tmp_path / "x"), "--identity-weight", "-2"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "identity_weight = -2.0 must not be negative" in err
    assert not (tmp_path / "x").exists()


def test_training_steps_with_both_terms(facesets, tmp_path):
    out = tmp_path / "m"
    argv = ["-q", "train", "--runner", "local", "--device", "cpu", "--a", str(facesets[0]),
            "--b", str(facesets[1]), "-o", str(out), "--steps", "3", "--batch-size", "4",
            "--log-every", "1", "--perceptual-weight", "0.5", "--identity-weight", "2"]
    assert main(argv) == 0
    rows = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert np.isfinite([r["a/perceptual"], r["b/perceptual"], r["swap/identity"], r["loss"]]).all()
        assert r["a/perceptual"] > 0 and 0 <= r["swap/identity"] <= 2 and r["skipped"] == 0
    meta = json.loads((out / "model.json").read_text())["training"]
    assert meta["perceptual_weight"] == 0.5 and meta["identity_weight"] == 2.0
    assert meta["loss"]["weights"]["perceptual"] == 0.5
