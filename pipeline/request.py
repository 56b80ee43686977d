"""A swap request, checked and turned into a chain: what convert, segments and live share.

`check_model` (and `check_request`, for a conversion) checks everything a user can get wrong
before any work: the model (each model of a --map), its direction, an engine that runs here, the
reference faces of each person of the map (--only: a map of one; swapstream.pipeline.people).
`make_chain` then builds detect -> align [-> identify] -> swap -> blend for the mode the caller
names: "convert" (every frame; identify holds frames until a track is decided;
swap batches up to 32 faces) or "live" (identify never holds; one face per swap call, every
direction built at set-up so that a toggle never stalls the stream).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from swapstream.core.errors import ConfigError, ModelError, OutputError
from swapstream.engines.checkpoint import verify_checkpoint
from swapstream.pipeline.chain import Chain, link
from swapstream.pipeline.people import Person, load_people, map_entries
from swapstream.stages.face.align import AlignSettings, AlignStage
from swapstream.stages.face.blend import BlendStage
from swapstream.stages.face.detect import DetectStage
from swapstream.stages.face.hands import ROI_SIDE, HandSettings, HandsStage
from swapstream.stages.face.identify import IdentifyStage
from swapstream.stages.face.swap import SwapSettings, SwapStage

MODES = ("convert", "live")


@dataclass(frozen=True)
class CheckedModel:
    """A request's models, passed by check_model. meta: the model.json of --model (with --map,
    of the first entry's model); people: the map's entries with their models and reference
    embeddings (--only: one; empty: --model swaps every face); reference: the --only person's
    (M, 128) float32 unit embeddings (people[0]'s when the map has one entry), else None."""

    meta: dict
    reference: np.ndarray | None = None
    people: tuple[Person, ...] = ()


def make_chain(cfg, meta: dict, mode: str, reference: np.ndarray | None = None,
               people: Sequence[Person] = ()) -> Chain:
    """detect -> align [-> identify] -> swap [-> hands] -> blend for a checked request (cfg: ConvertConfig or
    LiveConfig; meta: the model's model.json; mode: "convert" | "live"; reference: the --only
    person's (M, 128) float32 embeddings, needed when cfg.identity.only is set and `people` is not
    given; people: CheckedModel.people, needed with a --map). With people, identify decides each
    face's entry and swap runs it through that entry's model; align cuts the first model's crop
    (swap cuts again for a model that takes another)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    people = tuple(people) or _one_person(cfg, meta, reference)
    meta = people[0].meta if people else meta
    align = align_settings(cfg, meta)
    identify = []
    if people:
        identify = [link(IdentifyStage, cfg.identity, [p.embeddings for p in people],
                         hold=mode == "convert")]
    swap = swap_settings(cfg.swap, mode, [(p.model, align_settings(cfg, p.meta)) for p in people])
    hands = []
    if cfg.blend.occlusion in ("hands", "both"):
        # Live searches for a new hand every 6th frame (200 ms at 30 fps; the learned mask covers
        # a hand meanwhile): a palm search is ~10 ms of a core, and every 3rd frame the searches
        # were 13 % of a core here, which the browser camera's 2-core budget has not got.
        live = mode == "live"
        hands = [link(HandsStage, HandSettings(search_every=6 if live else 4, look_back=not live,
                                                roi=192 if live else ROI_SIDE, background=live))]
    return [link(DetectStage, cfg.detect), link(AlignStage, align), *identify, link(SwapStage, swap),
            *hands, link(BlendStage, cfg.blend, mouth_reach(meta, swap.to_identity),
                         tuple(mouth_reach(p.meta, swap.to_identity) for p in people),
                         mouth_floor(meta, swap.to_identity),
                         tuple(mouth_floor(p.meta, swap.to_identity) for p in people))]


def _one_person(cfg, meta: dict, reference: np.ndarray | None) -> tuple[Person, ...]:
    """--only's person when the caller gives the reference embeddings instead of people."""
    if cfg.map:
        raise ValueError("--map needs the people with their models (check_model loads them)")
    if not cfg.identity.only:
        return ()
    if reference is None:
        raise ValueError("--only needs the reference embeddings (check_model loads them)")
    return (Person(tuple(cfg.identity.only), cfg.swap.model, meta, reference),)


def align_settings(cfg, meta: dict) -> AlignSettings:
    """The crop a model takes (size, coverage and face type from its model.json) with the user's
    align options."""
    trained = meta.get("training", {})  # the crop the model was trained on (before --face: "face")
    return AlignSettings(size=int(meta["model"]["size"]), coverage=float(trained.get("coverage", 0.7)),
                         face=str(trained.get("face", "face")), **dataclasses.asdict(cfg.align))


def mouth_reach(meta: dict, identity: str) -> float | None:
    """The widest mouth (core.geometry.mouth_gap, 95th percentile) the faceset of the identity a
    model draws showed in training, from its model.json; None for a model trained before this
    was recorded."""
    reach = meta.get("training", {}).get("expression", {}).get(identity, {}).get("mouth_reach")
    return None if reach is None else float(reach)


def mouth_floor(meta: dict, identity: str) -> float | None:
    """The narrowest mouth (core.geometry.mouth_gap, 5th percentile) the faceset of the identity
    a model draws showed in training, from its model.json; None for a model trained before this
    was recorded."""
    floor = meta.get("training", {}).get("expression", {}).get(identity, {}).get("mouth_floor")
    return None if floor is None else float(floor)


def check_model(cfg, say: Callable[[str], None] | None = None) -> CheckedModel:
    """The models a request names (--model, or each of the --map's): present, sound, and able to
    swap in its direction, and an engine that runs here (cfg.swap.engine "auto" is resolved in
    place; `say` gets the line naming it), with each person's references loaded (--only, --map).
    ModelError / ConfigError / ReferenceError name the problem and the fix."""
    sw = cfg.swap
    entries = map_entries(cfg)
    models = list(dict.fromkeys(m for _, m in entries)) or [sw.model]
    if not models[0]:
        raise ModelError("no model given; pass --model DIR (a checkpoint from `swapstream train`), "
                         "or --map REF=MODEL for each person to swap")
    metas = {}
    for model in models:
        metas[model] = verify_checkpoint(model)  # corrupt weights fail here, not in a worker
        SwapSettings(model, sw.direction).check_identities(metas[model]["identities"])
    line = choose_engine(sw)
    if say is not None:
        say(line)
    people = load_people(cfg, entries, metas, say) if entries else ()
    return CheckedModel(metas[models[0]], people[0].embeddings if len(people) == 1 else None, people)


def swap_settings(sw, mode: str, models: Sequence[tuple[str, AlignSettings]] = ()) -> SwapSettings:
    """The swap stage's settings for the swap section `sw` (pipeline.config.SwapSection) in a
    mode; models: (checkpoint, the crop it takes) per person of the map (SwapSettings.models).
    Convert: batches of up to 32 faces. Live: one face per call (static shapes: CUDA graphs for
    the compile engine), every direction built in setup."""
    live = mode == "live"
    models = tuple(models)
    return SwapSettings(sw.model or (models[0][0] if models else ""), sw.direction, sw.engine, sw.device,
                        1 if live else 32, sw.precision, providers_of(sw), warm_all=live, models=models)


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
