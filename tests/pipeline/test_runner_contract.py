"""The runner contract (pipeline/runners/base.py): run(chain, source, sinks, policy) -> Report, the
end-of-stream cascade written once, several sinks fed alike, under the local and live runners."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from swapstream.core.packet import FramePacket
from swapstream.pipeline.live_stats import LiveStats
from swapstream.pipeline.runners.base import FanOut, Packets, built, cascade, merge_reports
from swapstream.pipeline.runners.live import LiveOptions, LiveRunner
from swapstream.pipeline.runners.local import LocalRunner
from swapstream.stages.base import Needs, Sink, Stage
from tests.collect import CollectSink


def packets(n: int) -> list[FramePacket]:
    return [FramePacket(i, i, Fraction(1, 30), np.full((8, 8, 3), i, np.uint8),
                        follows=i - 1 if i else None) for i in range(n)]


class HoldEvery(Stage):
    """Holds every `k`-th frame back until the end of the stream (a stage that holds frames)."""

    name = "hold"
    needs = Needs(ordered=True, holds=True)

    def __init__(self, k: int) -> None:
        self.k, self.held = k, []

    def process(self, batch):
        self.held += [p for p in batch if p.index % self.k == 0]
        return [p for p in batch if p.index % self.k]

    def flush(self):
        out, self.held = self.held, []
        return out


class Mark(Stage):
    """Adds 1 to every pixel: shows which frames went through the stages after the holder."""

    name = "mark"

    def process(self, batch):
        for p in batch:
            p.frame = p.frame + 1
        return batch


class Failing(Sink):
    name = "failing"

    def __init__(self) -> None:
        self.aborted = self.closed = False

    def process(self, batch):
        raise OSError("disk full")

    def abort(self):
        self.aborted = True

    def close(self):
        self.closed = True


def test_cascade_flushes_each_stage_through_the_rest_in_order():
    seen = []
    cascade([(0, lambda: []), (1, lambda: ["a"]), (2, lambda: ["b", "c"])],
            lambda rest, start: seen.append((rest, start)))
    assert seen == [(["a"], 2), (["b", "c"], 3)]


@pytest.mark.parametrize("runner", ["local", "live", "live-one-thread"])
def test_held_frames_reach_every_sink_through_the_later_stages(runner):
    """live-one-thread: one frame in flight, every stage in one thread (LiveRunner._stages)."""
    import threading
    one, two = CollectSink(keep_frames=100), CollectSink(keep_frames=100)
    mark = Mark()
    chain = [built(HoldEvery(4)), built(mark)]
    if runner == "local":
        report = LocalRunner(batch_size=3, progress=False).run(chain, Packets(packets(10)),
                                                               [built(one), built(two)])
        assert report.stats.frames == 10
    else:  # sinks that keep every frame, with room for all: the live runner loses none then
        for sink in (one, two):
            sink.keeps_every_frame = True
        stats = LiveStats(["hold", "mark"], ["memory", "memory"])
        names: set[str] = set()
        process = mark.process
        mark.process = lambda batch: (names.add(threading.current_thread().name), process(batch))[1]
        one_thread = runner == "live-one-thread"
        report = LiveRunner(stats, options=LiveOptions(sink_queue=64, in_flight=1 if one_thread else 2)).run(
            chain, Packets(packets(10)), [built(one), built(two)], "block")
        assert report.stats is stats
        # (the end's cascade of held frames runs in the main thread)
        assert names - {"MainThread"} == ({"stages"} if one_thread else {"stage-mark"}), names
        # timed per frame: all 10 through hold, the 7 it let go at once through mark (the held 3
        # go through mark in the end's cascade)
        assert len(stats.stages["hold"].all) == 10 and len(stats.stages["mark"].all) == 7
    for sink in (one, two):
        got = sorted(i for i, _ in sink.frames)
        assert got == list(range(10)), got  # the held ones (0, 4, 8) came out at the end
        assert all((f == i + 1).all() for i, f in sink.frames)  # each went through `mark` once


def test_a_failing_sink_aborts_every_sink_and_the_error_is_raised():
    good, bad = CollectSink(), Failing()
    with pytest.raises(OSError, match="disk full"):
        LocalRunner(batch_size=2, progress=False).run([built(Mark())], Packets(packets(4)),
                                                      [built(good), built(bad)])
    assert bad.aborted and bad.closed


def test_fan_out_reports_merge():
    fan = FanOut([CollectSink(), CollectSink()])
    assert fan.name == "memory+memory"
    assert merge_reports([{"faces": 2, "warnings": ["a"]}, {"faces": 3, "warnings": ["b"], "x": 1}]) == \
        {"faces": 5, "warnings": ["a", "b"], "x": 1}
