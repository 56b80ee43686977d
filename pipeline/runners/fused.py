"""FusedStage: several stages run one after another as one stage (one Ray actor).

On a small machine every extra actor is another process loading MediaPipe and torch and another
object-store hop per batch, while the light stages (align, swap on CPU at 64 px, blend: a few ms
per frame together) gain nothing from running apart. The Ray runner fuses them there; the
stages themselves do not know.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial, reduce

from swapstream.core.packet import FramePacket
from swapstream.pipeline.chain import Chain, Link, stage_name
from swapstream.pipeline.runners.base import cascade
from swapstream.stages.base import Stage


class FusedStage(Stage):
    """Runs the stages made by `factories` in order, as setup/process/flush/close of one stage.

    process(batch) passes the batch through each stage in turn; flush() flushes each stage in
    order and passes what it returns through the stages after it, as the local runner does.
    `busy` holds each inner stage's seconds, by name, for the closing table.
    """

    def __init__(self, factories: list[Callable[[], Stage]]) -> None:
        self.stages = [f() for f in factories]
        self.names = [stage_name(s) for s in self.stages]
        self.name = "+".join(self.names)
        self.busy = dict.fromkeys(self.names, 0.0)

    def setup(self) -> None:
        for s in self.stages:
            s.setup()

    def _through(self, batch: list[FramePacket], start: int) -> list[FramePacket]:
        for name, s in zip(self.names[start:], self.stages[start:]):
            t = time.perf_counter()
            batch = s.process(batch)
            self.busy[name] += time.perf_counter() - t
        return batch

    def process(self, batch: list[FramePacket]) -> list[FramePacket]:
        return self._through(batch, 0)

    def flush(self) -> list[FramePacket]:
        out: list[FramePacket] = []
        cascade(enumerate(s.flush for s in self.stages), lambda rest, i: out.extend(self._through(rest, i)))
        return out

    def close(self) -> None:
        for s in self.stages:
            s.close()


def fuse_chain(chain: Chain) -> Chain:
    """`chain` with every stage from the first ordered one on fused into one link (align, swap
    and blend of the face chain); the pooled stages before it stay apart."""
    first = next((i for i, lk in enumerate(chain) if lk.needs.ordered), len(chain))
    if first >= len(chain) - 1:
        return list(chain)
    rest = chain[first:]
    needs = reduce(lambda a, b: a | b, (lk.needs for lk in rest))
    return [*chain[:first], Link("+".join(lk.name for lk in rest),
                                 partial(FusedStage, [lk.factory for lk in rest]), needs)]
