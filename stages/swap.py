"""Swap stage: batches aligned crops across frames through a swap engine."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.errors import ConfigError, ModelError
from stages.packet import FramePacket

DIRECTIONS = {"a2b": ("a", "b"), "b2a": ("b", "a")}


@dataclass
class SwapSettings:
    """model: checkpoint directory; direction: a2b (A's faces get B's) or b2a;
    engine: a registered engine name; device: auto | cpu | cuda[:N]."""

    model: str
    direction: str = "a2b"
    engine: str = "eager"
    device: str = "auto"
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ConfigError(f"swap direction {self.direction!r} is not one of "
                              f"{', '.join(DIRECTIONS)}")

    @property
    def to_identity(self) -> str:
        return DIRECTIONS[self.direction][1]

    def check_identities(self, identities: list[str]) -> None:
        """ModelError unless a model with these decoders can swap in this direction."""
        if self.to_identity not in identities:
            raise ModelError(f"model {self.model} has identities {', '.join(identities)}, so it "
                             f"cannot swap {self.direction}; pick a direction between those")


class SwapStage:
    """Fills face.swapped ((S, S, 3) uint8) and face.mask ((S, S) float32 [0, 1]) for every face
    that has a crop and no errors. The engine picks the device and precision."""

    def __init__(self, settings: SwapSettings) -> None:
        self.settings = settings
        self.engine = None

    def setup(self) -> None:
        from engines import create_engine

        s = self.settings
        self.engine = create_engine(s.engine, s.model, device=s.device, batch_size=s.batch_size)
        s.check_identities(self.engine.identities)

    def process(self, batch: list[FramePacket]) -> list[FramePacket]:
        if self.engine is None:
            self.setup()
        faces = [f for p in batch for f in p.faces if f.ok and f.crop is not None]
        if faces:
            swapped, masks = self.engine.swap(np.stack([f.crop for f in faces]),
                                              self.settings.to_identity)
            for f, img, m in zip(faces, swapped, masks):
                f.swapped, f.mask = img, m
        return batch

    def flush(self) -> list[FramePacket]:
        return []
