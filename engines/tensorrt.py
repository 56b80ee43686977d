"""TensorRT engine: each direction compiled by torch-tensorrt's dynamo path from the checkpoint,
for a dynamic batch of 1..batch_size (optimised for 8), kept in the engine cache as a saved
exported program, and never rebuilt while a valid one is there.

fp16 comes from a half model with half inputs (on the dynamo path torch-tensorrt 2.13 ignores
`enabled_precisions`); fp32 from the model as it is. A CUDA GPU and torch-tensorrt (which brings
TensorRT) are needed: `pip install 'swapstream[tensorrt]'`.

The cache key holds the GPU's name and compute capability and the torch, torch-tensorrt and
TensorRT versions: an engine built for another GPU or another TensorRT is rebuilt, not loaded.
The key is also recorded inside each saved program (a member of its zip, engines.export_key) and
checked on every lookup: a program copied under another key, its entry.json rewritten, is rebuilt.
"""

from __future__ import annotations

import torch

from swapstream.core.errors import ConfigError
from swapstream.engines.backends.tensorrt import SPEC
from swapstream.engines.base import Forward, SwapEngine
from swapstream.engines.cache import CachedBuild, EngineCache
from swapstream.engines.device import device_identity
from swapstream.engines.export_key import EXPORT_KEY

OPT_BATCH = 8
TOP_BATCH = 32  # built for 1..max(batch_size, 32): live (1) and convert (8-32) share one engine


class TensorRTEngine(CachedBuild, SwapEngine):
    name = SPEC.name
    precisions = SPEC.precisions  # CUDA only

    def __init__(self, checkpoint, device: str = "auto", batch_size: int = 32,
                 precision: str = "auto") -> None:
        super().__init__(checkpoint, device, batch_size, precision)
        if self.device.type != "cuda":  # (precisions already refuse the CPU; this says why)
            raise ConfigError("the tensorrt engine runs on a CUDA GPU only; use --engine onnx or "
                              "compile on a CPU")
        self.cache, self.filename = EngineCache("tensorrt", binding=EXPORT_KEY), "direction.ep"
        self.built, self.paths = {}, {}

    def key_fields(self, identity: str) -> dict:
        import tensorrt
        import torch_tensorrt

        return {"engine": "tensorrt", "weights": self.sha256, "identity": identity,
                "precision": self.precision, "batch": [1, OPT_BATCH, max(self.batch_size, TOP_BATCH)],
                "torch": torch.__version__, "torch_tensorrt": torch_tensorrt.__version__,
                "tensorrt": tensorrt.__version__, **device_identity(self.device)}

    def compile(self, identity: str, path) -> None:
        """Build the TensorRT program of a direction and save it (torch_tensorrt.save)."""
        import torch_tensorrt

        module = self.direction(identity).to(self.dtype)
        s, top = self.size, max(self.batch_size, TOP_BATCH)
        spec = torch_tensorrt.Input(min_shape=(1, 3, s, s), opt_shape=(OPT_BATCH, 3, s, s),
                                    max_shape=(top, 3, s, s), dtype=self.dtype)
        trt = torch_tensorrt.compile(module, ir="dynamo", inputs=[spec], min_block_size=1)
        # the Input spec, not an example tensor: saving re-exports the program, and only from
        # Input objects does it keep the batch dimension dynamic (a tensor fixes it at its size)
        torch_tensorrt.save(trt, str(path), output_format="exported_program", arg_inputs=[spec])

    def make(self, identity: str, path) -> None:
        self.compile(identity, path)

    def build(self, identity: str) -> Forward:
        import torch_tensorrt  # noqa: F401 - registers the TensorRT runtime ops the program calls

        program = torch.export.load(str(self.model_path(identity))).module()
        dtype = self.dtype

        def forward(x: torch.Tensor) -> torch.Tensor:
            return program(x.to(dtype))

        return forward
