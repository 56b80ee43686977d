"""Session fixtures: small real media built from faces that ship in packages, real facesets made
by the real extractor, and a lite64 model trained for a few steps. Treat them as read-only."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import pytest

os.environ.setdefault("GLOG_minloglevel", "2")
# The engine cache (exported ONNX files, Inductor kernels) of this test run, not the user's: set
# before any Ray worker starts, so the workers share it with the tests.
os.environ["SWAPSTREAM_CACHE"] = tempfile.mkdtemp(prefix="swapstream-test-cache-")
warnings.filterwarnings("ignore", message=".*SymbolDatabase.GetPrototype.*")

CLIP_W, CLIP_H, CLIP_SECONDS, CLIP_FPS = 400, 300, 2.0, 30


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> dict[str, Path]:
    """{"a": astronaut clip, "b": grace_hopper clip, "ab": both faces, "empty": no face}.

    400x300, 2 s at 30 fps, H.264 + AAC tone; faces ~80-110 px tall.
    """
    from swapstream.pipeline.samples import background, make_clip, write_clip

    root = tmp_path_factory.mktemp("clips")
    out = {
        "a": make_clip(root / "a.mp4", ["astronaut"], CLIP_SECONDS, CLIP_FPS, CLIP_W, CLIP_H, 0.6, seed=1),
        "b": make_clip(root / "b.mp4", ["grace_hopper"], CLIP_SECONDS, CLIP_FPS, CLIP_W, CLIP_H, 0.6, seed=2),
        "ab": make_clip(root / "ab.mp4", ["astronaut", "grace_hopper"], 1.0, CLIP_FPS, 560, 300, 0.6),
    }
    out["empty"] = write_clip(root / "empty.mp4", [background(CLIP_W, CLIP_H)] * 10, CLIP_FPS)
    return out


@pytest.fixture(scope="session")
def facesets(clips, tmp_path_factory) -> tuple[Path, Path]:
    """(dir_a, dir_b): facesets extracted from the a and b clips (every 2nd frame, 30 faces)."""
    from swapstream.training.extract import ExtractSettings, extract

    root = tmp_path_factory.mktemp("facesets")
    for name in ("a", "b"):
        extract([clips[name]], root / name, ExtractSettings(every=2), progress=False)
    return root / "a", root / "b"


@pytest.fixture(scope="session")
def model_dir(facesets, tmp_path_factory) -> Path:
    """A lite64 checkpoint trained 30 steps on the two facesets (identities a, b)."""
    from swapstream.training.loop import TrainConfig, train

    out = tmp_path_factory.mktemp("model") / "ckpt"
    train(TrainConfig(a=str(facesets[0]), b=str(facesets[1]), out=str(out), steps=30, batch_size=8,
                      lr=3e-4, save_every=30, preview_every=30), progress=False)
    return out
