"""The engine registry: names mapped to "module:Class", imported only when asked for.

    create_engine(name, checkpoint, device, precision=..., batch_size=...) -> a SwapEngine
    engine_status(device) -> [(name, available, why not)]    (`swapstream engines`)
    pick_engine(device)   -> the fastest engine available for the device class

An engine whose optional packages are missing is listed, not imported: asking for it gives one
line naming the extra to install (ConfigError: exit 2). No engine module imports another, and
none imports this one, so there is no import circle. Nor does it import torch: on a machine
without a GPU, choosing and loading a cached ONNX engine never needs it (swapstream.engines.onnx_cached).
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING

from swapstream.core.errors import ConfigError
from swapstream.engines.device import device_kind

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class EngineSpec:
    """name; target "module:Class"; what it is; the Python packages it needs and the pip extra
    that installs them; the device classes it runs on."""

    name: str
    target: str
    summary: str
    modules: tuple[str, ...] = ()
    extra: str | None = None
    devices: tuple[str, ...] = ("cpu", "cuda")


ENGINES: dict[str, EngineSpec] = {}

# The fastest first, per device class, at the default precision (fp32 on CPU, fp16 on CUDA), as
# benchmarks/bench_engines.py measured (README, "Swap engines"). CPU: ONNX Runtime 2-3x eager at
# batch 1 and level at 32; torch.compile level to 2x but 10-20 s to compile. CUDA: unmeasured
# here (no GPU lent); TensorRT and CUDA graphs first by design.
AUTO_ORDER = {"cpu": ("onnx", "compile", "eager"), "cuda": ("tensorrt", "compile", "onnx", "eager")}


def register_engine(spec: EngineSpec) -> EngineSpec:
    """Add an engine (or replace one of the same name); it is imported only when used."""
    ENGINES[spec.name] = spec
    return spec


for _spec in (
    EngineSpec("eager", "swapstream.engines.eager:EagerEngine", "PyTorch eager, the reference"),
    EngineSpec("compile", "swapstream.engines.compiled:CompileEngine", "torch.compile (Inductor kernels)"),
    EngineSpec("onnx", "swapstream.engines.onnx:OnnxEngine", "ONNX Runtime (exported once, cached)",
               ("onnxruntime", "onnx", "onnxscript"), "onnx"),
    EngineSpec("tensorrt", "swapstream.engines.tensorrt:TensorRTEngine", "TensorRT via torch-tensorrt (cached)",
               ("torch_tensorrt", "tensorrt"), "tensorrt", ("cuda",)),
):
    register_engine(_spec)


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _cxx() -> str | None:
    for name in ("g++", "c++", "clang++", "cl"):
        if shutil.which(name):
            return name
    return None


def _kind(device: torch.device | str) -> str:
    return "cuda" if getattr(device, "type", device) == "cuda" else "cpu"


def why_unavailable(name: str, device: torch.device | str) -> str | None:
    """None if engine `name` can run on `device` (a torch.device, or its kind "cpu" / "cuda")
    here; otherwise why not and the fix."""
    spec = ENGINES[name]
    kind = _kind(device)
    missing = [m for m in spec.modules if not _has(m)]
    if missing:
        return (f"needs {', '.join(missing)}: pip install 'swapstream[{spec.extra}]'" if spec.extra
                else f"needs {', '.join(missing)}")
    if kind not in spec.devices:
        return f"runs on {' or '.join(spec.devices)} only, not {kind}"
    if name == "compile":
        if kind == "cpu" and _cxx() is None:
            return "needs a C++ compiler on CPU (g++ or clang++; Visual C++ on Windows)"
        if kind == "cuda" and not _has("triton"):
            return "needs triton on CUDA (pip install triton)"
    if name == "tensorrt":  # present but built for another torch: say so, and let auto skip it
        try:
            importlib.import_module("torch_tensorrt")
        except Exception as err:  # noqa: BLE001 - any import failure makes it unavailable
            import torch

            return (f"torch_tensorrt does not import here ({type(err).__name__}: {err}); install the "
                    f"torch-tensorrt that matches torch {torch.__version__}")
    if name == "onnx" and kind == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return "ONNX Runtime here has no CUDA provider: pip install 'swapstream[onnx-gpu]'"
    return None


def engine_status(device: str = "auto") -> list[tuple[str, bool, str]]:
    """(name, available on this device, why not or what it is) for every registered engine."""
    dev = device_kind(device)
    out = []
    for name, spec in ENGINES.items():
        why = why_unavailable(name, dev)
        out.append((name, why is None, why or spec.summary))
    return out


def available_engines(device: str = "auto") -> list[str]:
    """Names of the engines that can run on `device` here."""
    return [name for name, ok, _ in engine_status(device) if ok]


def runs_precision(name: str, precision: str, device: torch.device | str) -> bool:
    """Whether engine `name` (importable) runs `precision` on the device's class."""
    return precision in engine_precisions(name).get(_kind(device), ())


