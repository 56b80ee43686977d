"""Swap stage: batches aligned crops across frames through a swap engine."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from swapstream.core.errors import ConfigError, ModelError
from swapstream.core.packet import FramePacket
from swapstream.stages.base import Needs, Stage

DIRECTIONS = {"a2b": ("a", "b"), "b2a": ("b", "a")}


@dataclass
class SwapSettings:
    """model: checkpoint directory; direction: a2b (A's faces get B's) or b2a;
    engine: auto or a registered engine name; device: auto | cpu | cuda[:N];
    precision: auto | fp32 | fp16 | bf16; providers: ONNX Runtime providers (onnx engine; empty:
    the best available); warm_all: build every direction in setup (live: a direction toggle
    then never stalls), not only this one."""

    model: str
    direction: str = "a2b"
    engine: str = "auto"
    device: str = "auto"
    batch_size: int = 32
    precision: str = "auto"
    providers: tuple[str, ...] = ()
    warm_all: bool = False

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


class SwapStage(Stage):
    """Fills face.swapped ((S, S, 3) uint8) and face.mask ((S, S) float32 [0, 1]) for every face
    that has a crop and no errors. The engine picks the device and precision.

    The direction may change between batches (live mode's a2b/b2a control): set_direction()."""

    name = "swap"
    needs = Needs(device="gpu")  # one copy per GPU; on a CPU-only machine one copy

    def __init__(self, settings: SwapSettings) -> None:
        self.settings = settings
        self.engine = None
        self.enabled = True  # live mode's swap on/off: off, faces pass through unswapped

    def setup(self) -> None:
        from swapstream.engines import create_engine

        s = self.settings
        options = {"providers": list(s.providers)} if s.providers else {}
        self.engine = create_engine(s.engine, s.model, device=s.device, batch_size=s.batch_size,
                                    precision=s.precision, **options)
        s.check_identities(self.engine.identities)
        # compile / export / allocate now, so the first frame or batch does not wait for it
        for identity in (self.engine.identities if s.warm_all else [s.to_identity]):
            self.engine.warmup(identity)

    def process(self, batch: list[FramePacket]) -> list[FramePacket]:
        if self.engine is None:
            self.setup()
        if not self.enabled:
            return batch
        faces = [f for p in batch for f in p.faces if f.ok and f.crop is not None]
        if faces:
            swapped, masks = self.engine.swap(np.stack([f.crop for f in faces]),
                                              self.settings.to_identity)
            for f, img, m in zip(faces, swapped, masks):
                f.swapped, f.mask = img, m
        return batch

    def set_direction(self, direction: str) -> None:
        """Swap the other way from the next batch on; ConfigError/ModelError on a bad one."""
        if direction not in DIRECTIONS:
            raise ConfigError(f"swap direction {direction!r} is not one of {', '.join(DIRECTIONS)}")
        if self.engine is not None:
            SwapSettings(self.settings.model, direction).check_identities(self.engine.identities)
        self.settings.direction = direction

    def close(self) -> None:
        self.engine = None
