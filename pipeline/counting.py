"""CountingSink: any sink, counting the faces that reach it (swapped ones, frames without any)."""

from __future__ import annotations

from swapstream.core.packet import FramePacket, Why
from swapstream.stages.base import Sink


class CountingSink(Sink):
    """Wraps `inner`, counting faces on the way; report() adds the counts to the inner report."""

    def __init__(self, inner: Sink) -> None:
        self.inner = inner
        self.name = inner.name
        self.needs = inner.needs
        self.faces = self.swapped = self.no_face = self.others = 0

    def setup(self) -> None:
        self.inner.setup()

    def process(self, batch: list[FramePacket]) -> list[FramePacket]:
        for p in batch:
            self.faces += len(p.faces)
            self.swapped += sum(f.swapped is not None for f in p.faces)
            self.no_face += not p.faces
            self.others += sum(f.skipped_for(Why.OTHER_PERSON) for f in p.faces)
        return self.inner.process(batch)

    def flush(self) -> list[FramePacket]:
        return self.inner.flush()

    def abort(self) -> None:
        self.inner.abort()

    def close(self) -> None:
        self.inner.close()

    def limit_threads(self, n: int) -> None:
        self.inner.limit_threads(n)

    def report(self) -> dict:
        return {"warnings": [], **self.inner.report(), "faces": self.faces, "swapped": self.swapped,
                "no_face": self.no_face, "others": self.others}