def engine_precisions(name: str) -> dict[str, tuple[str, ...]]:
    """The precisions engine `name` runs per device class. The onnx engine's are stated here too
    (swapstream.engines.onnx_cached), so that choosing it does not import its module, and with it torch."""
    if name == "onnx":
        from swapstream.engines.onnx_cached import PRECISIONS

        return PRECISIONS
    return engine_class(name).precisions


def pick_engine(device: str = "auto", precision: str = "auto") -> str:
    """The engine `auto` stands for: the first of AUTO_ORDER that is available for the device
    class and runs the precision there."""
    from swapstream.engines.device import resolve_precision

    dev = device_kind(device)
    prec = resolve_precision(precision, dev)
    for name in AUTO_ORDER[dev]:
        if name in ENGINES and why_unavailable(name, dev) is None and runs_precision(name, prec, dev):
            return name
    return "eager"


def engine_class(name: str) -> type:
    """Import and return engine `name`'s class; ConfigError naming the fix when it cannot be."""
    spec = check_installed(name)
    module, cls = spec.target.split(":")
    return getattr(importlib.import_module(module), cls)


def check_installed(name: str) -> EngineSpec:
    """Engine `name`'s spec; ConfigError naming the fix when it is unknown or its packages are
    missing."""
    if name not in ENGINES:
        raise ConfigError(f"unknown engine {name!r}; engines: auto, {', '.join(ENGINES)} "
                          f"(`swapstream engines` shows which run here)")
    spec = ENGINES[name]
    missing = [m for m in spec.modules if not _has(m)]
    if missing:
        raise ConfigError(f"engine {name!r} needs {' and '.join(missing)} (not installed): "
                          f"pip install 'swapstream[{spec.extra}]', or pick another with --engine")
    return spec


def resolve_engine(name: str, device: str = "auto", precision: str = "auto") -> tuple[str, str]:
    """(engine, precision) that will run for `--engine name --precision precision` on `device`:
    auto resolved, and checked to be installed, able to run here and to run that precision.
    ConfigError (exit 2) naming the fix otherwise."""
    from swapstream.engines.device import resolve_precision

    dev = device_kind(device)
    prec = resolve_precision(precision, dev)
    if name == "auto":
        name = pick_engine(device, prec)
    check_installed(name)  # unknown or not installed: the line naming the extra
    why = why_unavailable(name, dev)
    if why is not None:
        raise ConfigError(f"engine {name!r} cannot run here: {why}")
    if not runs_precision(name, prec, dev):
        runs = ", ".join(engine_precisions(name).get(dev, ()))
        raise ConfigError(f"engine {name!r} does not run {prec} on {dev} (it runs {runs}); "
                          f"choose another --precision or --engine")
    return name, prec


def create_engine(name: str, checkpoint, device: str = "auto", precision: str = "auto", **options):
    """Build engine `name` (or `auto`) for the checkpoint folder; options go to the engine
    (batch_size, and the engine's own, such as providers for onnx)."""
    name, precision = resolve_engine(name, device, precision)
    if name == "onnx" and device_kind(device) == "cpu":  # torch only to export a direction
        from swapstream.engines.onnx_cached import CachedOnnxEngine

        return CachedOnnxEngine(checkpoint, precision=precision, **options)
    return engine_class(name)(checkpoint, device=device, precision=precision, **options)
