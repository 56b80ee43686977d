import dataclasses

import numpy as np
import pytest
import torch

from swapstream.core.errors import ConfigError
from swapstream.core.faceset import feature_masks, hull_masks, load_faceset
from swapstream.core.geometry import LEFT_EYE, LIPS, RIGHT_EYE, template_in_crop
from swapstream.training.augment import AugmentConfig, TrainingFaces
from swapstream.training.gan import PatchDiscriminator, discriminator_loss, frozen, generator_loss
from swapstream.training.losses import LossConfig, dssim_map, swap_losses

S, COV = 64, 0.7
CHEEKS = [50, 280, 205, 425]  # MediaPipe cheek points, between eye, nose and mouth corner


@pytest.fixture(scope="module")
def crops(facesets):
    """Unaugmented real crops of identity a: target (N, 3, S, S), mask (N, 2, S, S), landmarks in crop px."""
    fs = load_faceset(facesets[0])
    data = TrainingFaces(fs, S, COV)
    _, target, mask = data._crop(data.faces, AugmentConfig.off(), None)
    lm = (fs.landmarks.astype(np.float64) - 128) * S * COV / 128 + S / 2  # faceset px -> crop px
    return target, mask, lm


def _pred(target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N, 4, S, S) leaf: the target plus a little noise, and the hull as the mask channel."""
    g = torch.Generator().manual_seed(0)
    rgb = (target + 0.02 * torch.randn(target.shape, generator=g)).clamp(0, 1)
    return torch.cat([rgb, mask[:, :1]], 1).requires_grad_()


def _grad(pred, target, mask, cfg, term="total"):
    pred = pred.detach().clone().requires_grad_()
    swap_losses(pred, target, mask, cfg)[term].backward()
    return pred.grad


def _only(term: str, **kw) -> LossConfig:
    return LossConfig({term: 1.0}, **kw)


def test_feature_masks_cover_eyes_and_mouth_not_cheeks(facesets):
    fs = load_faceset(facesets[0])
    m = feature_masks(fs.landmarks, 256)
    assert m.dtype == np.uint8 and m.shape == (len(fs), 256, 256) and set(np.unique(m)) == {0, 255}
    for lm, mi in zip(fs.landmarks, m):
        at = lambda idx: mi[np.round(lm[idx, 1]).astype(int), np.round(lm[idx, 0]).astype(int)]  # noqa: B023
        assert (at(RIGHT_EYE) == 255).all() and (at(LEFT_EYE) == 255).all() and (at(LIPS) == 255).all()
        assert (at(CHEEKS) == 0).all()
    hull = hull_masks(fs.landmarks, 256) > 0
    assert 0.08 < (m > 0).mean() < 0.25  # a fraction of the face
    assert ((m > 0) & ~hull).mean() < 0.01  # inside the face
    # dilated: covers the skin around the eyes (between eye corner and the hull of the eye points)
    tpl = template_in_crop(256, 0.5)
    assert feature_masks(tpl[None], 256)[0, round(tpl[RIGHT_EYE, 1].max()) + 5, round(tpl[33, 0])] == 255


def test_dssim_zero_for_identical_and_bounded(crops):
    target, _, _ = crops
    d0 = dssim_map(target, target)
    assert d0.shape == (len(target), 1, S - 10, S - 10)
    assert d0.abs().max() < 1e-5
    g = torch.Generator().manual_seed(1)
    for other in (1 - target, torch.rand(target.shape, generator=g), torch.zeros_like(target),
                  target.flip(-1)):
        d = dssim_map(other, target)
        assert d.min() >= 0 and d.max() <= 1 and d.mean() > 0.05
    assert dssim_map(1 - target, target).mean() > 0.5  # inverted structure: SSIM < 0


def test_face_term_gradient_larger_inside_hull(crops):
    target, mask, _ = crops
    grad = _grad(_pred(target, mask), target, mask, _only("face", feature_boost=0.0))
    g = grad[:, :3].abs().sum(1)  # (N, S, S)
    hull = mask[:, 0] > 0.99
    out = mask[:, 0] < 0.01
    ratio = g[hull].mean() / g[out].mean()
    assert 3.0 < ratio < 5.0  # 1 + face_boost, up to the noise's clamping at 0 and 1
    assert grad[:, 3].abs().max() == 0  # the RGB terms leave the mask channel alone


def test_ssim_term_sees_structure_that_keeps_the_mean_colour(crops):
    target, mask, _ = crops
    blurred = torch.nn.functional.avg_pool2d(target, 5, 1, 2, count_include_pad=False)
    pred = torch.cat([blurred, mask[:, :1]], 1).requires_grad_()
    out = swap_losses(pred, target, mask, LossConfig({"face": 1.0, "ssim": 1.0}))
    assert out["ssim"] > 0.05
    assert (blurred.mean((2, 3)) - target.mean((2, 3))).abs().max() < 0.01  # same mean colour
    out["ssim"].backward()
    assert pred.grad[:, :3].abs().sum() > 0 and pred.grad[:, 3].abs().max() == 0
    # structure, not brightness: a uniform shift costs MAE but little DSSIM, a blur the reverse
    shifted = torch.cat([(target + 0.05).clamp(0, 1), mask[:, :1]], 1)
    sh = swap_losses(shifted, target, mask, LossConfig({"face": 1.0, "ssim": 1.0}))
    assert sh["ssim"] / sh["face"] < 0.2 * out["ssim"] / out["face"]


def test_mask_term_touches_only_the_mask_channel(crops):
    target, mask, _ = crops
    for kind in ("l1", "bce"):
        pred = _pred(target, mask).detach()
        pred[:, 3] = 0.5
        grad = _grad(pred, target, mask, _only("mask", mask_loss=kind))
        assert grad[:, :3].abs().max() == 0 and grad[:, 3].abs().sum() > 0
    # against the hull (channel 0), not the feature mask
    exact = torch.cat([target, mask[:, :1]], 1)
    assert swap_losses(exact, target, mask, _only("mask"))["mask"] == 0


def _eye_vs_cheek(crops, term: str, feature_boost: float) -> tuple[float, float]:
    """Loss increase for the same 5x5 perturbation (+-0.25 on every value) on the right eye vs on
    the right cheek."""
    target, mask, lm = crops
    pred = torch.cat([target, mask[:, :1]], 1)
    cfg = LossConfig({term: 1.0}, feature_boost=feature_boost)
    base = swap_losses(pred, target, mask, cfg)[term]
    rise = []
    for idx in (RIGHT_EYE, [50, 205]):
        p = pred.clone()
        for i, (x, y) in enumerate(np.round(lm[:, idx].mean(1)).astype(int)):
            patch = p[i, :3, y - 2:y + 3, x - 2:x + 3]  # (3, 5, 5)
            patch += torch.where(patch < 0.5, 0.25, -0.25)
        rise.append((swap_losses(p, target, mask, cfg)[term] - base).item())
    return rise[0], rise[1]


@pytest.mark.parametrize("term", ["face", "ssim"])
def test_feature_boost_weighs_eyes_over_cheeks(crops, term):
    _, mask, lm = crops
    for i, (x, y) in enumerate(np.round(lm[:, [50, 205]].mean(1)).astype(int)):
        assert mask[i, 0, y, x] == 1 and mask[i, 1, y - 2:y + 3, x - 2:x + 3].max() == 0  # a cheek
    eye0, cheek0 = _eye_vs_cheek(crops, term, 0.0)
    eye, cheek = _eye_vs_cheek(crops, term, 4.0)
    assert eye / cheek > 1.5 * eye0 / cheek0  # the boost shifts the balance towards the eye
    if term == "face":  # per pixel: equal errors, so the eye's weight (8 vs 4) shows as is
        assert eye0 == pytest.approx(cheek0) and eye == pytest.approx(2 * cheek)
    # (DSSIM itself forgives an offset on the busy eye more than on flat skin: contrast masking)
    # with a hull-only mask (1 channel), feature_boost has nothing to act on
    target, mask, _ = crops
    pred = _pred(target, mask)
    one = [swap_losses(pred, target, mask[:, :1], LossConfig({term: 1.0}, feature_boost=b))[term]
           for b in (0.0, 4.0)]
    assert one[0] == one[1]


def test_zero_weight_is_reported_but_adds_no_gradient(crops):
    target, mask, _ = crops
    pred = _pred(target, mask)
    full = LossConfig({"face": 1.0, "ssim": 0.0, "mask": 0.5})
    out = swap_losses(pred, target, mask, full)
    assert set(out) == {"face", "ssim", "mask", "total"} and out["ssim"] > 0
    torch.testing.assert_close(out["total"], out["face"] + 0.5 * out["mask"])
    g_zero = _grad(pred, target, mask, full)
    g_without = _grad(pred, target, mask, LossConfig({"face": 1.0, "mask": 0.5}))
    torch.testing.assert_close(g_zero, g_without, rtol=0, atol=0)
    g_with = _grad(pred, target, mask, dataclasses.replace(full, weights={**full.weights, "ssim": 1.0}))
    assert (g_with - g_without).abs().sum() > 0


def test_defaults_and_config_errors(crops):
    target, mask, _ = crops
    out = swap_losses(_pred(target, mask), target, mask)
    assert set(out) == {"face", "ssim", "mask", "total"}
    assert all(v.dtype == torch.float32 and v.ndim == 0 for v in out.values())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out16 = swap_losses(_pred(target, mask).bfloat16(), target.bfloat16(), mask.bfloat16())
    assert all(v.dtype == torch.float32 for v in out16.values())
    with pytest.raises(ConfigError, match="unknown loss term.*known: face, ssim, mask"):
        swap_losses(target, target, mask, LossConfig({"gan": 1.0}))
    with pytest.raises(ConfigError, match="must be finite and >= 0"):
        swap_losses(target, target, mask, LossConfig({"face": -1.0}))
    with pytest.raises(ConfigError, match="mask_loss"):
        swap_losses(_pred(target, mask), target, mask, _only("mask", mask_loss="l2"))


def test_discriminator_learns_and_generator_loss_reaches_only_the_fake(crops):
    torch.manual_seed(0)
    target, mask, _ = crops
    real = target[:8]
    fake = torch.nn.functional.avg_pool2d(real, 5, 1, 2, count_include_pad=False)  # blurry "decoder"
    disc = PatchDiscriminator(S, width=16)
    assert disc(real).shape == (8, 1, 8, 8) and disc(real).dtype == torch.float32
    opt = torch.optim.Adam(disc.parameters(), lr=2e-4, betas=(0.5, 0.999))
    losses = []
    for _ in range(20):
        loss = discriminator_loss(disc, real, fake)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0] and losses[-1] < 0.35, losses

    fake = fake.clone().requires_grad_()
    for p in disc.parameters():
        p.grad = None
    g_loss = generator_loss(disc, fake)
    assert g_loss.ndim == 0 and g_loss > 0
    g_loss.backward()
    assert fake.grad.abs().sum() > 0
    assert all(p.grad is None for p in disc.parameters())
    assert disc.training and all(p.requires_grad for p in disc.parameters())  # frozen() restored
    with frozen(disc):
        assert not disc.training and not any(p.requires_grad for p in disc.parameters())
    # the discriminator loss does not reach the generator: fake is detached inside
    fake.grad = None
    discriminator_loss(disc, real, fake).backward()
    assert fake.grad is None
