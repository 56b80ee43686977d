"""The engine cache trusts only what its user could have written: real folders with real modes,
real ONNX files read back by ONNX Runtime."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from swapstream.core.errors import ConfigError
from swapstream.engines.cache import EngineCache, engine_key
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
    shutil.copyfile(path_ab, path_ba)
    entry = path_ba.parent / "entry.json"
    meta = json.loads(entry.read_text())
    from swapstream.engines.checkpoint import sha256_file

    meta.update(size=path_ba.stat().st_size, sha256=sha256_file(path_ba))
    entry.write_text(json.dumps(meta))
    assert cache.lookup(b2a, "direction.onnx", repair=False) is None
    path, built = cache.get(b2a, "direction.onnx", lambda p: tiny_onnx(p, 3.0))
    assert built and run(path)[0] == 3.0  # the right direction runs
