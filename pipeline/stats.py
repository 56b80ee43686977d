"""Run statistics: per-stage figures of a run and the summary a conversion prints.

Runners fill RunStats; assemblies turn it into what the user sees (ConvertSummary's lines and
JSON). Live runs add per-frame latencies (swapstream.pipeline.live_stats).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class StageStats:
    """Per stage: frames processed, seconds busy (all its workers together), mean number of batches
    waiting for it (Ray runner), and how many workers ran it."""

    name: str
    frames: int = 0
    busy_s: float = 0.0
    mean_queue: float = 0.0
    actors: int = 1
    faces: int = 0  # faces in the frames it passed on

    @property
    def ms_per_frame(self) -> float:
        return 1000 * self.busy_s / self.frames if self.frames else 0.0

    @property
    def ms_per_face(self) -> float:
        return 1000 * self.busy_s / self.faces if self.faces else 0.0


@dataclass
class RunStats:
    """frames and seconds of a run; startup_s: of those seconds, the set-up before the first
    frame (models loaded, workers started); dropped: frames the back-pressure policy dropped."""

    frames: int = 0
    seconds: float = 0.0
    startup_s: float = 0.0
    dropped: int = 0
    stages: list[StageStats] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def add(self, other: RunStats) -> None:
        """Add another run's frames and per-stage busy time (the segments of one conversion)."""
        self.frames += other.frames
        self.dropped += other.dropped
        for s in other.stages:
            mine = next((m for m in self.stages if m.name == s.name), None)
            if mine is None:
                self.stages.append(mine := StageStats(s.name))
            mine.frames += s.frames
            mine.busy_s += s.busy_s
            mine.faces += s.faces


@dataclass
class ConvertSummary:
    """What a conversion did: counts, time, and the per-stage table."""

    output: Path
    frames: int
    faces: int
    faces_swapped: int
    frames_without_face: int
    seconds: float
    stats: RunStats
    warnings: list[str]
    others: int = 0  # faces left alone: not the --only person
    runner: str = ""  # the runner that ran: local | ray ("" when not recorded)
    runner_reason: str = ""  # why (swapstream.pipeline.runners.choice.Choice.reason)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        out = [f"wrote {self.output}: {self.frames} frames in {self.seconds:.1f} s ({self.fps:.1f} fps); "
               f"{self.faces_swapped} faces swapped, {self.frames_without_face} frames without a face"
               + (f", {self.others} faces of other people left alone" if self.others else "")]
        out.append(f"{'stage':<8}{'workers':>8}{'frames':>8}{'busy s':>9}{'ms/frame':>10}{'ms/face':>9}"
                   f"{'queue':>7}")
        for s in self.stats.stages:
            per_face = f"{s.ms_per_face:>9.1f}" if s.faces else f"{'-':>9}"
            out.append(f"{s.name:<8}{s.actors:>8}{s.frames:>8}{s.busy_s:>9.1f}{s.ms_per_frame:>10.1f}"
                       f"{per_face}{s.mean_queue:>7.1f}")
        out += [f"note: {w}" for w in self.warnings]
        return out

    def to_json(self) -> dict:
        return {"output": str(self.output), "frames": self.frames, "faces": self.faces,
                "faces_swapped": self.faces_swapped, "frames_without_face": self.frames_without_face,
                "faces_left_alone": self.others,
                "seconds": round(self.seconds, 3), "fps": round(self.fps, 2),
                "runner": self.runner, "runner_reason": self.runner_reason,
                "stages": [dataclasses.asdict(s) for s in self.stats.stages]}
