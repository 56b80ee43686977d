"""Configuration: dataclasses filled from a YAML file and CLI flags; unknown keys are errors.

A YAML file has one section per stage, named as the fields of ConvertConfig, and the `swap`
section convert and live share:

    swap: {model: models/ab, direction: a2b, engine: auto, precision: auto, device: auto}
    detect: {min_face: 48, detect_every: 4}
    align: {smoothing: true, beta: 8.0}
    blend: {color: hist, sharpen: unsharp, sharpen_amount: 0.3}
    encode: {crf: 20, preset: medium}       # codec: libx264 (default) | h264_nvenc | hevc_nvenc
    decode: {hwaccel: none}                 # cuda: decode on an NVIDIA GPU
    identity: {only: [ref.jpg], threshold: 0.41, vote: 7}   # swap only this person
    map: {people/alice: models/alice_to_carol, people/bob.jpg: models/bob_to_dave}

`map:` (REF: MODEL, a person's photo, folder of photos or faceset: the model that swaps them,
both relative to the file) swaps several people in one pass, each with their own model; faces
of anyone else are left as they are (swapstream.pipeline.people). It takes the place of
swap.model and identity.only.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from swapstream.core.errors import ConfigError
from swapstream.pipeline.runners.backpressure import POLICIES
from swapstream.pipeline.runners.ray import FUSE_MODES
from swapstream.stages.face.align import AlignSettings
from swapstream.stages.face.blend import BlendSettings
from swapstream.stages.face.detect import DetectSettings
from swapstream.stages.face.identify import IdentitySettings
from swapstream.stages.face.swap import SwapSettings
from swapstream.stages.sinks.file import EncodeSettings
from swapstream.stages.sources.file import DecodeSettings

RUNNERS = ("auto", "ray", "local")


def user_part(cls: type, name: str, keep: tuple[str, ...], doc: str, defaults: dict | None = None) -> type:
    """A settings section for users: dataclass `name` with the fields `keep` of the stage settings
    class `cls` (same types and defaults, `defaults` overriding), so no field is written twice. The
    rest of `cls` (paths, sizes from the model) is filled in by whoever builds the stage."""
    spec = []
    for f in dataclasses.fields(cls):
        if f.name not in keep:
            continue
        if defaults and f.name in defaults:
            default = dataclasses.field(default=defaults[f.name])
        elif f.default is not dataclasses.MISSING:
            default = dataclasses.field(default=f.default)
        else:
            default = dataclasses.field(default_factory=f.default_factory)
        spec.append((f.name, f.type, default))
    return dataclasses.make_dataclass(name, spec, namespace={"__doc__": doc, "__module__": __name__})


SwapSection = user_part(
    SwapSettings, "SwapSection", ("model", "direction", "engine", "device", "precision", "providers"),
    "The `swap:` section convert and live share: model (checkpoint folder), direction (a2b | b2a), "
    "engine (auto: the fastest here, swapstream.engines.registry), device (auto | cpu | cuda[:N]), "
    "precision (auto: fp16 on CUDA, fp32 on CPU), providers (onnx engine: ONNX Runtime providers, "
    "a list or comma-separated; empty: the best available).", defaults={"model": ""})
AlignOptions = user_part(
    AlignSettings, "AlignOptions", ("smoothing", "min_cutoff", "beta", "scene_cut", "max_residual"),
    "The parts of AlignSettings a user sets; size and coverage come from the model.")
DecodeOptions = user_part(
    DecodeSettings, "DecodeOptions", ("hwaccel",),
    "hwaccel: decode on a device (cuda, vaapi, qsv, videotoolbox, ...) or none (the CPU).")
EncodeOptions = user_part(
    EncodeSettings, "EncodeOptions", ("codec", "crf", "preset"),
    "The encoder settings a user sets; paths come from the command line.")
SWAP_KEYS = tuple(f.name for f in dataclasses.fields(SwapSection))


@dataclass
class SharedSections:
    """The sections convert and live share: the swap, and the face stages' settings (detect is
    each one's own: live's defaults differ). map: person (REF: photos, a folder, a faceset) ->
    the model that swaps them (--map REF=MODEL); empty: swap.model swaps every face (or the
    identity.only person's)."""

    swap: SwapSection = field(default_factory=SwapSection)
    align: AlignOptions = field(default_factory=AlignOptions)
    blend: BlendSettings = field(default_factory=BlendSettings)
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    map: dict[str, str] = field(default_factory=dict)


@dataclass
class ConvertConfig(SharedSections):
    """Everything `swapstream convert` needs besides input and output."""

    runner: str = "auto"  # auto (pipeline.runners.choice) | ray | local (the reference: all in one process)
    batch_size: int = 16  # frames a batch; convert's face search runs at each batch's last frame
    address: str | None = None  # Ray cluster to join; None: RAY_ADDRESS or a local Ray
    detect_actors: int = 0  # 0: half the cluster's CPUs
    blend_actors: int = 0  # 0: a quarter of the cluster's CPUs
    fuse: str = "auto"  # align+swap+blend in one actor: auto (small CPU-only machines) | on | off
    max_in_flight: int = 0  # batches between decode and encode; 0: from the pool sizes
    verbose: bool = False
    segments: int | None = None  # crash-safe keyframe segments (pipeline.segments); 0: ~1/min; None: off
    decode: DecodeOptions = field(default_factory=DecodeOptions)
    detect: DetectSettings = field(default_factory=DetectSettings)
    encode: EncodeOptions = field(default_factory=EncodeOptions)

    def __post_init__(self) -> None:
        if self.runner not in RUNNERS:
            raise ConfigError(f"runner {self.runner!r} is not available; choose one of {', '.join(RUNNERS)}")
        if self.fuse not in FUSE_MODES:
            raise ConfigError(f"fuse {self.fuse!r} is not one of {', '.join(FUSE_MODES)}")


LIVE_SEARCH_FRAMES = 3  # live default: a full search spreads over 3 frames, then the next starts
LIVE_MIN_FACE_SHARE = 1 / 8  # live default: faces from 1/8 of the frame height (90 px in 720p)


def live_detect_defaults() -> DetectSettings:
    """Live spreads the full face search over frames, so no frame waits for all of it, and starts
    a search every LIVE_SEARCH_FRAMES frames (the next at once where one takes that long): a face
    that comes into view waits ~3 frames (100 ms at 30 fps). Where a search is one detector call
    (a 640x480 frame) it runs every third frame, not every frame: 5.3 of the 10.3 ms the stage
    took a frame here. Live cannot look back over frames it has sent. The detector runs on a
    thread of its own (background): a frame that starts a search does not wait for it, and the
    faces it finds are placed in the first frame after it ends (one frame later, ~33 ms)."""
    return DetectSettings(detect_every=LIVE_SEARCH_FRAMES, search_frames=LIVE_SEARCH_FRAMES, look_back=False,
                          min_face_share=LIVE_MIN_FACE_SHARE, background=True)


@dataclass
class LiveConfig(SharedSections):
    """Everything `swapstream live` needs. outputs: output name -> its value, any number of the
    outputs in pipeline.outputs (window: true, virtual_camera: DEVICE or "", stream: URL,
    serve: [HOST:]PORT, record: FILE); none given: a window where there is a display, else serve."""

    camera: str = "0"
    size: str = ""  # WxH asked of the camera (and frames scaled to it); "": the camera's default
    fps: float = 0.0  # asked of the camera; 0: its default
    loop: bool = False  # a file source starts over at its end
    outputs: dict[str, Any] = field(default_factory=dict)
    codec: str = "libx264"  # video encoder of --stream and --record (h264_nvenc on an NVIDIA GPU)
    audio: str | None = None  # audio device; None: the source's own audio
    delay_ms: float = 0.0  # fixed output delay: frames released at capture time + delay
    duration: float | None = None  # seconds; None: until the input ends or you quit
    policy: str = "newest"  # back-pressure: newest (drop stale frames) | block (keep every frame)
    # frames in the chain at once (1-4); 0: auto, live_in_flight(): 1 with the browser's camera, else 2
    in_flight: int = 0
    stats: str | None = None  # write the statistics JSON here at the end
    tls_cert: str | None = None  # the web page's https certificate (PEM), with tls_key
    tls_key: str | None = None
    detect: DetectSettings = field(default_factory=live_detect_defaults)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ConfigError(f"policy {self.policy!r} is not one of {', '.join(POLICIES)}")
        if self.delay_ms < 0 or self.delay_ms > 10_000:
            raise ConfigError(f"--delay {self.delay_ms} ms is outside 0-10000")
        if self.duration is not None and self.duration <= 0:
            raise ConfigError(f"--duration {self.duration} must be more than 0 seconds")
        if not 0 <= self.in_flight <= 4:
            raise ConfigError(f"--in-flight {self.in_flight} is outside 1-4 (0: auto)")


def live_in_flight(cfg: LiveConfig) -> int:
    """Frames in the chain at once: cfg.in_flight, or when it is 0 (auto) 1 with the browser's
    camera and 2 otherwise. Two frames keep both cores on the stages (one in detect while the one
    before it is swapped and blended), which a local camera at 1280x720 needs on a 2-core CPU
    (30.0 fps, p95 52 ms, against 29.0 fps, p95 66 ms with one). With the browser's camera this
    process also decodes the camera's and encodes the returned WebRTC video, so the cores are
    full either way: the second frame bought no frames back (26.6 vs 26.7 fps with the page's
    Chromium on the same 2 cores) and added its wait to each (round trip p95 133-183 vs 117 ms)."""
    if cfg.in_flight:
        return cfg.in_flight
    from swapstream.stages.sources.browser import BROWSER

    return 1 if cfg.camera == BROWSER else 2


def live_values(values: dict) -> dict:
    """A settings file for live: a convert settings file works as it is (its swap, detect, align,
    blend and identity sections apply; what only convert knows, such as encode or runner, is left
    out)."""
    return _for(LiveConfig, ConvertConfig, values)


def convert_values(values: dict) -> dict:
    """A settings file for convert: what only live knows (outputs, camera, ...) is left out, so one
    file can serve both."""
    return _for(ConvertConfig, LiveConfig, values)


def _for(own: type, other: type, values: dict) -> dict:
    """`values` (a settings file's, from load_yaml) without the keys that only `other` has."""
    if not isinstance(values, dict):
        raise ConfigError(f"a settings file must be a mapping of sections, got {type(values).__name__}")
    only_other = {f.name for f in dataclasses.fields(other)} - {f.name for f in dataclasses.fields(own)}
    return {k: v for k, v in values.items() if k not in only_other}


def swap_section(values: dict) -> dict:
    """A settings file's values with the swap keys written at the top level (model: ..., engine:
    ..., as files written before the `swap:` section have them) moved into that section."""
    if not isinstance(values, dict):
        return values
    flat = {k: values[k] for k in SWAP_KEYS if k in values}
    if not flat:
        return values
    rest = {k: v for k, v in values.items() if k not in flat}
    swap = values.get("swap") if isinstance(values.get("swap"), dict) else {}
    return {**rest, "swap": {**flat, **swap}}


def fill(cls: type, values: dict[str, Any], where: str = "config", base: Any = None) -> Any:
    """Build dataclass `cls` from a dict, recursing into dataclass fields; unknown keys raise.
    Unset fields keep `base`'s values (or the field defaults; a nested section starts from its
    field's default, e.g. live's detect settings)."""
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
            kwargs[name] = fill(type(default), value, f"{where}.{name}", base=default)
        else:
            kwargs[name] = value
    try:
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
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
    return swap_section(data)


def merge(base: dict, override: dict) -> dict:
    """Deep-merge two nested dicts (override wins)."""
    out = dict(base)
    for k, v in override.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def write_resolved(cfg: Any, path: str | Path, extra: dict | None = None) -> None:
    """Write the resolved configuration as JSON (next to an output)."""
    Path(path).write_text(json.dumps({**dataclasses.asdict(cfg), **(extra or {})}, indent=2, default=str))
