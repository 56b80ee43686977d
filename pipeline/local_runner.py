"""The local runner: every stage object in one process, in order. The reference for other runners.

Frames are pulled from the source in batches, pushed through each stage's process(), then into
the sink. At the end each stage's flush() output goes through the stages after it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice

from tqdm import tqdm

from stages.packet import FramePacket


@dataclass
class StageStats:
    """Per stage: frames processed, seconds busy (all its actors together), mean number of batches
    waiting for it (Ray runner), and how many workers ran it."""

    name: str
    frames: int = 0
    busy_s: float = 0.0
    mean_queue: float = 0.0
    actors: int = 1


@dataclass
class RunStats:
    """frames and seconds of a run; startup_s: of those seconds, the set-up before the first
    frame (models loaded, workers started)."""

    frames: int = 0
    seconds: float = 0.0
    startup_s: float = 0.0
    stages: list[StageStats] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def stage_name(stage: object) -> str:
    """'detect' for a DetectStage; a stage may also say its own name."""
    return getattr(stage, "name", None) or type(stage).__name__.removesuffix("Stage").lower()


def batches(it: Iterable[FramePacket], n: int) -> Iterator[list[FramePacket]]:
    it = iter(it)
    while batch := list(islice(it, n)):
        yield batch


class LocalRunner:
    """Runs `stages` (objects with setup/process/flush) then `sink` over `frames`."""

    def __init__(self, stages: list, sink, batch_size: int = 8, progress: bool = True,
                 total: int | None = None, desc: str = "convert") -> None:
        self.stages, self.sink = stages, sink
        self.batch_size = batch_size
        self.progress, self.total, self.desc = progress, total, desc
        self.stats = RunStats(stages=[StageStats(stage_name(s)) for s in [*stages, sink]])

    def _through(self, batch: list[FramePacket], start: int) -> list[FramePacket]:
        for st, stats in zip(self.stages[start:] + [self.sink], self.stats.stages[start:]):
            t = time.perf_counter()
            batch = st.process(batch)
            stats.busy_s += time.perf_counter() - t
            stats.frames += len(batch)
        return batch

    def run(self, frames: Iterable[FramePacket]) -> RunStats:
        t0 = time.perf_counter()
        for st in [*self.stages, self.sink]:
            st.setup()
        self.stats.startup_s = time.perf_counter() - t0
        bar = tqdm(total=self.total, unit="frame", desc=self.desc, disable=not self.progress,
                   dynamic_ncols=True)
        try:
            for batch in batches(frames, self.batch_size):
                self.stats.frames += len(self._through(batch, 0))
                bar.update(len(batch))
            for i, st in enumerate([*self.stages, self.sink]):
                rest = st.flush()
                if rest and i < len(self.stages):
                    self.stats.frames += len(self._through(rest, i + 1))
                    bar.update(len(rest))
        finally:
            bar.close()
        self.stats.seconds = time.perf_counter() - t0
        return self.stats
