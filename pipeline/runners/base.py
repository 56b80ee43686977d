"""The runner contract: what the local, Ray and live runners all do, and the parts they share.

    runner.run(chain, source, sinks, policy) -> Report

- `chain`: the stages as Links (pipeline.chain), built where the runner places them: in this
  process (local, live) or in Ray actors.
- `source`: an opened Source (stages.base); the runner reads `source.packets()`. Whoever opened
  it closes it; a runner may close it early to stop a capture (close is idempotent).
- `sinks`: one or more Links to sinks; every packet goes to each, in order. At the end every
  sink's flush() completes its output, or, after an error, abort() discards it (no half-written
  file under the final name); every stage and sink is closed whatever happened.
- `policy`: the back-pressure policy (pipeline.runners.backpressure): `block` loses nothing
  (memory bounded by the batches in flight), `newest` drops the frames the chain cannot take in
  time and counts them.
- The Report holds the run's statistics and what the sinks said.

The end-of-stream cascade (flush a stage, push what it held back through the stages after it)
is `cascade`, written once for every runner and the fused stage.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from swapstream.core.packet import FramePacket
from swapstream.pipeline.chain import Chain, Link
from swapstream.stages.base import Needs, Sink, Source, Stage


@dataclass
class Report:
    """What a run returns. stats: pipeline.stats.RunStats (local, Ray) or
    pipeline.live_stats.LiveStats (live); sinks: the sinks' reports merged in their order (counts
    add up, "warnings" lists are joined)."""

    stats: Any
    sinks: dict = field(default_factory=dict)


class Runner(ABC):
    """Runs a chain from a source to sinks under a back-pressure policy (module docstring)."""

    @abstractmethod
    def run(self, chain: Chain, source: Source, sinks: Sequence[Link], policy: str = "block") -> Report:
        """Run until the source ends (or the run is stopped); see the module docstring."""


def cascade(flushes: Iterable[tuple[int, Callable[[], list[FramePacket]]]],
            through: Callable[[list[FramePacket], int], Any]) -> None:
    """The end of the stream: for each (i, flush) in stage order, the packets stage i held back
    go through the stages after it: through(packets, i + 1)."""
    for i, flush in flushes:
        if rest := flush():
            through(rest, i + 1)


class Packets(Source):
    """A source over packets already made (a list, a generator): for programs and tests."""

    name: ClassVar[str] = "packets"

    def __init__(self, packets: Iterable[FramePacket]) -> None:
        self._packets = packets

    def open(self) -> None:
        return None

    def packets(self) -> Iterator[FramePacket]:
        yield from self._packets


class FanOut(Sink):
    """Several sinks as one: each packet to each, in order; flush, abort and close reach all of
    them (abort and close even when one fails); report() merges theirs."""

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = list(sinks)
        self.name = "+".join(s.name for s in self.sinks)
        self.needs = Needs(ordered=True)

    def setup(self) -> None:
        for s in self.sinks:
            s.setup()

    def process(self, batch: list[FramePacket]) -> list[FramePacket]:
        for s in self.sinks:
            s.process(batch)
        return batch

    def flush(self) -> list[FramePacket]:
        for s in self.sinks:
            s.flush()
        return []

    def abort(self) -> None:
        _each(self.sinks, "abort")

    def close(self) -> None:
        _each(self.sinks, "close")

    def limit_threads(self, n: int) -> None:
        for s in self.sinks:
            s.limit_threads(n)

    def report(self) -> dict:
        return merge_reports(s.report() for s in self.sinks)


def _each(sinks: Sequence[Sink], method: str) -> None:
    """Call `method` on every sink; the first error is raised after all were called."""
    error: BaseException | None = None
    for s in sinks:
        try:
            getattr(s, method)()
        except BaseException as e:  # noqa: BLE001 - raised below, after the others
            error = error or e
    if error is not None:
        raise error


def merge_reports(reports: Iterable[dict]) -> dict:
    """Sinks' reports as one: numbers add up, lists are joined, anything else: the first wins."""
    out: dict = {}
    for r in reports:
        for k, v in r.items():
            if k not in out:
                out[k] = list(v) if isinstance(v, list) else v
            elif isinstance(v, list):
                out[k] += v
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                out[k] += v
    return out


def one_sink(sinks: Sequence[Link]) -> Link:
    """The sinks as one Link: the sink itself, or a FanOut of them built together."""
    if not sinks:
        raise ValueError("a run needs at least one sink")
    if len(sinks) == 1:
        return sinks[0]
    factories = [lk.factory for lk in sinks]
    return Link("+".join(lk.name for lk in sinks), _FanOutFactory(factories), Needs(ordered=True))


@dataclass(frozen=True)
class _FanOutFactory:
    """Builds a FanOut of the sinks `factories` make (picklable, for a sink in a Ray actor)."""

    factories: list

    def __call__(self) -> FanOut:
        return FanOut([f() for f in self.factories])


def built(stage: Stage) -> Link:
    """A Link to a stage object that already exists (one a caller built to wire it up, e.g. live's
    controls); for runners in this process only."""
    return Link(getattr(stage, "name", type(stage).__name__), lambda: stage, stage.needs)
