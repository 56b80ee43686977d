"""eager: PyTorch as written, the reference every other engine must agree with
(swapstream.engines.eager)."""

from swapstream.engines.backends import TORCH_PRECISIONS, EngineSpec


def probe(kind: str) -> str | None:
    """Runs wherever torch runs: nothing to check beyond the device class."""
    return None


SPEC = EngineSpec(
    "eager", "swapstream.engines.eager:EagerEngine", "PyTorch eager, the reference",
    precisions=TORCH_PRECISIONS, probe=probe, rank={"cpu": 90, "cuda": 90}, reference=True,
)
