"""The 256 px preset through the real training loop on CPU (`swapstream train`, a few steps at
batch 1), with the whole-face crop: what the checkpoint records, and the crop convert then cuts."""

import json
import math

import pytest

from swapstream.core.errors import ConfigError
from swapstream.engines.checkpoint import read_meta
from swapstream.pipeline.cli import main
from swapstream.pipeline.config import ConvertConfig, SwapSection
from swapstream.pipeline.request import make_chain
from swapstream.stages.face.align import AlignStage
from swapstream.training.loop import TrainConfig, train

pytestmark = pytest.mark.slow  # ~45 s of CPU: 113M parameters, a 1.4 GB checkpoint with Adam state


def _align_of(meta: dict) -> AlignStage:
    cfg = ConvertConfig(swap=SwapSection(model="unused"))
    link = next(lk for lk in make_chain(cfg, meta, "convert") if lk.name == "align")
    return link.build()


def test_hd256_trains_whole_face_and_convert_cuts_the_same_crop(facesets, tmp_path):
    out = tmp_path / "hd"
    argv = ["-q", "train", "--runner", "local", "--device", "cpu", "--a", str(facesets[0]),
            "--b", str(facesets[1]), "-o", str(out), "--preset", "hd256", "--face", "whole",
            "--steps", "2", "--batch-size", "1", "--log-every", "1"]
    assert main(argv) == 0
    meta = read_meta(out)
    assert meta["preset"] == "hd256" and meta["step"] == 2
    assert meta["model"]["size"] == 256 and meta["model"]["res_blocks"] == 1
    assert meta["training"]["face"] == "whole" and meta["training"]["coverage"] == 0.7
    rows = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["loss_a"]) and math.isfinite(r["loss_b"]) for r in rows)
    assert (out / "preview.png").exists() and (out / "optimizer.safetensors").exists()
    # convert aligns with the crop the model was trained on
    s = _align_of(meta).settings
    assert (s.size, s.coverage, s.face) == (256, 0.7, "whole")
    # a checkpoint of before --face converts with the 2017 crop
    old = {**meta, "training": {k: v for k, v in meta["training"].items() if k != "face"}}
    assert _align_of(old).settings.face == "face"
    # resuming with another crop is refused, naming the flag that continues it
    with pytest.raises(ConfigError, match="pass --face whole to resume it"):
        train(TrainConfig(str(facesets[0]), str(facesets[1]), str(out), preset="hd256", steps=3,
                          batch_size=1, device="cpu"), progress=False)
