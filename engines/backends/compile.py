"""compile: torch.compile's Inductor kernels (swapstream.engines.compiled). On a CPU Inductor
builds its kernels with a C++ compiler; on CUDA it writes them in triton."""

import shutil

from swapstream.engines.backends import TORCH_PRECISIONS, EngineSpec, has_module

COMPILERS = ("g++", "c++", "clang++", "cl")


def probe(kind: str) -> str | None:
    """A C++ compiler on a CPU, triton on CUDA."""
    if kind == "cpu" and not any(shutil.which(c) for c in COMPILERS):
        return "needs a C++ compiler on CPU (g++ or clang++; Visual C++ on Windows)"
    if kind == "cuda" and not has_module("triton"):
        return "needs triton on CUDA (pip install triton)"
    return None


SPEC = EngineSpec(
    "compile", "swapstream.engines.compiled:CompileEngine", "torch.compile (Inductor kernels)",
    precisions=TORCH_PRECISIONS, probe=probe, rank={"cpu": 20, "cuda": 20}, builds=True, single_shape=True,
)
