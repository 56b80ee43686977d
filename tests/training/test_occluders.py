"""Occluder augmentation: what it pastes, what it takes out of the mask target, and that a
decoder's learned mask trained with it leaves a real object over a real face out."""

from __future__ import annotations

import numpy as np
import torch

from swapstream.training.augment import occlude
from swapstream.training.occluders import KINDS, draw_hand, hand_shape, random_occluder


def test_every_kind_draws_an_occluder_inside_the_crop():
    rng = np.random.default_rng(0)
    other = rng.random((64, 64, 3)).astype(np.float32)
    areas = []
    for _ in range(200):
        alpha, colour = random_occluder(rng, 64, other)
        assert alpha.shape == (64, 64) and colour.shape == (64, 64, 3)
        assert alpha.dtype == np.float32 and colour.dtype == np.float32
        assert 0 <= alpha.min() and alpha.max() <= 1 and 0 <= colour.min() and colour.max() <= 1
        areas.append(float((alpha > 0.5).mean()))
    areas = np.array(areas)
    assert (areas > 0).mean() > 0.9  # nearly every draw covers something...
    assert np.median(areas) < 0.3  # ...and most leave most of the face visible
    assert set(KINDS) == {"ellipse", "polygon", "hand", "strands"}


def test_the_hand_shape_has_a_palm_and_five_fingers():
    mask, light = hand_shape((200, 200), (100, 130), 40)
    # a row through the fingers crosses five separate runs of hand
    row = mask[int(130 - 1.1 * 40)] > 0
    runs = int(np.count_nonzero(np.diff(row.astype(np.int8)) == 1))
    assert runs >= 4
    assert mask[130, 100] == 1 and light[130, 100] > 0.5  # the palm
    frame = np.full((200, 200, 3), 40, np.uint8)
    drawn, inside = draw_hand(frame, (100, 130), 40)
    assert inside.sum() == (mask > 0).sum() and (drawn[inside] != 40).any()
    assert np.array_equal(drawn[~inside], frame[~inside])


def test_occlude_pastes_on_the_input_and_cuts_the_mask_only():
    g = torch.Generator().manual_seed(3)
    warped = torch.rand(8, 3, 64, 64, generator=g)
    mask = torch.ones(8, 2, 64, 64)
    w2, m2 = occlude(warped, mask, 1.0, torch.Generator().manual_seed(1))
    assert torch.equal(mask, torch.ones(8, 2, 64, 64))  # inputs not written to
    assert m2.shape == (8, 3, 64, 64)
    cut = 1 - m2[:, 0]  # (8, 64, 64): the occluders' alpha
    assert torch.allclose(cut, m2[:, 2], atol=1e-6)  # the third channel is the occluders' alpha
    assert (cut.flatten(1).amax(1) > 0.5).float().mean() > 0.8
    assert torch.equal(m2[:, 1], mask[:, 1])  # the eyes + mouth weight map is untouched
    changed = (w2 - warped).abs().amax(1) > 1e-6
    assert not changed[cut < 1e-6].any()  # the input changes only under an occluder
    # share 0 changes nothing; the same generator state gives the same occluders
    w0, m0 = occlude(warped, mask, 0.0, torch.Generator().manual_seed(1))
    assert torch.equal(w0, warped) and torch.equal(m0[:, :2], mask) and not m0[:, 2].any()
    w3, m3 = occlude(warped, mask, 1.0, torch.Generator().manual_seed(1))
    assert torch.equal(w3, w2) and torch.equal(m3, m2)


