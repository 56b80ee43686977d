"""The swap network, its checkpoints and the engine registry, with real torch."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from swapstream.core.errors import ConfigError, ModelError
from swapstream.engines import create_engine
from swapstream.engines.checkpoint import load_checkpoint, save_checkpoint
from swapstream.engines.model import PRESETS, SwapModel, preset


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_shapes_and_ranges(name):
    cfg = preset(name)
    model = SwapModel(cfg, ["a", "b"]).eval()
    x = torch.rand(2, 3, cfg.size, cfg.size)
    with torch.no_grad():
        y = model(x, "b")
    assert y.shape == (2, 4, cfg.size, cfg.size)
    assert 0 <= y.min() and y.max() <= 1
    assert model.encoder(x).shape == (2, cfg.upscale_channels, 8, 8)


def test_original64_is_the_2017_architecture():
    m = SwapModel(preset("original64"), ["a", "b"])
    convs = [c[0] for c in m.encoder.convs]
    assert [c.out_channels for c in convs] == [128, 256, 512, 1024]
    assert all(c.kernel_size == (5, 5) and c.stride == (2, 2) for c in convs)
    assert (m.encoder.dense1.in_features, m.encoder.dense1.out_features) == (4 * 4 * 1024, 1024)
    assert m.encoder.dense2.out_features == 4 * 4 * 1024
    assert m.encoder.up.conv.out_channels == 4 * 512
    dec = m.decoders["a"]
    assert [u.conv.out_channels // 4 for u in dec.ups] == [256, 128, 64]
    assert dec.out.kernel_size == (5, 5) and dec.out.out_channels == 4


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="lite64"):
        preset("huge")


@pytest.fixture
def lite(tmp_path):
    torch.manual_seed(0)
    model = SwapModel(preset("lite64"), ["a", "b"]).eval()
    path = save_checkpoint(tmp_path / "ckpt", model, "lite64", step=7, training={"coverage": 0.7})
    return model, path


def test_checkpoint_round_trip(lite):
    model, path = lite
    assert sorted(p.name for p in path.iterdir()) == ["model.json", "model.safetensors"]
    ck = load_checkpoint(path)
    assert ck.step == 7 and ck.preset == "lite64" and ck.identities == ["a", "b"]
    assert ck.training["coverage"] == 0.7
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ck.model(x, "a"), model(x, "a"), rtol=0, atol=0)


def test_save_replaces_atomically_and_leaves_no_temp(lite):
    model, path = lite
    (path / "preview.png").write_bytes(b"png")
    save_checkpoint(path, model, "lite64", step=8)
    assert load_checkpoint(path).step == 8
    assert [p.name for p in path.parent.iterdir()] == ["ckpt"]
    assert (path / "preview.png").read_bytes() == b"png"  # other files are carried over


def test_pickle_checkpoints_are_refused(lite, tmp_path):
    model, path = lite
    torch.save(model.state_dict(), path / "model.safetensors")
    with pytest.raises(ModelError, match="pickle"):
        load_checkpoint(path)
    pt = tmp_path / "model.pt"
    torch.save(model.state_dict(), pt)
    with pytest.raises(ModelError, match="pickle"):
        load_checkpoint(pt)


def test_truncated_weights_are_refused(lite):
    _, path = lite
    f = path / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(ModelError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_other_preset_is_refused(lite, tmp_path):
    _, path = lite
    with pytest.raises(ModelError, match="pass --preset lite64"):
        load_checkpoint(path, expect_preset="original64")
    # weights of one preset under a model.json that claims another: shapes do not fit
    meta = json.loads((path / "model.json").read_text())
    big = SwapModel(preset("hd128"), ["a", "b"])
    save_file({k: v.contiguous() for k, v in big.state_dict().items()}, path / "model.safetensors")
    from swapstream.engines.checkpoint import sha256_file

    meta["sha256"] = sha256_file(path / "model.safetensors")
    (path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="does not load into preset 'lite64'"):
        load_checkpoint(path)


def test_corrupt_json_and_missing_dir(lite, tmp_path):
    _, path = lite
    with pytest.raises(ModelError, match="not found"):
        load_checkpoint(tmp_path / "nope")
    (path / "model.json").write_text("{not json")
    with pytest.raises(ModelError, match="corrupt"):
        load_checkpoint(path)


def test_model_json_missing_keys_is_an_error(lite):
    _, path = lite
    meta = json.loads((path / "model.json").read_text())
    del meta["identities"]
    (path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="lacks or mangles identities"):
        load_checkpoint(path)


def test_save_cut_off_between_renames_is_recovered(lite):
    """A save killed after moving the old checkpoint aside, before the new one took its place."""
    model, path = lite
    aside = path.with_name(f".{path.name}.old-999")
    path.rename(aside)
    half = path.with_name(f".{path.name}.tmp-dead")
    half.mkdir()
    assert load_checkpoint(path).step == 7  # the old one is put back
    save_checkpoint(path, model, "lite64", step=9)
    assert load_checkpoint(path).step == 9
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt"]  # leftovers swept


def test_eager_engine_agrees_with_the_model(lite):
    model, path = lite
    engine = create_engine("eager", path, device="cpu", batch_size=4)
    crops = np.random.default_rng(0).integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
    faces, masks = engine.swap(crops, "b")
    assert faces.shape == (6, 64, 64, 3) and faces.dtype == np.uint8
    assert masks.shape == (6, 64, 64) and masks.dtype == np.float32
    assert 0 <= masks.min() and masks.max() <= 1
    with torch.no_grad():
        ref = model(torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255, "b")
    ref_faces = (ref[:, :3] * 255).round().byte().permute(0, 2, 3, 1).numpy()
    assert np.abs(faces.astype(int) - ref_faces).max() <= 1
    np.testing.assert_allclose(masks, ref[:, 3].numpy(), atol=1e-5)
    with pytest.raises(ModelError, match="no decoder 'c'"):
        engine.swap(crops, "c")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_eager_engine_fp16_on_cuda_agrees_with_cpu(lite):
    _, path = lite
    crops = np.random.default_rng(0).integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
    cpu_faces, cpu_masks = create_engine("eager", path, device="cpu").swap(crops, "a")
    gpu_faces, gpu_masks = create_engine("eager", path, device="cuda").swap(crops, "a")
    assert np.abs(cpu_faces.astype(int) - gpu_faces).mean() < 1.0
    assert np.abs(cpu_masks - gpu_masks).max() < 0.02
