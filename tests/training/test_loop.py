import json

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from swapstream.core.errors import ConfigError, ModelError
from swapstream.core.faceset import load_faceset
from swapstream.engines.checkpoint import load_checkpoint
from swapstream.engines.model import SwapModel, preset
from swapstream.training.augment import TrainingFaces
from swapstream.training.gan import PatchDiscriminator
from swapstream.training.loop import TrainConfig, train
from swapstream.training.losses import LossConfig, swap_losses
from swapstream.training.preview import HEADER, preview_grid, save_png
from swapstream.training.state import load_optimizer_tensors, optimizer_tensors
from swapstream.training.step import Batch, Gan, PairNet, Stepper, train_step


def _cfg(facesets, out, **kw) -> TrainConfig:
    kw = {"preset": "lite64", "batch_size": 8, "lr": 5e-4, "save_every": 1000, "preview_every": 1000,
          "device": "cpu", **kw}
    return TrainConfig(str(facesets[0]), str(facesets[1]), str(out), **kw)


def test_training_reduces_the_loss(facesets, tmp_path):
    res = train(_cfg(facesets, tmp_path / "m", steps=25), progress=False)
    assert res.step == 25 and len(res.history) == 25
    loss = [h["loss"] for h in res.history]
    first, last = np.mean(loss[:3]), np.mean(loss[-3:])
    assert last < 0.85 * first, (first, last)
    assert {"loss_a", "loss_b", "a/face", "a/mask", "b/face", "b/mask"} <= set(res.history[0])
    ckpt = load_checkpoint(res.checkpoint)
    assert ckpt.step == 25 and ckpt.identities == ["a", "b"] and ckpt.preset == "lite64"
    assert ckpt.training["coverage"] == 0.7 and ckpt.training["a"] == str(facesets[0].resolve())
    # the final preview survives the checkpoint save that replaces the directory
    img = cv2.imread(str(res.checkpoint / "preview.png"))
    assert img is not None and img.shape[1] == 6 * 128


def test_checkpoint_and_resume(facesets, tmp_path):
    out = tmp_path / "m"
    res = train(_cfg(facesets, out, steps=4, save_every=2, preview_every=2), progress=False)
    assert res.step == 4
    opt = load_file(out / "optimizer.safetensors")
    assert {v.item() for k, v in opt.items() if k.endswith(".step")} == {4.0}

    with pytest.raises(ModelError, match="preset 'lite64'"):
        train(_cfg(facesets, out, steps=6, preset="original64", resume=True), progress=False)
    with pytest.raises(ConfigError, match="coverage 0.7"):
        train(_cfg(facesets, out, steps=6, coverage=0.6, resume=True), progress=False)
    with pytest.raises(ConfigError, match="step 4 already"):
        train(_cfg(facesets, out, steps=4, resume=True), progress=False)

    res2 = train(_cfg(facesets, out, steps=6), progress=False)  # the same command again continues
    assert res2.step == 6 and len(res2.history) == 2
    assert json.loads((out / "model.json").read_text())["step"] == 6
    opt2 = load_file(out / "optimizer.safetensors")
    # Adam's step counters continued from 4: the optimizer state was restored, not restarted
    assert {v.item() for k, v in opt2.items() if k.endswith(".step")} == {6.0}
    assert opt2.keys() == opt.keys()


def test_out_dir_guards(facesets, tmp_path):
    with pytest.raises(ConfigError, match="holds no checkpoint"):
        train(_cfg(facesets, tmp_path / "new", steps=2, resume=True), progress=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        train(_cfg(facesets, tmp_path / "busy", steps=2), progress=False)
    with pytest.raises(ConfigError, match="unknown model preset"):
        train(_cfg(facesets, tmp_path / "x", preset="nope"), progress=False)


def test_optimizer_state_round_trip():
    torch.manual_seed(0)
    model = SwapModel(preset("lite64"), ["a", "b"])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.999))
    x = torch.rand(2, 3, 64, 64)
    batch = Batch(x, x, torch.ones(2, 1, 64, 64))
    train_step(Stepper(PairNet(model), opt, LossConfig()), batch, batch)
    flat = optimizer_tensors(opt)
    assert all(isinstance(v, torch.Tensor) for v in flat.values())
    opt2 = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.999))
    load_optimizer_tensors(opt2, flat)
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert s1.keys() == s2.keys()
    for i in s1:
        for k in s1[i]:
            assert torch.equal(s1[i][k], s2[i][k])
    with pytest.raises(ModelError, match="optimizer"):
        load_optimizer_tensors(opt2, {"state.99999.exp_avg": torch.zeros(1)})


