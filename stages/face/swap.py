"""Swap stage: batches aligned crops across frames through a swap engine (one per model of the
swap's map: each face through the model of the person identify decided it is)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from swapstream.core.errors import ConfigError, ModelError
from swapstream.core.geometry import alignment_matrix, crop_face
from swapstream.core.packet import Face, FramePacket
from swapstream.stages.base import Needs, Stage
from swapstream.stages.face.align import AlignSettings

DIRECTIONS = {"a2b": ("a", "b"), "b2a": ("b", "a")}


@dataclass
class SwapSettings:
    """model: checkpoint directory; direction: a2b (A's faces get B's) or b2a;
    engine: auto or a registered engine name; device: auto | cpu | cuda[:N];
    precision: auto | fp32 | fp16 | bf16; providers: ONNX Runtime providers (onnx engine; empty:
    the best available); warm_all: build every direction in setup (live: a direction toggle
    then never stalls), not only this one.
    models: the map's models, (checkpoint directory, the AlignSettings of the crop it takes) per
    person in the map's order (face.person picks one; every model in the same direction). The
    align stage cuts the first model's crop; a face whose model takes another crop (size,
    coverage, face type) is cut again from the frame for it, face.matrix and face.crop replaced.
    Empty: `model` swaps every face, on align's crop."""

    model: str
    direction: str = "a2b"
    engine: str = "auto"
    device: str = "auto"
    batch_size: int = 32
    precision: str = "auto"
    providers: tuple[str, ...] = ()
    warm_all: bool = False
    models: tuple[tuple[str, AlignSettings], ...] = field(default_factory=tuple)

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
    that has a crop and no errors, through the engine of its person's model (settings.models;
    each model's engine is built once, in setup). The engines pick the device and precision.

    The direction may change between batches (live mode's a2b/b2a control): set_direction()."""

    name = "swap"
    needs = Needs(device="gpu")  # one copy per GPU; on a CPU-only machine one copy

    def __init__(self, settings: SwapSettings) -> None:
        self.settings = settings
        self.engine = None  # the first (or only) model's
        self.engines: dict[str, object] = {}  # checkpoint directory -> its engine
        self.enabled = True  # live mode's swap on/off: off, faces pass through unswapped

    @property
    def paths(self) -> list[str]:
        """The checkpoint directory of each person of the map (one: every face's model)."""
        return [m for m, _ in self.settings.models] or [self.settings.model]

    def setup(self) -> None:
        from swapstream.engines import create_engine

        s = self.settings
        options = {"providers": list(s.providers)} if s.providers else {}
        for path in self.paths:
            if path in self.engines:  # two people swapped by one model: one engine
                continue
            engine = create_engine(s.engine, path, device=s.device, batch_size=s.batch_size,
                                   precision=s.precision, **options)
            SwapSettings(path, s.direction).check_identities(engine.identities)
            # compile / export / allocate now, so the first frame or batch does not wait for it
            for identity in (engine.identities if s.warm_all else [s.to_identity]):
                engine.warmup(identity)
            self.engines[path] = engine
        self.engine = self.engines[self.paths[0]]

    def process(self, batch: list[FramePacket]) -> list[FramePacket]:
        if self.engine is None:
            self.setup()
        if not self.enabled:
            return batch
        groups: dict[str, list[Face]] = {}  # faces by the model that swaps them, in batch order
        for p in batch:
            for f in p.faces:
                if f.ok and f.crop is not None:
                    groups.setdefault(self._model_of(p, f), []).append(f)
        for path, faces in groups.items():
            swapped, masks = self.engines[path].swap(np.stack([f.crop for f in faces]),
                                                     self.settings.to_identity)
            for f, img, m in zip(faces, swapped, masks):
                f.swapped, f.mask = img, m
        return batch

    def _model_of(self, packet: FramePacket, face: Face) -> str:
        """The checkpoint that swaps `face`; cuts the face again if that model takes another crop."""
        models = self.settings.models
        if not models:
            return self.settings.model
        if not 0 <= face.person < len(models):
            raise ValueError(f"face of track {face.track} has person {face.person}, not one of the "
                             f"{len(models)} in the map: identify must decide faces before swap")
        path, crop = models[face.person]
        first = models[0][1]
        if (crop.size, crop.coverage, crop.face) != (first.size, first.coverage, first.face):
            face.matrix = alignment_matrix(face.landmarks, crop.size, crop.coverage, crop.face)
            face.crop = crop_face(packet.frame, face.matrix, crop.size)
        return path

    def set_direction(self, direction: str) -> None:
        """Swap the other way from the next batch on; ConfigError/ModelError on a bad one."""
        if direction not in DIRECTIONS:
            raise ConfigError(f"swap direction {direction!r} is not one of {', '.join(DIRECTIONS)}")
        for path, engine in self.engines.items():
            SwapSettings(path, direction).check_identities(engine.identities)
        self.settings.direction = direction

    def close(self) -> None:
        self.engine = None
        self.engines = {}
