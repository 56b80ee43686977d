"""The chain: the face stages between a source and its sinks, as links runners can place.

A Link names a stage, says what it needs (stages.base.Needs) and builds it with `build()`, so a
runner (or a Ray actor in another process) builds its own stage objects. Convert, segments and
live all start from `make_chain`; `check_request` is what they check before any work.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from engines.checkpoint import verify_checkpoint
from stages.align import AlignSettings, AlignStage
from stages.base import Needs, Stage
from stages.blend import BlendStage
from stages.detect import DetectStage
from stages.errors import ConfigError, ModelError, OutputError
from stages.identify import IdentifyStage
from stages.swap import SwapSettings, SwapStage


@dataclass(frozen=True)
class Link:
    """One stage of a chain: its name, what it needs, and how to build it (picklable)."""

    name: str
    factory: Callable[[], Stage]
    needs: Needs

    def build(self) -> Stage:
        return self.factory()


Chain = list[Link]


def link(cls: type[Stage], *args, **kwargs) -> Link:
    """A Link for stage class `cls` built with these arguments."""
    return Link(cls.name, partial(cls, *args, **kwargs), cls.needs)


def stage_name(stage: object) -> str:
    """A stage's name ('detect'); objects without one are named after their class."""
    return getattr(stage, "name", None) or type(stage).__name__.removesuffix("Stage").lower()


REFERENCE = "_reference"  # where check_model leaves the --only person's embeddings in the metadata


def make_chain(cfg, meta: dict) -> Chain:
    """detect -> align [-> identify] -> swap -> blend for a checked request (cfg: ConvertConfig
    or LiveConfig, meta: the model's model.json, with the --only reference when one was given)."""
    from pipeline.config import LiveConfig

    align = AlignSettings(size=int(meta["model"]["size"]),
                          coverage=float(meta.get("training", {}).get("coverage", 0.7)),
                          **dataclasses.asdict(cfg.align))
    swap = swap_settings(cfg)
    identify = []
    if cfg.identity.only:
        identify = [link(IdentifyStage, cfg.identity, meta[REFERENCE], hold=not isinstance(cfg, LiveConfig))]
    return [link(DetectStage, cfg.detect), link(AlignStage, align), *identify, link(SwapStage, swap),
            link(BlendStage, cfg.blend)]


def load_only(cfg, meta: dict, say: Callable[[str], None] | None = None) -> None:
    """The --only person's reference embeddings into meta[REFERENCE] (once, in the driver; every
    worker gets them with the chain). ReferenceError (exit 2) for a reference without a face."""
    if not cfg.identity.only:
        return
    from stages.reference import load_reference

    ref = load_reference(cfg.identity.only)
    meta[REFERENCE] = ref.embeddings
    if say is not None:
        say(f"only: {len(ref)} reference face(s) of the person from {', '.join(ref.sources)}; "
            f"other people are left as they are")
        for note in ref.notes:
            say(f"note: {note}")


def check_model(cfg, say: Callable[[str], None] | None = None) -> dict:
    """The model a request names: present, sound, and able to swap in its direction, and an
    engine that runs here (cfg.engine "auto" is resolved in place; `say` gets the line naming
    it). Returns its model.json; raises ModelError / ConfigError naming the problem and the fix."""
    if not cfg.model:
        raise ModelError("no model given; pass --model DIR (a checkpoint from `swapstream train`)")
    meta = verify_checkpoint(cfg.model)  # corrupt weights fail here, not in a worker
    swap_settings(cfg).check_identities(meta["identities"])
    line = choose_engine(cfg)
    if say is not None:
        say(line)
    load_only(cfg, meta, say)
    return meta


def swap_settings(cfg) -> SwapSettings:
    """The swap stage's settings of a request. Convert: batches of up to 32 faces. Live: one face
    per call (static shapes: CUDA graphs for the compile engine), every direction built in
    setup so that a direction toggle never stalls the stream."""
    from pipeline.config import LiveConfig

    live = isinstance(cfg, LiveConfig)
    providers = providers_of(cfg)
    return SwapSettings(cfg.model, cfg.direction, cfg.engine, cfg.device, 1 if live else 32,
                        cfg.precision, providers, warm_all=live)


def providers_of(cfg) -> tuple[str, ...]:
    """cfg.providers (a comma-separated string, or a list from a settings file) as a tuple."""
    raw = cfg.providers
    items = raw.split(",") if isinstance(raw, str) else list(raw or [])
    return tuple(str(p).strip() for p in items if str(p).strip())


def to_stderr(line: str) -> None:
    """A line for the user beside a progress bar."""
    print(line, file=sys.stderr, flush=True)


def choose_engine(cfg) -> str:
    """Resolve cfg.engine == "auto" to the engine it stands for (in place, so every worker builds
    the same one) and check that the engine can run here: one line saying which engine runs.
    ConfigError (exit 2) when the engine asked for cannot run here, naming the fix."""
    from engines.device import device_kind, resolve_device
    from engines.registry import ENGINES, resolve_engine

    asked = cfg.engine
    cfg.engine, cfg.precision = resolve_engine(cfg.engine, cfg.device, cfg.precision)
    if providers_of(cfg) and cfg.engine != "onnx":
        raise ConfigError(f"--providers is for the onnx engine; this run uses {cfg.engine!r}. Drop "
                          f"--providers or pass --engine onnx")
    kind, precision = device_kind(cfg.device), cfg.precision
    dev = kind if kind == "cpu" else resolve_device(cfg.device)  # no torch import for the CPU
    how = "the fastest available here; --engine to choose" if asked == "auto" else "as asked"
    return f"engine: {cfg.engine} ({ENGINES[cfg.engine].summary}), {precision} on {dev} - {how}"


def check_request(cfg, src: Path, dst: Path, say: Callable[[str], None] | None = None) -> dict:
    """Everything a user can get wrong in a conversion, before any work; returns the model's
    metadata."""
    meta = check_model(cfg, say)
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise OutputError(f"output {dst} is the input file; choose another output name")
    return meta


def after_temporal(chain: Chain) -> int:
    """Index just after the last stage that carries state from frame to frame (where a segment's
    lead frames may leave the chain)."""
    return max((i + 1 for i, lk in enumerate(chain) if lk.needs.temporal), default=0)