def test_the_mask_loss_pulls_the_mask_off_an_occluder():
    """With the occluder channel, a mask saturated at 1 under an occluder costs a large loss
    with a large gradient; without it (plain L1 through the saturated sigmoid) almost none."""
    from swapstream.training.losses import LossConfig, LossNets, mask_term

    logit = torch.full((1, 1, 8, 8), 7.0, requires_grad=True)  # sigmoid ~0.999 everywhere
    pred = torch.cat([torch.zeros(1, 3, 8, 8), torch.sigmoid(logit)], 1)
    occ = torch.zeros(1, 1, 8, 8)
    occ[..., 2:5, 2:5] = 1
    hull = 1 - occ
    grads = {}
    for name, mask in (("with", torch.cat([hull, torch.zeros_like(hull), occ], 1)),
                       ("without", torch.cat([hull, torch.zeros_like(hull)], 1))):
        logit.grad = None
        loss = mask_term(pred, None, mask, LossConfig(), LossNets())
        loss.backward(retain_graph=True)
        grads[name] = float(logit.grad[..., 2:5, 2:5].abs().mean())
    assert grads["with"] > 100 * grads["without"]


def _cup(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A real object: scikit-image's coffee cup, resized to size (w, h) -> (colour (h, w, 3)
    float32 0-1, alpha (h, w) float32: a filled ellipse, 1 inside)."""
    import cv2
    from skimage import data

    w, h = size
    cup = cv2.resize(data.coffee()[35:290, 170:410], (w, h), interpolation=cv2.INTER_AREA)
    alpha = np.zeros((h, w), np.float32)
    cv2.ellipse(alpha, (w // 2, h // 2), (w // 2 - 1, h // 2 - 1), 0, 0, 360, 1.0, -1)
    return cup.astype(np.float32) / 255, alpha


def test_the_learned_mask_drops_over_a_real_cup_after_a_short_training(facesets, tmp_path):
    """Train lite64 a few hundred steps with occluders on, then hold a real coffee cup (never
    seen in training: the occluders are synthetic shapes and other faces) over the lower half of
    real faces from the sample facesets: both decoders' masks drop over the cup, well below what
    the same pixels get on the clean face, and stay higher away from it.

    After 450 steps the mask has learned to tell the cup from the face but is not yet sure of
    it: over the cup 0.44-0.57, on the clean face ~0.70, away from the cup 0.66-0.70 (runs
    differ). The blend cuts where the mask falls below 0.8 of its own level over the face, fully
    below 0.4 (stages.face.masks): this test trains too little for that to be fully there (~half
    of the cup cut in the run above); bench_quality measures it after the demo's budget (95.9 %
    of a cup's and a hand's pixels kept)."""
    from swapstream.core.faceset import load_faceset
    from swapstream.engines.checkpoint import load_checkpoint
    from swapstream.training.augment import TrainingFaces
    from swapstream.training.loop import TrainConfig, train

    out = tmp_path / "model"
    train(TrainConfig(a=str(facesets[0]), b=str(facesets[1]), out=str(out), steps=450, batch_size=8,
                      lr=5e-4, occluders=0.5, save_every=450, preview_every=1000), progress=False)
    model = load_checkpoint(out).model.eval()
    faces = TrainingFaces(load_faceset(facesets[0]), 64, 0.7).fixed(8)  # (8, 3, 64, 64) 0-1
    colour, alpha = _cup((24, 26))
    for ident in ("a", "b"):
        over, clean, away = [], [], []
        for i in range(len(faces)):
            img = faces[i].permute(1, 2, 0).numpy().copy()
            y, x = 34, 12 + 2 * i
            region = img[y:y + 26, x:x + 24]
            region[:] = region * (1 - alpha[..., None]) + colour * alpha[..., None]
            core = np.zeros((64, 64), bool)
            core[y:y + 26, x:x + 24] = alpha > 0.9
            with torch.no_grad():
                m_occ = model(torch.from_numpy(img).permute(2, 0, 1)[None], ident)[0, 3].numpy()
                m_clean = model(faces[i:i + 1], ident)[0, 3].numpy()
            over.append(m_occ[core].mean())
            clean.append(m_clean[core].mean())
            away.append(m_occ[18:30, 20:44].mean())  # the eyes' band, above the cup
        over, clean, away = map(float, (np.mean(over), np.mean(clean), np.mean(away)))
        assert over < clean - 0.1, (ident, over, clean)
        assert away > over, (ident, away, over)
