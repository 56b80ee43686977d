"""Swap engines: the registry, parity of every engine that runs here with eager on real face
crops, what torch-tensorrt consumes (torch.export with a dynamic batch), and the engine cache."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from swapstream.core.errors import ConfigError
from swapstream.engines import available_engines, create_engine, engine_status, pick_engine, register_engine
from swapstream.engines.base import Direction
from swapstream.engines.cache import EngineCache, engine_key
from swapstream.engines.checkpoint import save_checkpoint
from swapstream.engines.device import HALF, cpu_has_bf16
from swapstream.engines.model import PRESETS, SwapModel, preset
from swapstream.engines.registry import ENGINES, EngineSpec, auto_order, engine_class

pytestmark = pytest.mark.slow

# hd256 (113 M parameters) through every engine takes minutes on a CPU: without a GPU its
# residual blocks are checked on a small model (test_res_blocks.py) and the presets here are the
# ones up to 128 px; with a GPU every preset runs.
TESTED = [n for n in PRESETS if preset(n).size <= 128 or torch.cuda.is_available()]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A checkpoint of each preset (seeded random weights; identities a, b)."""
    root = tmp_path_factory.mktemp("presets")
    out = {}
    for i, name in enumerate(PRESETS):
        if name not in TESTED:
            continue
        torch.manual_seed(i)
        out[name] = save_checkpoint(root / name, SwapModel(preset(name), ["a", "b"]), name)
    return out


@pytest.fixture(scope="module")
def faces(facesets) -> np.ndarray:
    """(8, 256, 256, 3) uint8 RGB: real aligned faces of both sample people, from the extractor."""
    files = sorted(facesets[0].glob("[0-9]*.png"))[:4] + sorted(facesets[1].glob("[0-9]*.png"))[:4]
    assert len(files) == 8
    return np.stack([cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files])


def crops_for(faces: np.ndarray, size: int, coverage: float = 0.7) -> np.ndarray:
    """The model's crops of the faceset faces: the faceset's landmark square (half its side) is
    `coverage` of the crop, as the align stage cuts them."""
    side = faces.shape[1]
    span = int(round(side * 0.5 / coverage))
    lo = (side - span) // 2
    return np.stack([cv2.resize(f[lo:lo + span, lo:lo + span], (size, size), interpolation=cv2.INTER_AREA)
                     for f in faces])


# -- the registry ----------------------------------------------------------------------------------

def test_status_lists_every_engine_with_a_reason():
    rows = {name: (ok, why) for name, ok, why in engine_status("cpu")}
    assert set(rows) == {"eager", "compile", "onnx", "tensorrt"}
    assert rows["eager"][0] and rows["onnx"][0]  # the dev install brings onnx
    assert not rows["tensorrt"][0]  # CUDA only
    assert available_engines("cpu") == [n for n, (ok, _) in rows.items() if ok]
    assert pick_engine("cpu") == next(n for n in auto_order("cpu") if rows[n][0])


def test_wrong_or_missing_engines_say_what_to_do(checkpoints):
    with pytest.raises(ConfigError, match="unknown engine 'warp-drive'; engines: auto, eager"):
        create_engine("warp-drive", checkpoints["lite64"])
    register_engine(EngineSpec("fake", "no_such_module:Engine", "an engine whose package is missing",
                               ("no_such_package_xyz",), "fake-extra"))
    try:
        with pytest.raises(ConfigError, match=r"pip install 'swapstream\[fake-extra\]'"):
            engine_class("fake")
        assert ("fake", False) == next((n, ok) for n, ok, _ in engine_status("cpu") if n == "fake")
    finally:
        del ENGINES["fake"]
    with pytest.raises(ConfigError, match="does not run fp16 on cpu"):
        create_engine("onnx", checkpoints["lite64"], device="cpu", precision="fp16")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")
