"""The swap keeps what the mouth does: a smiling face converted through a model whose B never
opened its mouth keeps its open mouth (`blend.mouth: auto`), end to end through `swapstream
convert`."""

from __future__ import annotations

import json

import av
import cv2
import numpy as np
import pytest

from swapstream.core.geometry import INNER_LIPS, mouth_gap, polygon_mask
from swapstream.pipeline.cli import main
from swapstream.pipeline.config import ConvertConfig
from swapstream.pipeline.request import make_chain, mouth_floor
from swapstream.stages.face.blend import BlendStage


def _frames(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def _mouth_kept(src: list[np.ndarray], out: list[np.ndarray], mesh) -> float:
    """Share of the inner-mouth pixels (away from the lips' edge) of the frames with the mouth
    open that the output keeps within 8 grey levels of the input."""
    kept = []
    for i in range(0, len(src), 6):
        found = mesh.process(src[i]).multi_face_landmarks
        if not found:
            continue
        h, w = src[i].shape[:2]
        lm = np.array([[p.x * w, p.y * h] for p in found[0].landmark], np.float32)
        if mouth_gap(lm) < 0.05:
            continue
        core = cv2.erode(polygon_mask(lm[INNER_LIPS], (h, w)).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        diff = np.abs(out[i].astype(int) - src[i].astype(int)).max(2)
        kept.append((diff[core] <= 8).mean())
    assert len(kept) >= 3, "the sample clip should show an open mouth in several frames"
    return float(np.mean(kept))


def test_an_open_mouth_survives_a_model_that_never_saw_one(clips, model_dir, tmp_path):
    mp = pytest.importorskip("mediapipe")
    meta = json.loads((model_dir / "model.json").read_text())
    reach = meta["training"]["expression"]["b"]["mouth_reach"]
    assert reach < 0.04  # Grace Hopper's faceset: lips closed
    assert meta["training"]["expression"]["a"]["mouth_reach"] > 0.05  # the astronaut smiles
    floor = meta["training"]["expression"]["b"]["mouth_floor"]  # B's narrowest mouth: closed
    assert 0.0 <= floor <= reach and meta["training"]["expression"]["a"]["mouth_floor"] > 0.04
    cfg = ConvertConfig(runner="local")
    cfg.swap.model = str(model_dir)
    blend = make_chain(cfg, meta, "convert")[-1].build()  # what convert's blend stage is given
    assert isinstance(blend, BlendStage) and (blend.mouth_reach, blend.mouth_floor) == (reach, floor)
    assert mouth_floor(meta, "b") == floor and mouth_floor({"training": {}}, "b") is None  # old models

    src = _frames(clips["a"])
    outs = {}
    for mode in ("auto", "swap"):
        dst = tmp_path / f"{mode}.mp4"
        assert main(["-q", "convert", str(clips["a"]), str(dst), "--model", str(model_dir),
                     "--runner", "local", "--mouth", mode, "--crf", "0"]) == 0  # lossless: no codec noise
        outs[mode] = _frames(dst)
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True) as mesh:
        auto, swap = _mouth_kept(src, outs["auto"], mesh), _mouth_kept(src, outs["swap"], mesh)
    assert auto > 0.9, auto
    assert swap < 0.6, swap
