"""The local runner: every stage object in one process, in order. The reference for other runners.

Frames are pulled from the source in batches, pushed through each stage's process(), then into
the sink. At the end each stage's flush() output goes through the stages after it, then the
sink's flush() completes the output; on any error the sink's abort() discards it. Every stage and
the sink are closed at the end, whatever happened.

Back-pressure: under `block` (convert) the source is read as fast as the stages take it; under
`newest` (a live source) a capture thread reads it into a one-frame slot and a frame the stages
were too busy to take is dropped and counted (RunStats.dropped).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from itertools import islice

from tqdm import tqdm

from pipeline.backpressure import Closed, Continuity, Handoff, check_policy
from pipeline.chain import Chain, stage_name
from pipeline.stats import RunStats, StageStats
from stages.base import Sink, Stage
from stages.packet import FramePacket


def batches(it: Iterable[FramePacket], n: int) -> Iterator[list[FramePacket]]:
    it = iter(it)
    while batch := list(islice(it, n)):
        yield batch


def newest_first(packets: Iterable[FramePacket], stats: RunStats) -> Iterator[FramePacket]:
    """Read `packets` in a capture thread; yield only the newest frame each time one is asked for
    (the ones in between are dropped, counted in stats.dropped). Errors of the source are raised
    here, after the frames before them."""
    slot = Handoff("newest", 1)
    failure: list[BaseException] = []

    def capture() -> None:
        try:
            for p in packets:
                if not slot.put(p):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            failure.append(e)
        finally:
            slot.close()

    t = threading.Thread(target=capture, name="capture", daemon=True)
    t.start()
    cont = Continuity()
    try:
        while True:
            try:
                p = slot.get()
            except Closed:
                break
            stats.dropped = slot.dropped
            cont.admit(p)
            yield p
        stats.dropped = slot.dropped
        if failure:
            raise failure[0]
    finally:
        slot.close()


class LocalRunner:
    """Runs `stages` (built Stage objects) then `sink` over a source's packets."""

    def __init__(self, stages: list[Stage], sink: Sink, batch_size: int = 8, progress: bool = True,
                 total: int | None = None, desc: str = "convert", policy: str = "block") -> None:
        self.stages, self.sink = stages, sink
        self.batch_size = batch_size
        self.progress, self.total, self.desc = progress, total, desc
        self.policy = check_policy(policy)
        self.stats = RunStats(stages=[StageStats(stage_name(s)) for s in [*stages, sink]])

    def _through(self, batch: list[FramePacket], start: int) -> list[FramePacket]:
        for st, stats in zip(self.stages[start:] + [self.sink], self.stats.stages[start:]):
            t = time.perf_counter()
            batch = st.process(batch)
            stats.busy_s += time.perf_counter() - t
            stats.frames += len(batch)
        return batch

    def run(self, packets: Iterable[FramePacket]) -> RunStats:
        t0 = time.perf_counter()
        for st in [*self.stages, self.sink]:
            st.setup()
        self.stats.startup_s = time.perf_counter() - t0
        bar = tqdm(total=self.total, unit="frame", desc=self.desc, disable=not self.progress,
                   dynamic_ncols=True)
        if self.policy == "newest":  # one frame at a time, the newest there is
            packets, size = newest_first(packets, self.stats), 1
        else:
            size = self.batch_size
        try:
            for batch in batches(packets, size):
                self.stats.frames += len(self._through(batch, 0))
                bar.update(len(batch))
            for i, st in enumerate(self.stages):
                if rest := st.flush():
                    self.stats.stages[i].frames += len(rest)  # held back by it, out now
                    self.stats.frames += len(self._through(rest, i + 1))
                    bar.update(len(rest))
            self.sink.flush()
        finally:
            bar.close()
        self.stats.seconds = time.perf_counter() - t0
        return self.stats


def run_local(chain: Chain, packets: Iterable[FramePacket], sink: Sink, batch_size: int = 8,
              progress: bool = True, total: int | None = None, desc: str = "convert",
              policy: str = "block") -> tuple[RunStats, dict]:
    """Build the chain's stages here and run them into `sink`; returns the run's statistics and
    the sink's report. On an error the sink aborts (no output under the final name); the stages
    and the sink are closed whatever happens."""
    stages: list[Stage] = []
    try:
        stages = [lk.build() for lk in chain]
        runner = LocalRunner(stages, sink, batch_size, progress, total, desc=desc, policy=policy)
        stats = runner.run(packets)
    except BaseException:
        sink.abort()
        raise
    finally:
        for st in [*stages, sink]:
            st.close()
    return stats, sink.report()
