"""A swap request, checked and turned into a chain: what convert, segments and live share.

`check_model` (and `check_request`, for a conversion) checks everything a user can get wrong
before any work: the model, its direction, an engine that runs here, the --only person's
reference faces. `make_chain` then builds detect -> align [-> identify] -> swap -> blend for the
mode the caller names: "convert" (every frame; identify holds frames until a track is decided;
swap batches up to 32 faces) or "live" (identify never holds; one face per swap call, every
direction built at set-up so that a toggle never stalls the stream).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from swapstream.core.errors import ConfigError, ModelError, OutputError
from swapstream.engines.checkpoint import verify_checkpoint
from swapstream.pipeline.chain import Chain, link
from swapstream.stages.face.align import AlignSettings, AlignStage
from swapstream.stages.face.blend import BlendStage
from swapstream.stages.face.detect import DetectStage
from swapstream.stages.face.identify import IdentifyStage
from swapstream.stages.face.swap import SwapSettings, SwapStage

MODES = ("convert", "live")


@dataclass(frozen=True)
class CheckedModel:
    """A model that passed check_model. meta: its model.json; reference: the --only person's
    reference embeddings, (M, 128) float32 unit vectors, or None without --only."""

    meta: dict
    reference: np.ndarray | None = None


def make_chain(cfg, meta: dict, mode: str, reference: np.ndarray | None = None) -> Chain:
    """detect -> align [-> identify] -> swap -> blend for a checked request (cfg: ConvertConfig or
    LiveConfig; meta: the model's model.json; mode: "convert" | "live"; reference: the --only
    person's (M, 128) float32 embeddings, needed when cfg.identity.only is set)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    align = AlignSettings(size=int(meta["model"]["size"]),
                          coverage=float(meta.get("training", {}).get("coverage", 0.7)),
                          **dataclasses.asdict(cfg.align))
    identify = []
    if cfg.identity.only:
        if reference is None:
            raise ValueError("--only needs the reference embeddings (check_model loads them)")
        identify = [link(IdentifyStage, cfg.identity, reference, hold=mode == "convert")]
    return [link(DetectStage, cfg.detect), link(AlignStage, align), *identify,
            link(SwapStage, swap_settings(cfg.swap, mode)), link(BlendStage, cfg.blend)]


def load_reference(cfg, say: Callable[[str], None] | None = None) -> np.ndarray | None:
    """The --only person's reference embeddings, (M, 128) float32 (once, in the driver; every
    worker gets them with the chain), or None without --only. ReferenceError (exit 2) for a
    reference without a face."""
    if not cfg.identity.only:
        return None
    from swapstream.training.reference import load_reference as load

    ref = load(cfg.identity.only)
    if say is not None:
        say(f"only: {len(ref)} reference face(s) of the person from {', '.join(ref.sources)}; "
            f"other people are left as they are")
        for note in ref.notes:
            say(f"note: {note}")
    return ref.embeddings


def check_model(cfg, say: Callable[[str], None] | None = None) -> CheckedModel:
    """The model a request names: present, sound, and able to swap in its direction, and an
    engine that runs here (cfg.swap.engine "auto" is resolved in place; `say` gets the line
    naming it), with the --only reference loaded. ModelError / ConfigError name the problem and
    the fix."""
    sw = cfg.swap
    if not sw.model:
        raise ModelError("no model given; pass --model DIR (a checkpoint from `swapstream train`)")
    meta = verify_checkpoint(sw.model)  # corrupt weights fail here, not in a worker
    swap_settings(sw, "convert").check_identities(meta["identities"])
    line = choose_engine(sw)
    if say is not None:
        say(line)
    return CheckedModel(meta, load_reference(cfg, say))


def swap_settings(sw, mode: str) -> SwapSettings:
    """The swap stage's settings for the swap section `sw` (pipeline.config.SwapSection) in a
    mode. Convert: batches of up to 32 faces. Live: one face per call (static shapes: CUDA graphs
    for the compile engine), every direction built in setup."""
    live = mode == "live"
    return SwapSettings(sw.model, sw.direction, sw.engine, sw.device, 1 if live else 32,
                        sw.precision, providers_of(sw), warm_all=live)


def providers_of(sw) -> tuple[str, ...]:
    """sw.providers (a comma-separated string, or a list from a settings file) as a tuple."""
    raw = sw.providers
    items = raw.split(",") if isinstance(raw, str) else list(raw or [])
    return tuple(str(p).strip() for p in items if str(p).strip())


def to_stderr(line: str) -> None:
    """A line for the user beside a progress bar."""
    print(line, file=sys.stderr, flush=True)


def choose_engine(sw) -> str:
    """Resolve sw.engine == "auto" to the engine it stands for (in place, so every worker builds
    the same one) and check that the engine can run here: one line saying which engine runs.
    ConfigError (exit 2) when the engine asked for cannot run here, naming the fix."""
    from swapstream.engines.device import device_kind, resolve_device
    from swapstream.engines.registry import ENGINES, resolve_engine

    asked = sw.engine
    sw.engine, sw.precision = resolve_engine(sw.engine, sw.device, sw.precision)
    if providers_of(sw) and "providers" not in ENGINES[sw.engine].options:
        takes = [n for n, spec in ENGINES.items() if "providers" in spec.options]
        raise ConfigError(f"--providers is for the {' and '.join(takes)} engine; this run uses "
                          f"{sw.engine!r}. Drop --providers or pass --engine {takes[0]}")
    kind, precision = device_kind(sw.device), sw.precision
    dev = kind if kind == "cpu" else resolve_device(sw.device)  # no torch import for the CPU
    how = "the fastest available here; --engine to choose" if asked == "auto" else "as asked"
    return f"engine: {sw.engine} ({ENGINES[sw.engine].summary}), {precision} on {dev} - {how}"


def check_request(cfg, src: Path, dst: Path, say: Callable[[str], None] | None = None) -> CheckedModel:
    """Everything a user can get wrong in a conversion, before any work."""
    model = check_model(cfg, say)
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise OutputError(f"output {dst} is the input file; choose another output name")
    return model