def test_losses_are_named_terms():
    pred = torch.full((2, 4, 8, 8), 0.5)
    target, mask = torch.zeros(2, 3, 8, 8), torch.zeros(2, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1
    out = swap_losses(pred, target, mask, LossConfig({"face": 1.0, "mask": 2.0}))
    assert set(out) == {"face", "mask", "total"}
    torch.testing.assert_close(out["face"], torch.tensor(0.5))
    torch.testing.assert_close(out["total"], out["face"] + 2 * out["mask"])
    bce = swap_losses(pred, target, mask, LossConfig(mask_loss="bce"))["mask"]
    torch.testing.assert_close(bce, torch.tensor(np.log(2), dtype=torch.float32))
    with pytest.raises(ConfigError, match="unknown loss term"):
        swap_losses(pred, target, mask, LossConfig({"gan": 1.0}))


def test_preview_grid(facesets, tmp_path):
    torch.manual_seed(0)
    model = SwapModel(preset("lite64"), ["a", "b"])
    fa = TrainingFaces(load_faceset(facesets[0]), 64, 0.7).fixed(3)
    fb = TrainingFaces(load_faceset(facesets[1]), 64, 0.7).fixed(2)
    grid = preview_grid(model, fa, fb, ids=("a", "b"))
    assert grid.dtype == np.uint8 and grid.shape == (HEADER + 3 * 64, 6 * 64, 3)
    assert model.training  # left as it was
    cells = grid[HEADER:].reshape(3, 64, 6, 64, 3)
    np.testing.assert_array_equal(cells[:, :, 0], (fa.permute(0, 2, 3, 1) * 255).round().byte().numpy())
    assert cells[2, :, 3].max() == 0  # B has only 2 rows: padded with black
    for j in range(6):  # a label drawn over every column
        assert grid[:HEADER, j * 64:(j + 1) * 64].max() > 128
    big = preview_grid(model, fa, fb, scale=2)
    assert big.shape == (2 * (HEADER + 3 * 64), 2 * 6 * 64, 3)
    path = save_png(tmp_path / "p.png", grid)
    np.testing.assert_array_equal(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB), grid)


def _tiny_batch(device: str = "cpu") -> Batch:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 64, generator=g).to(device)
    return Batch(x, x, torch.ones(2, 1, 64, 64, device=device))


def test_mixed_precision_step_and_scaler_state():
    # The CUDA path (fp16 autocast + GradScaler), exercised on the CPU's fp16 autocast.
    torch.manual_seed(0)
    model = SwapModel(preset("lite64"), ["a", "b"])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.999))
    scaler = torch.amp.GradScaler("cpu")
    b = _tiny_batch()
    s = Stepper(PairNet(model), opt, LossConfig(), amp_dtype=torch.float16, scaler=scaler)
    losses = [train_step(s, b, b)["loss"] for _ in range(3)]
    assert all(np.isfinite(losses))
    flat = optimizer_tensors(opt, scaler)
    assert flat["scaler.scale"].item() == scaler.get_scale()
    scaler2 = torch.amp.GradScaler("cpu", init_scale=1.0)
    load_optimizer_tensors(torch.optim.Adam(model.parameters()), flat, scaler2)
    assert scaler2.state_dict() == scaler.state_dict()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_train_on_cuda(facesets, tmp_path):
    res = train(_cfg(facesets, tmp_path / "m", steps=6, device="cuda"), progress=False)
    assert res.step == 6 and all(np.isfinite(h["loss"]) for h in res.history)
    flat = load_file(tmp_path / "m" / "optimizer.safetensors")
    # bf16 autocast where the GPU has it; else fp16, whose GradScaler state is saved for resuming
    assert ("scaler.scale" in flat) != torch.cuda.is_bf16_supported()
    res2 = train(_cfg(facesets, tmp_path / "m", steps=8, device="cuda", resume=True), progress=False)
    assert res2.step == 8


