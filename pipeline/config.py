"""Configuration: dataclasses filled from a YAML file and CLI flags; unknown keys are errors.

A YAML file has one section per stage, named as the fields of ConvertConfig:

    detect: {min_face: 48, detect_every: 4}
    align: {smoothing: true, beta: 8.0}
    blend: {color: hist, sharpen: unsharp, sharpen_amount: 0.3}
    encode: {crf: 20, preset: medium}
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stages.align import AlignSettings
from stages.blend import BlendSettings
from stages.detect import DetectSettings
from stages.encode import EncodeSettings
from stages.errors import ConfigError

RUNNERS = ("ray", "local")
FUSE_MODES = ("auto", "on", "off")


@dataclass
class AlignOptions:
    """The parts of AlignSettings a user sets; size and coverage come from the model."""

    smoothing: bool = AlignSettings.smoothing
    min_cutoff: float = AlignSettings.min_cutoff
    beta: float = AlignSettings.beta
    scene_cut: float = AlignSettings.scene_cut
    max_residual: float = AlignSettings.max_residual


@dataclass
class EncodeOptions:
    """The encoder settings a user sets; paths come from the command line."""

    codec: str = EncodeSettings.codec
    crf: int = EncodeSettings.crf
    preset: str = EncodeSettings.preset


@dataclass
class ConvertConfig:
    """Everything `swapstream convert` needs besides input and output."""

    model: str = ""
    direction: str = "a2b"
    engine: str = "eager"
    device: str = "auto"
    runner: str = "ray"  # ray | local (the reference: every stage in one process)
    batch_size: int = 8
    address: str | None = None  # Ray cluster to join; None: RAY_ADDRESS or a local Ray
    detect_actors: int = 0  # 0: half the cluster's CPUs
    blend_actors: int = 0  # 0: a quarter of the cluster's CPUs
    fuse: str = "auto"  # align+swap+blend in one actor: auto (small CPU-only machines) | on | off
    max_in_flight: int = 0  # batches between decode and encode; 0: from the pool sizes
    verbose: bool = False
    segments: int | None = None  # crash-safe keyframe segments (pipeline.segments); 0: ~1/min; None: off
    detect: DetectSettings = field(default_factory=DetectSettings)
    align: AlignOptions = field(default_factory=AlignOptions)
    blend: BlendSettings = field(default_factory=BlendSettings)
    encode: EncodeOptions = field(default_factory=EncodeOptions)

    def __post_init__(self) -> None:
        if self.runner not in RUNNERS:
            raise ConfigError(f"runner {self.runner!r} is not available; choose one of {', '.join(RUNNERS)}")
        if self.fuse not in FUSE_MODES:
            raise ConfigError(f"fuse {self.fuse!r} is not one of {', '.join(FUSE_MODES)}")


def fill(cls: type, values: dict[str, Any], where: str = "config") -> Any:
    """Build dataclass `cls` from a dict, recursing into dataclass fields; unknown keys raise."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping of settings, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown setting {where}.{unknown[0]}; allowed: {', '.join(fields)}")
    kwargs = {}
    for name, value in values.items():
        default = fields[name].default_factory() if fields[name].default_factory is not dataclasses.MISSING \
            else fields[name].default
        if dataclasses.is_dataclass(default):
            kwargs[name] = fill(type(default), value, f"{where}.{name}")
        else:
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None


def load_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}; check the --config path")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML ({str(e).splitlines()[0]}); fix it") from None
    return data


def merge(base: dict, override: dict) -> dict:
    """Deep-merge two nested dicts (override wins)."""
    out = dict(base)
    for k, v in override.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def write_resolved(cfg: Any, path: str | Path, extra: dict | None = None) -> None:
    """Write the resolved configuration as JSON (next to an output)."""
    Path(path).write_text(json.dumps({**dataclasses.asdict(cfg), **(extra or {})}, indent=2, default=str))