def test_tensorrt_without_cuda_or_package_is_one_line_exit_2(checkpoints, tmp_path):
    with pytest.raises(ConfigError, match="tensorrt"):
        create_engine("tensorrt", checkpoints["lite64"])
    r = subprocess.run([sys.executable, "-m", "swapstream.pipeline.cli", "-q", "compile",
                        str(checkpoints["lite64"]), "--engine", "tensorrt"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert "swapstream[tensorrt]" in lines[0] or "CUDA" in lines[0]


def test_engines_are_imported_only_when_asked_for():
    code = ("import json, sys; from swapstream.engines.registry import engine_status, pick_engine, "
            "resolve_engine; engine_status('cpu'); pick_engine('cpu'); resolve_engine('auto', 'cpu'); "
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         check=True)
    loaded = set(json.loads(out.stdout))
    heavy = {"swapstream.engines.eager", "swapstream.engines.compiled", "swapstream.engines.onnx",
             "swapstream.engines.onnx_cached", "swapstream.engines.tensorrt", "torch", "onnxruntime",
             "onnxscript", "torch_tensorrt"}
    assert not loaded & heavy, loaded & heavy
    assert "swapstream.engines.registry" in loaded


# -- parity over the registry --------------------------------------------------------------------

def _variants() -> list[tuple[str, str]]:
    """(engine, precision) for every engine available on this CPU and each precision it runs
    here, but eager fp32 (the reference); bf16 only where the CPU has it natively."""
    out = []
    for name in available_engines("cpu"):
        for prec in engine_class(name).precisions["cpu"]:
            if (name, prec) != ("eager", "fp32") and (prec != "bf16" or cpu_has_bf16()):
                out.append((name, prec))
    return out


# original64 is lite64's network at four times the width: on a CPU the agreement test checks the
# two architectures (lite64, hd128) and leaves original64's 50 s of compiling to a GPU run
AGREE = [n for n in TESTED if n != "original64" or torch.cuda.is_available()]


@pytest.mark.parametrize("name", AGREE)
def test_every_engine_agrees_with_eager(checkpoints, faces, name):
    """fp32 engines: mean |diff| <= 1/255 on the faces and <= 0.005 on the masks; half
    precision <= 2/255 and 0.01; batch 8 and 1."""
    size = preset(name).size
    crops = crops_for(faces, size)
    ref = create_engine("eager", checkpoints[name], device="cpu", precision="fp32", batch_size=8)
    variants = _variants()
    assert ("onnx", "fp32") in variants and ("compile", "fp32") in variants
    for engine, prec in variants:
        eng = create_engine(engine, checkpoints[name], device="cpu", precision=prec, batch_size=8)
        tol_face, tol_mask = (2.0, 0.01) if prec in HALF else (1.0, 0.005)
        for identity, batch in (("b", 8), ("b", 1)):
            want_f, want_m = ref.swap(crops[:batch], identity)
            got_f, got_m = eng.swap(crops[:batch], identity)
            assert got_f.shape == want_f.shape and got_f.dtype == np.uint8
            assert got_m.shape == want_m.shape and got_m.dtype == np.float32
            d_face = np.abs(got_f.astype(float) - want_f).mean()
            d_mask = np.abs(got_m - want_m).mean()
            assert d_face <= tol_face and d_mask <= tol_mask, (engine, prec, identity, batch, d_face, d_mask)
        assert np.abs(want_f.astype(float) - crops[:batch]).mean() > 5  # the swap changed the faces


@pytest.mark.parametrize("name", TESTED)
def test_each_direction_exports_with_a_dynamic_batch(checkpoints, name):
    """What torch-tensorrt's dynamo path starts from: torch.export with a dynamic batch gives the
    eager output at batch sizes other than the traced one."""
    model = SwapModel(preset(name), ["a", "b"]).eval()
    size = preset(name).size
    for identity in ("a", "b"):
        module = Direction(model, identity).eval()
        batch = torch.export.Dim("batch", min=1, max=32)
        ep = torch.export.export(module, (torch.rand(4, 3, size, size),), dynamic_shapes={"x": {0: batch}})
        for n in (1, 3):
            x = torch.rand(n, 3, size, size)
            with torch.no_grad():
                torch.testing.assert_close(ep.module()(x), module(x), rtol=1e-4, atol=1e-5)


# -- the engine cache ------------------------------------------------------------------------------

def test_cache_key_changes_with_whatever_makes_the_engine(checkpoints, tmp_path, monkeypatch):
    monkeypatch.setenv("SWAPSTREAM_CACHE", str(tmp_path / "cache"))
    eng = create_engine("onnx", checkpoints["lite64"], device="cpu")
    base = eng.key_fields("b")
    keys = {engine_key(base)}
    for change in ({"weights": "0" * 64}, {"precision": "fp16"}, {"batch": [1, 64]}, {"torch": "9.9"},
                   {"identity": "a"}, {"onnxscript": "0.0.1"}):
        keys.add(engine_key({**base, **change}))
    assert len(keys) == 7
    assert engine_key(dict(reversed(list(base.items())))) == engine_key(base)  # order does not matter
    save_checkpoint(tmp_path / "retrained", SwapModel(preset("lite64"), ["a", "b"]), "lite64", step=1)
    other = create_engine("onnx", tmp_path / "retrained", device="cpu")
    assert engine_key(other.key_fields("b")) != engine_key(base)  # new weights, new engine


def test_a_cached_engine_is_reused_and_a_truncated_one_rebuilt(checkpoints, faces, tmp_path, monkeypatch):
    monkeypatch.setenv("SWAPSTREAM_CACHE", str(tmp_path / "cache"))
    crops = crops_for(faces, 64)
    first = create_engine("onnx", checkpoints["lite64"], device="cpu")
    want = first.swap(crops, "b")
    assert first.built["b"] and first.paths["b"].is_relative_to(tmp_path / "cache")
    second = create_engine("onnx", checkpoints["lite64"], device="cpu")
    np.testing.assert_array_equal(second.swap(crops, "b")[0], want[0])
    assert second.built["b"] is False and second.paths["b"] == first.paths["b"]
    path = first.paths["b"]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a copy cut off half way
    third = create_engine("onnx", checkpoints["lite64"], device="cpu")
    np.testing.assert_array_equal(third.swap(crops, "b")[0], want[0])
    assert third.built["b"] is True and path.stat().st_size == len(data)


def _store_slowly(args) -> str:
    root, payload = args
    cache = EngineCache("test", Path(root))

    def build(p: Path) -> None:
        with open(p, "wb") as f:
            for _ in range(20):
                f.write(payload)
                f.flush()
                time.sleep(0.01)

    path, built = cache.get({"k": 1}, "engine.bin", build)
    return f"{path}|{built}"


def test_processes_building_one_key_at_once_build_it_once(tmp_path):
    payload = os.urandom(50_000)
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = [r.split("|") for r in pool.map(_store_slowly, [(str(tmp_path), payload)] * 4)]
    paths = [p for p, _ in results]
    assert len(set(paths)) == 1
    assert sum(b == "True" for _, b in results) == 1  # one built it, the others waited and loaded it
    assert Path(paths[0]).read_bytes() == payload * 20
    folder = tmp_path / "engines" / "test"
    kept = [p.name for p in folder.iterdir() if not p.name.endswith(".lock")]
    assert kept == [Path(paths[0]).parent.name]  # no temporary leftovers
    entry = json.loads((Path(paths[0]).parent / "entry.json").read_text())
    assert entry["size"] == len(payload) * 20


def test_compile_command_builds_once_then_finds_it(checkpoints, tmp_path):
    env = {**os.environ, "SWAPSTREAM_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "swapstream.pipeline.cli", "compile", str(checkpoints["lite64"]),
           "--engine", "onnx", "--batch", "1-16"]
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("built in") == 2  # both directions
    built = sorted((tmp_path / "cache" / "engines" / "onnx").glob("*/direction.onnx"))
    assert len(built) == 2 and all(str(p) in first.stdout for p in built)
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0 and again.stdout.count("found in the cache") == 2, again.stdout


def test_engines_command_lists_them():
    r = subprocess.run([sys.executable, "-m", "swapstream.pipeline.cli", "engines", "--device", "cpu"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [ln.split()[0] for ln in lines[:4]] == ["eager", "compile", "onnx", "tensorrt"]
    assert lines[-1] == f"--engine auto picks: {pick_engine('cpu')}"


# -- GPU ----------------------------------------------------------------------------------------

def _has_trt() -> bool:
    try:
        import torch_tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("engine", ["compile", "onnx", "tensorrt"])
def test_gpu_engines_agree_with_eager_fp32(checkpoints, faces, engine, tmp_path, monkeypatch):
    if engine == "tensorrt" and not _has_trt():
        pytest.skip("torch-tensorrt is not installed: pip install 'swapstream[tensorrt]'")
    if engine not in available_engines("cuda"):
        pytest.skip(f"{engine} cannot run on this GPU machine")
    monkeypatch.setenv("SWAPSTREAM_CACHE", str(tmp_path / "cache"))
    for name in TESTED:
        crops = crops_for(faces, preset(name).size)
        ref = create_engine("eager", checkpoints[name], device="cpu", precision="fp32")
        for prec, batch_size in (("fp16", 8), ("fp32", 8), ("fp16", 1)):
            eng = create_engine(engine, checkpoints[name], device="cuda", precision=prec,
                                batch_size=batch_size)
            tol_face, tol_mask = (2.0, 0.01) if prec in HALF else (1.0, 0.005)
            for batch in (1, 8):
                want_f, want_m = ref.swap(crops[:batch], "b")
                got_f, got_m = eng.swap(crops[:batch], "b")
                assert np.abs(got_f.astype(float) - want_f).mean() <= tol_face, (name, prec, batch)
                assert np.abs(got_m - want_m).mean() <= tol_mask, (name, prec, batch)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_tensorrt_program_copied_under_another_key_is_rebuilt(checkpoints, faces, tmp_path, monkeypatch):
    """The key inside the saved program (engines.export_key), checked on load: a2b's program
    copied over b2a's, its entry.json rewritten to match, is rebuilt and b2a runs again."""
    if not _has_trt():
        pytest.skip("torch-tensorrt is not installed: pip install 'swapstream[tensorrt]'")
    from swapstream.engines.checkpoint import sha256_file
    from swapstream.engines.export_key import EXPORT_KEY

    monkeypatch.setenv("SWAPSTREAM_CACHE", str(tmp_path / "cache"))
    crops = crops_for(faces, 64)
    ref = create_engine("eager", checkpoints["lite64"], device="cpu", precision="fp32")
    first = create_engine("tensorrt", checkpoints["lite64"], device="cuda", precision="fp32", batch_size=8)
    for identity in ("a", "b"):
        first.swap(crops[:4], identity)
        assert EXPORT_KEY.read(first.paths[identity]) == engine_key(first.key_fields(identity))
    victim = first.paths["a"]
    victim.write_bytes(first.paths["b"].read_bytes())
    entry = victim.parent / "entry.json"
    meta = json.loads(entry.read_text())
    meta.update(size=victim.stat().st_size, sha256=sha256_file(victim))
    entry.write_text(json.dumps(meta))
    second = create_engine("tensorrt", checkpoints["lite64"], device="cuda", precision="fp32", batch_size=8)
    got_f, _ = second.swap(crops[:4], "a")
    assert second.built["a"] is True
    want_f, _ = ref.swap(crops[:4], "a")
    assert np.abs(got_f.astype(float) - want_f).mean() <= 1.0


def test_auto_resolves_once_for_the_precision_asked(checkpoints):
    """The driver's choice is what every worker builds: an engine that runs the precision, with
    the precision resolved; options that do not fit the engine are refused up front."""
    from swapstream.pipeline.config import SwapSection
    from swapstream.pipeline.request import choose_engine

    model = str(checkpoints["lite64"])
    sw = SwapSection(model=model, device="cpu")
    assert "fp32 on cpu" in choose_engine(sw)
    assert sw.engine == pick_engine("cpu") and sw.precision == "fp32"
    if cpu_has_bf16():
        half = SwapSection(model=model, device="cpu", precision="bf16")
        choose_engine(half)
        assert "bf16" in engine_class(half.engine).precisions["cpu"] and half.engine != "onnx"
    with pytest.raises(ConfigError, match="does not run fp16 on cpu"):
        choose_engine(SwapSection(model=model, device="cpu", engine="onnx", precision="fp16"))
    with pytest.raises(ConfigError, match="--providers is for the onnx engine"):
        choose_engine(SwapSection(model=model, device="cpu", engine="eager",
                                  providers="CPUExecutionProvider"))
    listed = SwapSection(model=model, device="cpu", engine="onnx",
                         providers=["CPUExecutionProvider"])  # a list, as a settings file gives it
    choose_engine(listed)
