"""Engine registry: backends register by name; create_engine builds one from a checkpoint.

An engine has `swap(crops, to_identity) -> (faces, masks)`:
crops (N, S, S, 3) uint8 RGB -> faces (N, S, S, 3) uint8 RGB, masks (N, S, S) float32 in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from stages.errors import ConfigError

_ENGINES: dict[str, Callable] = {}


def register_engine(name: str) -> Callable:
    """Class decorator: `@register_engine("eager")`."""

    def wrap(cls: Callable) -> Callable:
        _ENGINES[name] = cls
        return cls

    return wrap


def available_engines() -> list[str]:
    _load_builtin()
    return sorted(_ENGINES)


def create_engine(name: str, checkpoint: str | Path, device: str = "auto", **options):
    """Build engine `name` for the checkpoint directory; lists the valid names on a wrong one."""
    _load_builtin()
    if name not in _ENGINES:
        raise ConfigError(f"unknown engine {name!r}; available engines: {', '.join(sorted(_ENGINES))}")
    return _ENGINES[name](checkpoint, device=device, **options)


def _load_builtin() -> None:
    # Imported here, not at module top, so that engines register without an import cycle.
    import engines.eager  # noqa: F401
