"""ONNX Runtime engine: each direction exported once with torch.onnx (dynamo exporter, a dynamic
batch axis), kept in the engine cache, and run by ONNX Runtime with the best execution
provider available.

Providers, in order of preference where installed and matching --device: TensorRT, CUDA,
CoreML (macOS), DirectML (Windows), CPU; `providers=` (the CLI's --providers) chooses others.
fp32 everywhere; fp16 (weights and activations exported as half) with a GPU provider only.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import numpy as np
import torch

from engines.base import Forward, SwapEngine
from engines.cache import CachedBuild, EngineCache
from stages.errors import ConfigError

PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CoreMLExecutionProvider",
              "DmlExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def choose_providers(device: torch.device, asked: list[str] | None = None) -> list[str]:
    """The providers to run on: `asked` (checked against what is installed), else the preferred
    ones for the device; ConfigError naming the installed ones when one is missing."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    if asked:
        missing = [p for p in asked if p not in have]
        if missing:
            raise ConfigError(f"ONNX Runtime here has no {', '.join(missing)}; installed: "
                              f"{', '.join(have)} (onnxruntime-gpu has the CUDA and TensorRT ones)")
        return list(asked)
    if device.type == "cuda":
        chosen = [p for p in PREFERENCE if p in have and p in (*GPU_PROVIDERS, "CPUExecutionProvider")]
        if not any(p in GPU_PROVIDERS for p in chosen):
            raise ConfigError("--device cuda with the onnx engine needs onnxruntime-gpu (pip install "
                              "'swapstream[onnx-gpu]'); or use --device cpu")
        return chosen
    return [p for p in PREFERENCE if p in have and p not in GPU_PROVIDERS]


def _version(*dists: str) -> str:
    """The installed version of the first of these distributions that is installed."""
    from importlib.metadata import PackageNotFoundError, version

    for d in dists:
        try:
            return version(d)
        except PackageNotFoundError:
            continue
    return "none"


class OnnxEngine(CachedBuild, SwapEngine):
    name = "onnx"
    precisions = {"cpu": ("fp32",), "cuda": ("fp32", "fp16")}
    numpy_io = True

    def __init__(self, checkpoint, device: str = "auto", batch_size: int = 32, precision: str = "auto",
                 providers: list[str] | None = None, threads: int = 0) -> None:
        super().__init__(checkpoint, device, batch_size, precision)
        self.providers = choose_providers(self.device, providers)
        self.threads = threads or torch.get_num_threads()  # live runs one thread per stage
        self.cache, self.filename = EngineCache("onnx"), "direction.onnx"
        self.built, self.paths = {}, {}

    def key_fields(self, identity: str) -> dict:
        # versions from the installed metadata: importing onnxscript costs ~1 s, and a cached
        # engine never needs it
        return {"engine": "onnx", "weights": self.sha256, "identity": identity,
                "precision": self.precision, "batch": [1, max(self.batch_size, 32)],
                "torch": torch.__version__, "onnxscript": _version("onnxscript"),
                "onnxruntime": _version("onnxruntime", "onnxruntime-gpu"),
                "device": "cuda" if self.device.type == "cuda" else "cpu"}

    def export(self, identity: str, path) -> None:
        """Write the direction as an ONNX file: input "crops" (n, 3, S, S), output "faces"
        (n, 4, S, S), of the engine's dtype, n from 1 to the batch range's top."""
        module = self.direction(identity).cpu().to(self.dtype)
        s, top = self.size, max(self.batch_size, 32)
        x = torch.rand(2, 3, s, s).to(self.dtype)
        batch = torch.export.Dim("batch", min=1, max=top)
        quiet = logging.getLogger("torch.onnx")
        level, quiet.level = quiet.level, logging.ERROR
        try:  # the exporter prints its progress; keep the terminal for our own lines
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(module, (x,), str(path), dynamo=True, input_names=["crops"],
                                  output_names=["faces"], dynamic_shapes={"x": {0: batch}},
                                  external_data=False, verbose=False)
        finally:
            quiet.level = level

    def make(self, identity: str, path) -> None:
        self.export(identity, path)

    def provider_options(self, provider: str, path) -> dict:
        """The GPU's index for the CUDA and TensorRT providers, and for TensorRT its own engine
        cache beside the ONNX file with the batch range as its profile (built once, not per
        process or per new batch size)."""
        gpu = {"device_id": str(self.device.index or 0)} if self.device.type == "cuda" else {}
        if provider == "TensorrtExecutionProvider":
            s, top = self.size, max(self.batch_size, 32)
            return {**gpu, "trt_engine_cache_enable": "True", "trt_engine_cache_path": str(path.parent),
                    "trt_fp16_enable": str(self.precision == "fp16"),
                    "trt_profile_min_shapes": f"crops:1x3x{s}x{s}",
                    "trt_profile_opt_shapes": f"crops:8x3x{s}x{s}",
                    "trt_profile_max_shapes": f"crops:{top}x3x{s}x{s}"}
        return gpu if provider == "CUDAExecutionProvider" else {}

    def build(self, identity: str) -> Forward:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        path = self.model_path(identity)
        options = [self.provider_options(p, path) for p in self.providers]
        session = ort.InferenceSession(str(path), opts, providers=self.providers, provider_options=options)
        np_dtype = np.float16 if self.precision == "fp16" else np.float32

        def forward(x: np.ndarray) -> np.ndarray:
            (y,) = session.run(["faces"], {"crops": x.astype(np_dtype, copy=False)})
            return y

        return forward
