"""The onnx engine's half that needs no torch: choosing providers, the cache key of an exported
direction, running an ONNX file with ONNX Runtime, and `CachedOnnxEngine`, which the registry
hands out for `--engine onnx` (or auto) on a CPU.

CachedOnnxEngine reads the checkpoint's model.json and runs the directions it finds in the engine
cache; importing torch (~1.1 s of every conversion's start on the 2-core reference machine) is
left to the first direction that is not cached yet, which engines.onnx.OnnxEngine exports into
the cache. Both use the same key (key_fields), so either finds what the other stored.
    crops (N, S, S, 3) uint8 RGB -> faces (N, S, S, 3) uint8 RGB, masks (N, S, S) float32 [0, 1]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engines.cache import EngineCache
from engines.checkpoint import verify_checkpoint
from engines.core import SwapCore
from stages.errors import ConfigError

PRECISIONS = {"cpu": ("fp32",), "cuda": ("fp32", "fp16")}
PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CoreMLExecutionProvider",
              "DmlExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
FILENAME = "direction.onnx"


def package_version(*dists: str) -> str:
    """The installed version of the first of these distributions that is installed (from its
    metadata: importing onnxscript costs ~1 s, and a cached engine never needs it)."""
    from importlib.metadata import PackageNotFoundError, version

    for d in dists:
        try:
            return version(d)
        except PackageNotFoundError:
            continue
    return "none"


def choose_providers(kind: str, asked: list[str] | None = None) -> list[str]:
    """The providers to run on a device of `kind` ("cpu" / "cuda"): `asked` (checked against what
    is installed), else the preferred ones; ConfigError naming the installed ones when one is
    missing."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    if asked:
        missing = [p for p in asked if p not in have]
        if missing:
            raise ConfigError(f"ONNX Runtime here has no {', '.join(missing)}; installed: "
                              f"{', '.join(have)} (onnxruntime-gpu has the CUDA and TensorRT ones)")
        return list(asked)
    if kind == "cuda":
        chosen = [p for p in PREFERENCE if p in have and p in (*GPU_PROVIDERS, "CPUExecutionProvider")]
        if not any(p in GPU_PROVIDERS for p in chosen):
            raise ConfigError("--device cuda with the onnx engine needs onnxruntime-gpu (pip install "
                              "'swapstream[onnx-gpu]'); or use --device cpu")
        return chosen
    return [p for p in PREFERENCE if p in have and p not in GPU_PROVIDERS]


def key_fields(weights_sha256: str, identity: str, precision: str, batch_size: int, kind: str) -> dict:
    """What an exported direction depends on (engines.cache keys it by these)."""
    return {"engine": "onnx", "weights": weights_sha256, "identity": identity, "precision": precision,
            "batch": [1, max(batch_size, 32)], "torch": package_version("torch"),
            "onnxscript": package_version("onnxscript"),
            "onnxruntime": package_version("onnxruntime", "onnxruntime-gpu"), "device": kind}


def open_session(path: Path, providers: list[str], provider_options: list[dict], threads: int,
                 precision: str):
    """An ONNX Runtime session on `path` (threads: its intra-op pool) as a numpy forward:
    (n, 3, S, S) float32 in [0, 1] -> (n, 4, S, S) of the engine's dtype."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=providers, provider_options=provider_options)
    np_dtype = np.float16 if precision == "fp16" else np.float32

    def forward(x: np.ndarray) -> np.ndarray:
        (y,) = session.run(["faces"], {"crops": x.astype(np_dtype, copy=False)})
        return y

    return forward


def compute_threads() -> int:
    """Threads a compute library may use in this process: torch's count where torch is loaded
    (pipeline.threads.limited and live set it), else OpenCV's (which limited sets too)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.get_num_threads()
    import cv2

    return max(1, cv2.getNumThreads())


class CachedOnnxEngine(SwapCore):
    """The onnx engine on a CPU, torch-free for the directions in the engine cache. Same interface
    as the other engines (identities, size, swap, warmup, key_fields; built / paths say, per
    direction, whether it was built now and where its file is)."""

    name = "onnx"
    precisions = PRECISIONS
    numpy_io = True

    def __init__(self, checkpoint, batch_size: int = 32, precision: str = "fp32",
                 providers: list[str] | None = None, threads: int = 0) -> None:
        if precision not in PRECISIONS["cpu"]:
            raise ConfigError(f"engine 'onnx' cannot run {precision} on cpu (it runs "
                              f"{', '.join(PRECISIONS['cpu'])} there); pass --precision fp32")
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
        self.cache = EngineCache("onnx")
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
                from engines.onnx import OnnxEngine

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
