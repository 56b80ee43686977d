"""Build engines ahead of time (`swapstream compile`): every direction of a checkpoint, into the
engine cache, so the first convert or live run does not wait for it."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from swapstream.core.errors import ConfigError


@dataclass
class Built:
    """One direction's engine: where it is, how long it took, and whether it was built now
    (False: a valid one was in the cache)."""

    identity: str
    where: Path
    seconds: float
    built: bool


def parse_batch(text: str) -> int:
    """'32' or '1-32' -> 32 (engines are built for batches 1..N); ConfigError otherwise."""
    m = re.fullmatch(r"\s*(?:1\s*-\s*)?(\d+)\s*", text)
    if not m or not 1 <= int(m.group(1)) <= 256:
        raise ConfigError(f"--batch {text!r}: give the largest batch, N or 1-N, with N from 1 to 256")
    return int(m.group(1))


def buildable_engines() -> list[str]:
    """The engines that build something ahead of time (their SPEC says `builds`)."""
    from swapstream.engines.registry import ENGINES

    return [name for name, spec in ENGINES.items() if spec.builds]


def compile_ahead(model: str, engine: str, precision: str = "auto", batch: int = 32, device: str = "auto",
                  identities: list[str] | None = None, say: Callable[[str], None] = print) -> list[Built]:
    """Build engine `engine` for each direction (decoder identity) of checkpoint `model`."""
    from swapstream.engines.cache import cache_root
    from swapstream.engines.registry import ENGINES, create_engine

    buildable = buildable_engines()
    if engine not in buildable:
        raise ConfigError(f"choose the engine to build: --engine {' or '.join(buildable)} ({engine!r} "
                          f"needs no building)")
    eng = create_engine(engine, model, device=device, batch_size=batch, precision=precision)
    # an engine of static shapes (torch.compile) builds live's one-face calls apart from the batches
    single = create_engine(engine, model, device=device, batch_size=1, precision=precision) \
        if ENGINES[engine].single_shape and batch > 1 else None
    out = []
    for identity in identities or eng.identities:
        say(f"building {engine} ({eng.precision}, {eng.device}, batch 1-{batch}) for decoder "
            f"{identity!r} ...")
        t0 = time.perf_counter()
        eng.warmup(identity)  # builds (or loads) the direction and runs it once
        if single is not None:
            single.warmup(identity)
        took = time.perf_counter() - t0
        if hasattr(eng, "paths"):
            where, built = eng.paths[identity], eng.built[identity]
        else:  # torch.compile keeps its kernels in Inductor's cache
            import os

            where, built = Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR", cache_root() / "inductor")), True
        out.append(Built(identity, Path(where), took, built))
        say(f"  {'built' if built else 'found in the cache'} in {took:.1f} s: {where}")
    return out
