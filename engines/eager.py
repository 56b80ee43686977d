"""Eager PyTorch engine: the reference every other engine must agree with.

fp32 on CPU and CUDA; fp16 on CUDA through autocast; bf16 through autocast on CUDA and on CPUs
(native on CPUs with AVX-512 BF16 or AMX, see swapstream.engines.device.cpu_has_bf16).
"""

from __future__ import annotations

import torch

from swapstream.engines.backends.eager import SPEC
from swapstream.engines.base import Forward, SwapEngine


class EagerEngine(SwapEngine):
    name = SPEC.name
    precisions = SPEC.precisions

    def build(self, identity: str) -> Forward:
        module = self.direction(identity)
        if self.precision == "fp32":
            return module
        dev = self.device.type

        def forward(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast(dev, self.dtype):
                return module(x)

        return forward
