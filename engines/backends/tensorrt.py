"""tensorrt: each direction compiled by torch-tensorrt's dynamo path, cached
(swapstream.engines.tensorrt). A CUDA GPU only."""

from swapstream.engines.backends import EngineSpec


def probe(kind: str) -> str | None:
    """torch_tensorrt imports (installed but built for another torch, it does not: say so, and let
    auto skip it)."""
    try:
        import torch_tensorrt  # noqa: F401
    except Exception as err:  # noqa: BLE001 - any import failure makes it unavailable
        import torch

        return (f"torch_tensorrt does not import here ({type(err).__name__}: {err}); install the "
                f"torch-tensorrt that matches torch {torch.__version__}")
    return None


SPEC = EngineSpec(
    "tensorrt", "swapstream.engines.tensorrt:TensorRTEngine", "TensorRT via torch-tensorrt (cached)",
    modules=("torch_tensorrt", "tensorrt"), extra="tensorrt", devices=("cuda",),
    precisions={"cuda": ("fp16", "fp32")}, probe=probe, rank={"cuda": 10}, builds=True,
)
