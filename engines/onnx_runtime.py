"""ONNX Runtime without torch: choosing providers, the cache key of an exported direction, and
running an ONNX file. Shared by the exporting engine (swapstream.engines.onnx, needs torch) and the
torch-free one for cached directions (swapstream.engines.onnx_cached).
    session forward: (n, 3, S, S) float32 in [0, 1] -> (n, 4, S, S) RGB + mask of the engine's dtype
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from swapstream.core.errors import ConfigError

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
    """What an exported direction depends on (swapstream.engines.cache keys it by these)."""
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
    (swapstream.pipeline.runners.threads.limited and live set it), else OpenCV's (which limited sets too)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.get_num_threads()
    import cv2

    return max(1, cv2.getNumThreads())
