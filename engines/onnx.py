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

import torch

from swapstream.engines.backends.onnx import SPEC
from swapstream.engines.base import Forward, SwapEngine
from swapstream.engines.cache import CachedBuild, EngineCache
from swapstream.engines.onnx_key import ONNX_KEY
from swapstream.engines.onnx_runtime import FILENAME, choose_providers, key_fields, open_session


class OnnxEngine(CachedBuild, SwapEngine):
    name = SPEC.name
    precisions = SPEC.precisions  # fp32 everywhere, fp16 with a GPU provider
    numpy_io = True

    def __init__(self, checkpoint, device: str = "auto", batch_size: int = 32, precision: str = "auto",
                 providers: list[str] | None = None, threads: int = 0) -> None:
        super().__init__(checkpoint, device, batch_size, precision)
        self.providers = choose_providers(self.device.type, providers)
        self.threads = threads or torch.get_num_threads()  # live runs one thread per stage
        self.cache, self.filename = EngineCache("onnx", binding=ONNX_KEY), FILENAME
        self.built, self.paths = {}, {}

    def key_fields(self, identity: str) -> dict:
        return key_fields(self.sha256, identity, self.precision, self.batch_size,
                          "cuda" if self.device.type == "cuda" else "cpu")

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
        path = self.model_path(identity)
        options = [self.provider_options(p, path) for p in self.providers]
        return open_session(path, self.providers, options, self.threads, self.precision)
