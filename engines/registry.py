"""The engine registry: the engines declared in swapstream.engines.backends, by name, their classes
imported only when one is built.

    create_engine(name, checkpoint, device, precision=..., batch_size=...) -> a SwapEngine
    engine_status(device) -> [(name, available, why not)]    (`swapstream engines`)
    pick_engine(device)   -> the fastest engine available for the device class

How to add an engine: add engines/backends/NAME.py defining `SPEC = EngineSpec(...)` (name, the
"module:Class" that builds it and optionally another per device class, summary, the Python
modules it needs and the pip extra that installs them, devices, precisions per device class, a
probe saying why it cannot run on a device class here, and its rank per device class for
--engine auto), plus its implementation module (which may import torch at the top: it is loaded
only when the engine is built). No existing file changes: the registry finds the new module by
scanning that package, and everything it knows about an engine comes from its SPEC. Engines from
elsewhere (plug-ins, tests) are added with register_engine(spec).

An engine whose optional packages are missing is listed, not imported: asking for it gives one
line naming the extra to install (ConfigError: exit 2). Neither this module nor the declarations
import torch: on a machine without a GPU, choosing and loading a cached ONNX engine never needs
it (swapstream.engines.onnx_cached).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

from swapstream.core.errors import ConfigError
from swapstream.engines import backends
from swapstream.engines.backends import EngineSpec, has_module
from swapstream.engines.device import device_kind

if TYPE_CHECKING:
    import torch

__all__ = ["ENGINES", "EngineSpec", "auto_order", "available_engines", "check_installed", "create_engine",
           "discover", "engine_class", "engine_precisions", "engine_status", "pick_engine",
           "register_engine", "resolve_engine", "runs_precision", "why_unavailable"]

ENGINES: dict[str, EngineSpec] = {}


def register_engine(spec: EngineSpec) -> EngineSpec:
    """Add an engine (or replace one of the same name); its class is imported only when used."""
    ENGINES[spec.name] = spec
    return spec


def discover(package: str = backends.__name__) -> list[EngineSpec]:
    """The SPEC of every module of `package` (a package of light declaration modules), in the
    order of the modules' names; modules named "_..." are skipped."""
    pkg = importlib.import_module(package)
    specs = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        spec = getattr(module, "SPEC", None)
        if not isinstance(spec, EngineSpec):
            raise TypeError(f"{module.__name__} declares no engine: it needs SPEC = EngineSpec(...)")
        specs.append(spec)
    return specs


# the reference engine listed first, then the others in the order of their modules' names
for _spec in sorted(discover(), key=lambda s: not s.reference):
    register_engine(_spec)


def _kind(device: torch.device | str) -> str:
    return "cuda" if getattr(device, "type", device) == "cuda" else "cpu"


def _missing(spec: EngineSpec) -> list[str]:
    return [m for m in spec.modules if not has_module(m)]


def why_unavailable(name: str, device: torch.device | str) -> str | None:
    """None if engine `name` can run on `device` (a torch.device, or its kind "cpu" / "cuda")
    here; otherwise why not and the fix: its packages missing, a device class it does not
    declare, or what its probe says."""
    spec = ENGINES[name]
    kind = _kind(device)
    missing = _missing(spec)
    if missing:
        return (f"needs {', '.join(missing)}: pip install 'swapstream[{spec.extra}]'" if spec.extra
                else f"needs {', '.join(missing)}")
    if kind not in spec.devices:
        return f"runs on {' or '.join(spec.devices)} only, not {kind}"
    if spec.probe is None:
        return None
    try:
        return spec.probe(kind)
    except Exception as err:  # noqa: BLE001 - a probe that fails says the engine cannot run
        return f"its check failed here ({type(err).__name__}: {err})"


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


def engine_precisions(name: str) -> dict[str, tuple[str, ...]]:
    """The precisions engine `name` runs per device class, as its SPEC declares them (nothing is
    imported)."""
    return dict(ENGINES[name].precisions)


def runs_precision(name: str, precision: str, device: torch.device | str) -> bool:
    """Whether engine `name` runs `precision` on the device's class."""
    return precision in engine_precisions(name).get(_kind(device), ())


def auto_order(device: torch.device | str) -> list[str]:
    """The engines --engine auto tries on the device's class, preferred first (by their rank
    there; engines without a rank there are not tried)."""
    kind = _kind(device)
    ranked = [(spec.rank[kind], i, name) for i, (name, spec) in enumerate(ENGINES.items())
              if kind in spec.rank]
    return [name for _, _, name in sorted(ranked)]


def pick_engine(device: str = "auto", precision: str = "auto") -> str:
    """The engine `auto` stands for: the first of auto_order that is available for the device
    class and runs the precision there; else the reference engine (whose limits resolve_engine
    then states)."""
    from swapstream.engines.device import resolve_precision

    dev = device_kind(device)
    prec = resolve_precision(precision, dev)
    for name in auto_order(dev):
        if why_unavailable(name, dev) is None and runs_precision(name, prec, dev):
            return name
    reference = next((name for name, spec in ENGINES.items() if spec.reference), None)
    if reference is None:
        raise ConfigError(f"no engine runs {prec} on {dev} here (`swapstream engines` says why)")
    return reference


def engine_class(name: str, device: torch.device | str | None = None) -> type:
    """Import and return the class that builds engine `name` (on the device's class where its
    SPEC names another there); ConfigError naming the fix when it cannot be."""
    spec = check_installed(name)
    target = spec.target if device is None else spec.target_for(_kind(device))
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def check_installed(name: str) -> EngineSpec:
    """Engine `name`'s spec; ConfigError naming the fix when it is unknown or its packages are
    missing."""
    if name not in ENGINES:
        raise ConfigError(f"unknown engine {name!r}; engines: auto, {', '.join(ENGINES)} "
                          f"(`swapstream engines` shows which run here)")
    spec = ENGINES[name]
    missing = _missing(spec)
    if missing:
        how = f": pip install 'swapstream[{spec.extra}]'" if spec.extra else ""
        raise ConfigError(f"engine {name!r} needs {' and '.join(missing)} (not installed){how}, or pick "
                          f"another with --engine")
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
    """Build engine `name` (or `auto`) for the checkpoint folder with the class its SPEC names for
    the device's class; options go to the engine (batch_size, and the engine's own, such as
    providers for onnx)."""
    name, precision = resolve_engine(name, device, precision)
    cls = engine_class(name, device_kind(device))
    return cls(checkpoint, device=device, precision=precision, **options)
