"""The engine cache trusts only what its user could have written: real folders with real modes,
real ONNX files read back by ONNX Runtime."""

from __future__ import annotations

import json
import os
import shutil
import stat
import zipfile
from pathlib import Path

import pytest
import torch

from swapstream.core.errors import ConfigError
from swapstream.engines.cache import EngineCache, engine_key
from swapstream.engines.checkpoint import sha256_file
from swapstream.engines.export_key import EXPORT_KEY
from swapstream.engines.export_key import KEY_NAME as EXPORT_KEY_NAME
from swapstream.engines.onnx_key import KEY_NAME, ONNX_KEY


def tiny_onnx(path: Path, scale: float) -> None:
    """An ONNX model y = x * scale (float32, shape (1,)): two of them tell which one ran."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "k"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [helper.make_tensor("k", TensorProto.FLOAT, [1], [scale])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


def run(path: Path) -> tuple[float, dict]:
    import numpy as np
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (y,) = s.run(["y"], {"x": np.ones(1, np.float32)})
    return float(y[0]), s.get_modelmeta().custom_metadata_map


def copy_with_entry(src, dst) -> None:
    """The attack on a cache: src's engine file over dst's, dst's entry.json rewritten (size,
    sha256) to match it, as whoever can write to the cache could."""
    shutil.copyfile(src, dst)
    entry = dst.parent / "entry.json"
    meta = json.loads(entry.read_text())
    meta.update(size=dst.stat().st_size, sha256=sha256_file(dst))
    entry.write_text(json.dumps(meta))


def test_a_fresh_cache_is_private_and_others_caches_are_refused(tmp_path):
    root = tmp_path / "cache"
    path, built = EngineCache("t", root).get({"a": 1}, "f.bin", lambda p: p.write_bytes(b"x"))
    assert built and path.read_bytes() == b"x"
    for folder in (root, root / "engines", root / "engines" / "t", path.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder

    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # as /tmp, or a folder made with a loose umask
    with pytest.raises(ConfigError, match="can be written by others") as err:
        EngineCache("t", shared).get({"a": 1}, "f.bin", lambda p: p.write_bytes(b"evil"))
    assert "\n" not in str(err.value) and "chmod 700" in str(err.value)
    assert not (shared / "engines").exists()

    # folders an older version left group-writable (umask 002) are all named in one line
    old = tmp_path / "old"
    EngineCache("t", old).get({"a": 1}, "f.bin", lambda p: p.write_bytes(b"x"))
    for folder in (old / "engines", old / "engines" / "t"):
        os.chmod(folder, 0o775)
    with pytest.raises(ConfigError, match="can be written by others") as err:
        EngineCache("t", old).lookup({"a": 1}, "f.bin")
    assert f"chmod 700 {old / 'engines'} {old / 'engines' / 't'}" in str(err.value)

    link = tmp_path / "link"
    link.symlink_to(root)
    with pytest.raises(ConfigError, match="symbolic link"):
        EngineCache("t", link).lookup({"a": 1}, "f.bin")


def test_an_entry_copied_under_another_key_is_rebuilt(tmp_path):
    cache = EngineCache("onnx", tmp_path / "cache", binding=ONNX_KEY)
    a2b, b2a = {"identity": "b"}, {"identity": "a"}
    path_ab, _ = cache.get(a2b, "direction.onnx", lambda p: tiny_onnx(p, 2.0))
    path_ba, _ = cache.get(b2a, "direction.onnx", lambda p: tiny_onnx(p, 3.0))
    assert run(path_ab) == (2.0, {KEY_NAME: engine_key(a2b)})  # the stamp is valid ONNX
    assert ONNX_KEY.read(path_ba) == engine_key(b2a)
    # the attack: one direction's file over the other's, entry.json rewritten to match it
    copy_with_entry(path_ab, path_ba)
    assert cache.lookup(b2a, "direction.onnx", repair=False) is None
    path, built = cache.get(b2a, "direction.onnx", lambda p: tiny_onnx(p, 3.0))
    assert built and run(path)[0] == 3.0  # the right direction runs


class Scale(torch.nn.Module):
    """y = x * k: two of them tell which one ran."""

    def __init__(self, k: float) -> None:
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor([k]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.k


def saved_program(path: Path, k: float) -> None:
    """A real saved exported program with a dynamic batch, as torch_tensorrt.save writes the
    TensorRT engine's (output_format="exported_program" goes through torch.export.save)."""
    batch = torch.export.Dim("batch", min=1, max=32)
    ep = torch.export.export(Scale(k), (torch.ones(4, 1),), dynamic_shapes={"x": {0: batch}})
    torch.export.save(ep, str(path))


def run_program(path: Path) -> float:
    with torch.no_grad():
        y = torch.export.load(str(path)).module()(torch.ones(3, 1))
    assert y.shape == (3, 1)  # still a dynamic batch after the stamp
    return float(y[0, 0])


def test_a_saved_program_carries_its_key_and_still_loads(tmp_path):
    path = tmp_path / "direction.ep"
    saved_program(path, 2.0)
    assert EXPORT_KEY.read(path) is None  # torch writes none
    EXPORT_KEY.stamp(path, "k1")
    assert EXPORT_KEY.read(path) == "k1"
    assert run_program(path) == 2.0  # torch.export.load takes the archive as before
    extra = {EXPORT_KEY_NAME: ""}
    torch.export.load(str(path), extra_files=extra)  # and torch itself sees the key where we put it
    assert extra[EXPORT_KEY_NAME] == "k1"
    EXPORT_KEY.stamp(path, "k2")  # stamped again: replaced, not a second member beside the first
    with zipfile.ZipFile(path) as z:
        assert sum(n.endswith(f"/extra/{EXPORT_KEY_NAME}") for n in z.namelist()) == 1
    assert EXPORT_KEY.read(path) == "k2" and run_program(path) == 2.0
    (tmp_path / "not.ep").write_bytes(b"PK\x03\x04 not a zip")
    assert EXPORT_KEY.read(tmp_path / "not.ep") is None


def test_a_saved_program_copied_under_another_key_is_rebuilt(tmp_path):
    """The TensorRT engine's cache (kind, file name and binding as engines.tensorrt uses them),
    with plain exported programs standing in for TensorRT's: the binding reads only the zip."""
    cache = EngineCache("tensorrt", tmp_path / "cache", binding=EXPORT_KEY)
    a2b, b2a = {"identity": "b"}, {"identity": "a"}
    path_ab, _ = cache.get(a2b, "direction.ep", lambda p: saved_program(p, 2.0))
    path_ba, _ = cache.get(b2a, "direction.ep", lambda p: saved_program(p, 3.0))
    assert EXPORT_KEY.read(path_ab) == engine_key(a2b) and EXPORT_KEY.read(path_ba) == engine_key(b2a)
    assert cache.get(b2a, "direction.ep", lambda p: saved_program(p, 9.0)) == (path_ba, False)  # reused
    assert run_program(path_ab) == 2.0 and run_program(path_ba) == 3.0
    # the attack: one direction's program over the other's, entry.json rewritten to match it
    copy_with_entry(path_ab, path_ba)
    assert cache.lookup(b2a, "direction.ep", repair=False) is None
    path, built = cache.get(b2a, "direction.ep", lambda p: saved_program(p, 3.0))
    assert built and run_program(path) == 3.0  # the right direction runs
