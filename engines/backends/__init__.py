"""The engines' declarations: one light module per engine (eager.py, compile.py, onnx.py,
tensorrt.py), each defining `SPEC = EngineSpec(...)`, which swapstream.engines.registry finds by
scanning this package. What an engine runs on, at which precisions, whether it can run here (its
probe) and which class builds it are stated there, so the registry needs no knowledge of any engine.

Light means: a module here imports no torch, no runtime and no engine implementation at import
time; a probe imports what it must, inside the function (on a CPU machine, choosing an engine
loads none of them). Modules whose names start with "_" are not engines.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

# What torch itself runs (autocast or a cast of the weights): fp32 and bf16 on a CPU (bf16 fast only
# with AVX-512 BF16 or AMX), fp32, fp16 and bf16 on CUDA. The engines that run torch modules share it.
TORCH_PRECISIONS: dict[str, tuple[str, ...]] = {"cpu": ("fp32", "bf16"), "cuda": ("fp32", "fp16", "bf16")}

Probe = Callable[[str], "str | None"]


@dataclass(frozen=True)
class EngineSpec:
    """One engine, as declared: its `name` (--engine NAME); `target`, the "module:Class" that builds
    it; `summary`, what it is in a few words; `modules`, the Python packages it needs, and `extra`,
    the pip extra that installs them; `devices`, the device classes ("cpu", "cuda") it runs on;
    `precisions`, per device class the precisions it runs, best first (default fp32 on each);
    `probe(kind)`, None when it can run on device class `kind` here, else a one-line reason with
    the fix (called once the modules are there and the device class is one of `devices`);
    `targets`, a "module:Class" per device class where that class differs from `target`; `rank`,
    per device class its place in --engine auto's preference (lower first; not picked by auto on
    a class without one); `reference`, the engine the others are checked against (listed first,
    and auto's last resort); `builds`, whether it builds something worth building ahead of time
    (`swapstream compile`); `single_shape`, whether live's one-face calls need a build of their own
    (static shapes); `options`, the engine's own options it takes (e.g. "providers")."""

    name: str
    target: str
    summary: str
    modules: tuple[str, ...] = ()
    extra: str | None = None
    devices: tuple[str, ...] = ("cpu", "cuda")
    precisions: Mapping[str, tuple[str, ...]] | None = None
    probe: Probe | None = None
    targets: Mapping[str, str] = field(default_factory=dict)
    rank: Mapping[str, int] = field(default_factory=dict)
    reference: bool = False
    builds: bool = False
    single_shape: bool = False
    options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.precisions is None:
            object.__setattr__(self, "precisions", {d: ("fp32",) for d in self.devices})

    def target_for(self, kind: str) -> str:
        """The "module:Class" that builds this engine on device class `kind`."""
        return self.targets.get(kind, self.target)


def has_module(module: str) -> bool:
    """Whether `module` can be imported here, found without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