def test_time_budget_stops_early_and_saves(facesets, tmp_path):
    out = tmp_path / "m"
    r = train(_cfg(facesets, out, steps=10_000, max_seconds=1.0, batch_size=4), progress=False)
    assert 0 < r.step < 10_000
    assert load_checkpoint(out).step == r.step
    assert (out / "preview.png").exists()


def _stepper(lr: float = 1e-3, **kw) -> tuple[SwapModel, Stepper]:
    torch.manual_seed(0)
    model = SwapModel(preset("lite64"), ["a", "b"])
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.5, 0.999))
    return model, Stepper(PairNet(model), opt, LossConfig(), **kw)


def test_pair_net_is_the_model_on_each_identity():
    model, s = _stepper()
    xa, xb = torch.rand(2, 3, 64, 64), torch.rand(3, 3, 64, 64)
    pa, pb = s.net(xa, xb)
    torch.testing.assert_close(pa, model(xa, "a"))
    torch.testing.assert_close(pb, model(xb, "b"))


def test_nan_loss_skips_the_step_and_is_reported():
    model, s = _stepper()
    good = _tiny_batch()
    train_step(s, good, good)  # Adam has state now
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adam_before = optimizer_tensors(s.opt)
    bad = Batch(good.warped, good.target.clone(), good.mask)
    bad.target[0, 0, 0, 0] = float("nan")
    out = train_step(s, good, bad)
    assert out["skipped"] == 1.0 and not np.isfinite(out["loss"])
    for k, v in model.state_dict().items():  # not a single weight moved
        assert torch.equal(v, before[k]), k
    for k, v in optimizer_tensors(s.opt).items():
        assert torch.equal(v, adam_before[k]), k
    assert train_step(s, good, good)["skipped"] == 0.0  # and training goes on


def test_gan_trains_both_optimizers():
    model, s = _stepper()
    disc = PatchDiscriminator(64)
    d_opt = torch.optim.Adam(disc.parameters(), lr=1e-4)
    s.gan = Gan(disc, disc, d_opt, weight=0.1)
    g_before = [p.clone() for p in model.parameters()]
    d_before = [p.clone() for p in disc.parameters()]
    b = _tiny_batch()
    out = train_step(s, b, b)
    assert {"gan/g", "gan/d"} <= set(out) and np.isfinite([out["gan/g"], out["gan/d"]]).all()
    assert all(p.requires_grad for p in disc.parameters())  # unfrozen again after the generator's term
    assert any(not torch.equal(a, p) for a, p in zip(g_before, model.parameters()))
    assert any(not torch.equal(a, p) for a, p in zip(d_before, disc.parameters()))
    assert {v.item() for k, v in optimizer_tensors(d_opt).items() if k.endswith(".step")} == {1.0}
    assert {v.item() for k, v in optimizer_tensors(s.opt).items() if k.endswith(".step")} == {1.0}


def test_gan_training_saves_and_resumes_the_discriminator(facesets, tmp_path):
    out = tmp_path / "m"
    train(_cfg(facesets, out, steps=3, gan_weight=0.1), progress=False)
    flat = load_file(out / "optimizer.safetensors")
    assert any(k.startswith("disc.") for k in flat) and any(k.startswith("dstate.") for k in flat)
    res = train(_cfg(facesets, out, steps=5, gan_weight=0.1), progress=False)
    assert res.step == 5 and all("gan/d" in h for h in res.history)
    flat2 = load_file(out / "optimizer.safetensors")
    assert {v.item() for k, v in flat2.items() if k.startswith("dstate.") and k.endswith(".step")} == {5.0}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_channels_last_bf16_training_on_cuda(facesets, tmp_path):
    res = train(_cfg(facesets, tmp_path / "m", steps=12, device="cuda", compile=True, amp="bf16",
                     channels_last=True, gan_weight=0.1), progress=False)
    loss = [h["loss"] for h in res.history]
    assert res.step == 12 and all(np.isfinite(loss)) and res.skipped == 0
    assert load_checkpoint(tmp_path / "m").step == 12
