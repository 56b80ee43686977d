"""onnx: each direction exported once with torch.onnx and run by ONNX Runtime
(swapstream.engines.onnx). On a CPU it is built by swapstream.engines.onnx_cached, which runs the
cached exports without importing torch."""

from swapstream.engines.backends import EngineSpec


def probe(kind: str) -> str | None:
    """On CUDA, an ONNX Runtime with the CUDA provider (onnxruntime-gpu)."""
    if kind == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return "ONNX Runtime here has no CUDA provider: pip install 'swapstream[onnx-gpu]'"
    return None


SPEC = EngineSpec(
    "onnx", "swapstream.engines.onnx:OnnxEngine", "ONNX Runtime (exported once, cached)",
    modules=("onnxruntime", "onnx", "onnxscript"), extra="onnx",
    precisions={"cpu": ("fp32",), "cuda": ("fp32", "fp16")}, probe=probe,
    targets={"cpu": "swapstream.engines.onnx_cached:CachedOnnxEngine"}, rank={"cpu": 10, "cuda": 30},
    builds=True, options=("providers",),
)
