"""The hd256 preset and residual decoders (ModelConfig.res_blocks): shapes, checkpoints, old
model.json files, and every engine that runs here building a residual model."""

import json

import numpy as np
import pytest
import torch

from swapstream.core.errors import ModelError
from swapstream.engines import available_engines, create_engine
from swapstream.engines.checkpoint import load_checkpoint, save_checkpoint, sha256_file
from swapstream.engines.model import ModelConfig, ResBlock, SwapModel, Upscale, preset

# 32 px, two residual blocks after each of the two decoder upscales: seconds to build anywhere
TINY = ModelConfig(32, (8, 16, 32), 32, 32, 16, (16, 8), res_blocks=2)


def test_hd256_shapes_ranges_and_size():
    cfg = preset("hd256")
    assert cfg.size == 256 == 4 * 2 ** len(cfg.enc_channels) and cfg.res_blocks == 1
    torch.manual_seed(0)
    model = SwapModel(cfg, ["a", "b"]).eval()
    n_params = sum(p.numel() for p in model.parameters())
    assert 110e6 < n_params < 150e6, n_params  # 113.5M: trainable on one GPU
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        z = model.encoder(x)
        y = model.decoders["a"](z)
    assert z.shape == (2, cfg.upscale_channels, 8, 8)
    assert y.shape == (2, 4, 256, 256) and y.dtype == torch.float32
    assert 0 <= y.min() and y.max() <= 1


def test_hd256_decoder_has_a_residual_block_after_each_upscale():
    dec = SwapModel(preset("hd256"), ["a"]).decoders["a"]
    assert [u.conv.out_channels // 4 for u in dec.ups] == [512, 256, 128, 64, 32]
    assert all(isinstance(u, Upscale) for u in dec.ups)
    for c, blocks in zip(preset("hd256").dec_channels, dec.res):
        assert len(blocks) == 1 and isinstance(blocks[0], ResBlock)
        assert blocks[0].conv1.in_channels == blocks[0].conv2.out_channels == c
        assert blocks[0].conv1.kernel_size == (3, 3) and blocks[0].act.negative_slope == 0.2
    z = torch.rand(1, 512, 8, 8)
    with torch.no_grad():  # the blocks are in the forward: zeroing them changes the output
        before = dec(z)
        for blocks in dec.res:
            torch.nn.init.zeros_(blocks[0].conv2.weight)
        assert (dec(z) - before).abs().max() > 1e-4


def test_residual_block_adds_its_input():
    block = ResBlock(4)
    for conv in (block.conv1, block.conv2):
        torch.nn.init.zeros_(conv.weight), torch.nn.init.zeros_(conv.bias)
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(block(x), torch.nn.functional.leaky_relu(x, 0.2))


def test_old_model_json_loads_unchanged(tmp_path):
    """A model.json "model" section written before res_blocks existed gives the same config and
    state_dict keys, and the 2017-shaped presets still write it without the new key."""
    old = {"size": 64, "enc_channels": [32, 64, 128, 256], "latent": 256, "dense_channels": 256,
           "upscale_channels": 128, "dec_channels": [64, 32, 16]}
    cfg = ModelConfig.from_dict(old)
    assert cfg == preset("lite64") and cfg.res_blocks == 0
    assert preset("lite64").to_dict() == {**old, "enc_channels": (32, 64, 128, 256),
                                          "dec_channels": (64, 32, 16)}
    for name in ("lite64", "original64", "hd128"):
        keys = list(SwapModel(preset(name), ["a", "b"]).state_dict())
        assert not any(".res." in k for k in keys), name
    keys = list(SwapModel(cfg, ["a", "b"]).state_dict())
    assert len(keys) == 30 and keys[-4:] == ["decoders.b.ups.2.conv.weight", "decoders.b.ups.2.conv.bias",
                                             "decoders.b.out.weight", "decoders.b.out.bias"]
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "old", SwapModel(cfg, ["a", "b"]), "lite64")
    assert json.loads((path / "model.json").read_text())["model"] == old
    assert load_checkpoint(path).model.cfg == cfg


def test_res_blocks_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = SwapModel(TINY, ["a", "b"]).eval()
    path = save_checkpoint(tmp_path / "res", model, "tiny", step=3, training={"face": "whole"})
    meta = json.loads((path / "model.json").read_text())
    assert meta["model"]["res_blocks"] == 2
    ck = load_checkpoint(path)
    assert ck.model.cfg == TINY and ck.training["face"] == "whole"
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ck.model(x, "b"), model(x, "b"), rtol=0, atol=0)
    # the same weights under a model.json that lost res_blocks: the blocks' weights do not fit
    del meta["model"]["res_blocks"]
    meta["sha256"] = sha256_file(path / "model.safetensors")
    (path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="does not load into preset 'tiny'"):
        load_checkpoint(path)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["eager", "onnx"])
def test_engines_build_a_residual_model(tmp_path, engine, monkeypatch):
    """The engines take the model from the checkpoint: eager and the ONNX export build a residual
    model and agree with it (compile, ~80 s on 2 cores, is checked on hd256 by test_engines)."""
    if engine not in available_engines("cpu"):
        pytest.skip(f"{engine} does not run here")
    monkeypatch.setenv("SWAPSTREAM_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(1)
    model = SwapModel(TINY, ["a", "b"]).eval()
    path = save_checkpoint(tmp_path / "res", model, "tiny")
    eng = create_engine(engine, path, device="cpu", precision="fp32", batch_size=4)
    crops = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    faces, masks = eng.swap(crops, "a")
    assert faces.shape == (5, 32, 32, 3) and masks.shape == (5, 32, 32)
    with torch.no_grad():
        ref = model(torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255, "a")
    ref_faces = (ref[:, :3] * 255).round().permute(0, 2, 3, 1).numpy()
    assert np.abs(faces.astype(float) - ref_faces).max() <= 1
    np.testing.assert_allclose(masks, ref[:, 3].numpy(), atol=1e-4)
