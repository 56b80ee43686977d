"""Whom a swap request swaps with which model: the person -> model map (`--map REF=MODEL`, the
settings file's `map:` section), `--only REF --model M` being a map of one entry.

`map_entries` reads the map from a config and checks its shape (one line, exit 2, for a mistake);
`load_people` loads each person's reference faces (training.reference: photos, a folder of them,
a faceset, a video) once, in the driver, and refuses two entries that show the same person. The
identify stage then decides per face track which entry (if any) a face is, and the swap stage
runs it through that entry's model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from swapstream.core.errors import ConfigError
from swapstream.engines.identity import distance, normalise


@dataclass(frozen=True)
class Person:
    """One entry of the map. refs: what shows the person (paths); model: the checkpoint directory
    that swaps them; meta: its model.json; embeddings: (M, 128) float32 unit vectors of the
    person's reference faces."""

    refs: tuple[str, ...]
    model: str
    meta: dict
    embeddings: np.ndarray


def map_entries(cfg) -> list[tuple[tuple[str, ...], str]]:
    """(references, model) per person of the request, in order: cfg.map's entries, or --only's
    one person with --model; [] when every face is swapped by --model. ConfigError for a map
    that is not REF: MODEL strings, a person given twice, or a map beside --only or --model."""
    people = cfg.map
    if not people:
        return [(tuple(cfg.identity.only), cfg.swap.model)] if cfg.identity.only else []
    if not isinstance(people, dict):
        raise ConfigError(f"map must be a mapping of REF: MODEL (a person's photos, folder or "
                          f"faceset: their model), got {type(people).__name__}")
    if cfg.identity.only:
        raise ConfigError("--only REF --model M is --map REF=M for one person; give --map for "
                          "every person, or --only with --model, not both")
    if cfg.swap.model:
        raise ConfigError(f"--model {cfg.swap.model} and --map both name models; with --map each "
                          f"person's model is in the map: drop --model (or swap.model in the "
                          f"settings file)")
    seen: dict[Path, str] = {}
    out = []
    for ref, model in people.items():
        if not isinstance(ref, str) or not isinstance(model, str) or not ref or not model:
            raise ConfigError(f"map entry {ref!r}: {model!r} must be REF: MODEL, a person's photo, "
                              f"folder or faceset and the checkpoint folder that swaps them")
        key = Path(ref).expanduser().resolve()
        if key in seen:
            raise ConfigError(f"--map: {ref} and {seen[key]} are one person given twice; give "
                              f"each person once")
        seen[key] = ref
        out.append(((ref,), model))
    return out


def load_people(cfg, entries: list[tuple[tuple[str, ...], str]], metas: dict[str, dict],
                say: Callable[[str], None] | None = None) -> tuple[Person, ...]:
    """Each entry's reference embeddings (once, in the driver; workers get them with the chain).
    metas: model directory -> its model.json. ReferenceError (exit 2) for a reference without a
    face; ConfigError for two entries whose references are one person."""
    from swapstream.training.reference import load_reference

    people = []
    for refs, model in entries:
        ref = load_reference(list(refs))
        people.append(Person(refs, model, metas[model], ref.embeddings))
        if say is not None:
            if len(entries) == 1:
                say(f"only: {len(ref)} reference face(s) of the person from {', '.join(ref.sources)}; "
                    f"other people are left as they are")
            else:
                say(f"map: {', '.join(ref.sources)} ({len(ref)} reference face(s)) -> {model}")
            for note in ref.notes:
                say(f"note: {note}")
    if say is not None and len(people) > 1:
        say(f"map: {len(people)} people, each with their model; other people are left as they are")
    _distinct(people, cfg.identity.threshold)
    return tuple(people)


def _distinct(people: list[Person], threshold: float) -> None:
    """ConfigError when two entries' references show one person (their mean faces within the
    same-person threshold): the vote could not tell which model a face of theirs gets."""
    centres = [normalise(p.embeddings.mean(0)[None])[0] for p in people]
    for i in range(len(people)):
        for j in range(i + 1, len(people)):
            d = float(distance(centres[i], centres[j]))
            if d <= threshold:
                a, b = ", ".join(people[i].refs), ", ".join(people[j].refs)
                raise ConfigError(f"--map: {a} and {b} show one person (distance {d:.2f}, the same "
                                  f"person at <= {threshold}); give each person once")
