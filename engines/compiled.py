"""torch.compile engine (TorchInductor): the direction compiled into fused kernels.

- CPU: weights frozen into the graph (`freezing`), so convolutions run on pre-packed oneDNN
  weights; fp32, or bf16 where the CPU has it natively (about twice fp32 with AVX-512 BF16).
- CUDA: fp32, fp16 or bf16 (a half copy of the weights); with batch_size 1 (live) the shapes are
  static and the call is a CUDA graph replay ("reduce-overhead"); otherwise a dynamic batch.
- Compiling happens in warmup()/the first call of a direction, never mid-stream for a new batch
  size: the batch dimension is dynamic, and a lone face is run as a batch of two (dynamo would
  compile batch 1 on its own: a second compile, 10-20 s on a CPU, in the middle of a video).
- The kernels are kept in Inductor's on-disk cache, under the swapstream cache folder unless
  TORCHINDUCTOR_CACHE_DIR says otherwise, so other processes on the machine (Ray actors,
  segments, the next run) skip code generation.

Needs a C++ compiler on CPU (Inductor builds its kernels with it) and triton on CUDA.
"""

from __future__ import annotations

import os
import threading

import torch

from swapstream.engines.backends.compile import SPEC
from swapstream.engines.base import Forward, SwapEngine
from swapstream.engines.cache import cache_root, own_folder


class CompileEngine(SwapEngine):
    name = SPEC.name
    precisions = SPEC.precisions

    def build(self, identity: str) -> Forward:
        if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:  # ours: pickles, so only the user's own
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(own_folder(own_folder(cache_root()) / "inductor"))
        import torch._dynamo.config as dynamo_config
        import torch._inductor.config as inductor_config

        # Dynamo keeps the compiled graphs of every Direction module under one code object
        # (Direction.forward) and, past `recompile_limit` of them, silently runs eager: a process
        # with many engines (a benchmark, the tests) would measure eager and call it compiled.
        # Room for many, and an error rather than a silent fallback.
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 256)
        dynamo_config.accumulated_recompile_limit = max(dynamo_config.accumulated_recompile_limit, 1024)

        module = self.direction(identity).to(self.dtype)
        cuda, static = self.device.type == "cuda", self.batch_size == 1
        if static:  # live: one face per call; CUDA graphs on a GPU
            compiled = torch.compile(module, mode="reduce-overhead" if cuda else None, dynamic=False)
        else:
            compiled = torch.compile(module, dynamic=True)
        # Freezing must be on in Inductor's global config when it compiles (on the first call):
        # given through torch.compile(options=...) it is not applied (measured: original64 batch 1
        # 6.8 faces/s with it there, 39.8 with it global; 8.4 without).
        inductor = inductor_config.patch(freezing=not cuda)
        strict = dynamo_config.patch(fail_on_recompile_limit_hit=True)
        dtype = self.dtype
        # CUDA graph trees keep their state per thread: live warms up in setup() on the main
        # thread and runs frames on the swap stage's thread, where the graph is recorded again.
        # So a thread's first call records it (a few extra runs) before its result is used.
        recorded = threading.local()

        def forward(x: torch.Tensor) -> torch.Tensor:
            x = x.to(dtype)
            with inductor, strict:
                if static:
                    if cuda and not getattr(recorded, "done", False):
                        for _ in range(3):
                            compiled(x)
                        recorded.done = True
                    y = compiled(x)
                    return y.clone() if cuda else y  # a CUDA graph's output is overwritten next call
                return compiled(torch.cat([x, x]))[:1] if len(x) == 1 else compiled(x)

        return forward

    def warmup(self, identity: str, batches: tuple[int, ...] = ()) -> None:
        """Compile now: the one shape of a static engine, or the dynamic batch."""
        super().warmup(identity, batches or ((1,) if self.batch_size == 1 else (2,)))
