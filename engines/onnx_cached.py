"""`CachedOnnxEngine`: the onnx engine's half that needs no torch (ONNX Runtime itself:
swapstream.engines.onnx_runtime), which the registry hands out for `--engine onnx` (or auto) on a CPU.

CachedOnnxEngine reads the checkpoint's model.json and runs the directions it finds in the engine
cache; importing torch (~1.1 s of every conversion's start on the 2-core reference machine) is
left to the first direction that is not cached yet, which swapstream.engines.onnx.OnnxEngine exports into
the cache. Both use the same key (key_fields), so either finds what the other stored.
    crops (N, S, S, 3) uint8 RGB -> faces (N, S, S, 3) uint8 RGB, masks (N, S, S) float32 [0, 1]
"""

from __future__ import annotations

from pathlib import Path

from swapstream.core.errors import ConfigError
from swapstream.engines.backends.onnx import SPEC
from swapstream.engines.cache import EngineCache
from swapstream.engines.checkpoint import verify_checkpoint
from swapstream.engines.core import SwapCore
from swapstream.engines.device import device_kind
from swapstream.engines.onnx_key import ONNX_KEY
from swapstream.engines.onnx_runtime import (
    FILENAME,
    choose_providers,
    compute_threads,
    key_fields,
    open_session,
)


class CachedOnnxEngine(SwapCore):
    """The onnx engine on a CPU, torch-free for the directions in the engine cache. Same interface
    as the other engines (identities, size, swap, warmup, key_fields; built / paths say, per
    direction, whether it was built now and where its file is)."""

    name = SPEC.name
    precisions = SPEC.precisions
    numpy_io = True

    def __init__(self, checkpoint, device: str = "cpu", batch_size: int = 32, precision: str = "fp32",
                 providers: list[str] | None = None, threads: int = 0) -> None:
        if device_kind(device) != "cpu":
            raise ConfigError(f"{type(self).__name__} runs on a CPU only, not {device!r}; on a GPU "
                              f"the onnx engine is swapstream.engines.onnx.OnnxEngine")
        runs = self.precisions["cpu"]
        if precision not in runs:
            raise ConfigError(f"engine {self.name!r} cannot run {precision} on cpu (it runs "
                              f"{', '.join(runs)} there); pass --precision {runs[0]}")
        if batch_size < 1:
            raise ConfigError(f"batch size {batch_size} must be at least 1")
        meta = verify_checkpoint(checkpoint)
        self.checkpoint = checkpoint
        self.sha256 = meta["sha256"]
        self.identities = list(meta["identities"])
        self.size = int(meta["model"]["size"])
        self.batch_size, self.precision, self.device = batch_size, precision, "cpu"
        self.asked_providers = providers
        self.providers = choose_providers("cpu", providers)
        self.threads = threads
        self.cache = EngineCache("onnx", binding=ONNX_KEY)
        self.built: dict[str, bool] = {}
        self.paths: dict[str, Path] = {}
        self._forward = {}
        self._exporter = None

    def __repr__(self) -> str:
        return f"{self.name} engine ({self.precision}, {self.device})"

    def key_fields(self, identity: str) -> dict:
        return key_fields(self.sha256, identity, self.precision, self.batch_size, "cpu")

    def build(self, identity: str):
        path = self.cache.lookup(self.key_fields(identity), FILENAME, repair=False)
        if path is None:  # not cached (or not intact): torch exports it, under the cache's lock
            if self._exporter is None:
                from swapstream.engines.onnx import OnnxEngine

                self._exporter = OnnxEngine(self.checkpoint, device="cpu", batch_size=self.batch_size,
                                            precision=self.precision, providers=self.asked_providers,
                                            threads=self.threads)
            path = self._exporter.model_path(identity)
            self.built[identity] = self._exporter.built[identity]
        else:
            self.built[identity] = False
        self.paths[identity] = path
        return open_session(path, self.providers, [{} for _ in self.providers],
                            self.threads or compute_threads(), self.precision)
