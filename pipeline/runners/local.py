"""The local runner: every stage object in one process, in order. The reference for other runners.

Frames are pulled from the source in batches, pushed through each stage's process(), then into
the sink. At the end each stage's flush() output goes through the stages after it, then the
sink's flush() completes the output; on any error the sink's abort() discards it. Every stage and
the sink are closed at the end, whatever happened.

Back-pressure: under `block` (convert) the source is read as fast as the stages take it; under
`newest` (a live source) a capture thread reads it into a one-frame slot and a frame the stages
were too busy to take is dropped and counted (RunStats.dropped).

Under `block` three threads share the work, so a second core is not idle while the stages run:
a reader decodes the next batches (PyAV and libswscale release the GIL), this thread runs the
stages, and a writer hands finished batches to the sink (x264 releases the GIL too). Batches pass
through bounded hand-offs, so memory stays bounded and order is kept: `AHEAD` batches decoded
ahead, and up to `SINK_AHEAD` waiting for the sink while they fit in `SINK_BUDGET` bytes of frames
(x264 encodes a frame in bursts of its own threads; with more finished frames queued for it, the
stages wait on it less). Any error of the source, a stage or the sink stops all three and is raised
here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice

from tqdm import tqdm

from swapstream.core.packet import FramePacket
from swapstream.core.process import SignalSafeThread
from swapstream.pipeline.chain import Chain, Link, stage_name
from swapstream.pipeline.runners.backpressure import Closed, Continuity, Handoff, check_policy
from swapstream.pipeline.runners.base import Report, Runner, cascade, one_sink
from swapstream.pipeline.stats import RunStats, StageStats
from swapstream.stages.base import Sink, Source, Stage

AHEAD = 2  # batches decoded ahead of the stages; at least as many wait for the sink
SINK_AHEAD = 4  # batches that may wait for the sink, while they fit in:
SINK_BUDGET = 300 * 2 ** 20  # bytes of frames (720p: 4 batches of 16; 1080p and up: AHEAD)


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

    t = SignalSafeThread(target=capture, name="capture", daemon=True)
    cont = Continuity()
    try:
        t.start()
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
        t.join_launched(timeout=2.0)  # the source is closed after this: not while it reads


class _LocalRun:
    """One run of built `stages` then `sink` over a source's packets (LocalRunner.run)."""

    def __init__(self, stages: list[Stage], sink: Sink, batch_size: int = 8, progress: bool = True,
                 total: int | None = None, desc: str = "convert", policy: str = "block",
                 threads: int = 0) -> None:
        self.stages, self.sink = stages, sink
        self.threads = threads  # > 0: each library thread pool's size during the run (runners.threads)
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
            if st is not self.sink:
                stats.faces += sum(len(p.faces) for p in batch)
        return batch

    def run(self, packets: Iterable[FramePacket]) -> RunStats:
        if not self.threads:
            return self._run(packets)
        from swapstream.pipeline.runners.threads import limited

        with limited(self.threads):
            return self._run(packets)

    def _run(self, packets: Iterable[FramePacket]) -> RunStats:
        t0 = time.perf_counter()
        for st in [*self.stages, self.sink]:
            st.setup()
        self.stats.startup_s = time.perf_counter() - t0
        bar = tqdm(total=self.total, unit="frame", desc=self.desc, disable=not self.progress,
                   dynamic_ncols=True)
        newest = None
        if self.policy == "newest":  # one frame at a time, the newest there is
            packets = newest = newest_first(packets, self.stats)
            size = 1
        else:
            size = self.batch_size
        try:
            if self.policy == "newest":  # one thread: the newest frame, through to the sink
                for batch in batches(packets, size):
                    self.stats.frames += len(self._through(batch, 0))
                    bar.update(len(batch))

                def through(rest: list[FramePacket], i: int) -> None:
                    self.stats.frames += len(self._through(rest, i))
                    bar.update(len(rest))

                cascade(self._flushes(), through)
                self.sink.flush()
            else:
                self._run_threaded(packets, size, bar)
        finally:
            if newest is not None:  # its capture thread joined now, before the caller closes the source
                newest.close()
            bar.close()
        self.stats.seconds = time.perf_counter() - t0
        return self.stats

    def _flushes(self):
        """(i, flush) of each stage for the end-of-stream cascade; a stage's held-back frames
        count as its own when they come out."""
        def flush(i: int, st: Stage) -> list[FramePacket]:
            rest = st.flush()
            self.stats.stages[i].frames += len(rest)
            return rest

        return [(i, lambda i=i, st=st: flush(i, st)) for i, st in enumerate(self.stages)]

    def _run_threaded(self, packets: Iterable[FramePacket], size: int, bar) -> None:
        """Reader thread -> stages here -> writer thread -> sink (see the module's docstring)."""
        reader = _Reader(batches(packets, size))
        writer = _Writer(self.sink, self.stats.stages[-1])

        def through(batch: list[FramePacket], start: int) -> None:
            for st, stats in zip(self.stages[start:], self.stats.stages[start:]):
                t = time.perf_counter()
                batch = st.process(batch)
                stats.busy_s += time.perf_counter() - t
                stats.frames += len(batch)
                stats.faces += sum(len(p.faces) for p in batch)
            if self.stats.frames == 0 and batch:
                writer.slot.capacity = sink_ahead(batch)
            writer.put(batch)
            self.stats.frames += len(batch)
            bar.update(len(batch))

        try:  # started inside: a stop signal during start() still joins the reader before the
            reader.start()  # source is closed (closing a generator another thread runs fails)
            writer.start()
            for batch in reader:
                through(batch, 0)
            cascade(self._flushes(), through)
            writer.finish()
        finally:
            reader.stop()
            writer.stop()
        self.sink.flush()


def sink_ahead(batch: list[FramePacket]) -> int:
    """Batches like this one that may wait for the sink: SINK_AHEAD while they fit in SINK_BUDGET
    (each frame with its decoded source, 1.5 bytes a pixel, where it carries one), never fewer
    than AHEAD."""
    f = batch[0].frame
    nbytes = len(batch) * f.nbytes * (1.5 if batch[0].source is not None else 1.0)
    return max(AHEAD, min(SINK_AHEAD, int(SINK_BUDGET // max(nbytes, 1))))


class _Reader(SignalSafeThread):
    """Pulls batches from the source in its own thread, up to AHEAD ahead; iterate it for them.
    An error of the source is raised by the iteration, after the batches before it."""

    def __init__(self, source: Iterator[list[FramePacket]]) -> None:
        super().__init__(name="decode", daemon=True)
        self.source = source
        self.slot = Handoff("block", AHEAD)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for batch in self.source:
                if not self.slot.put(batch):
                    return  # stopped
        except BaseException as e:  # noqa: BLE001 - raised in the stages' thread
            self.error = e
        finally:
            self.slot.close()

    def __iter__(self) -> Iterator[list[FramePacket]]:
        while True:
            try:
                yield self.slot.get()
            except Closed:
                break
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        self.slot.close()
        self.join_launched()


class _Writer(SignalSafeThread):
    """Hands batches to the sink in its own thread, in order, `slot.capacity` at most waiting
    (AHEAD until the first batch sets it: sink_ahead)."""

    def __init__(self, sink: Sink, stats: StageStats) -> None:
        super().__init__(name="encode", daemon=True)
        self.sink, self.stats = sink, stats
        self.slot = Handoff("block", AHEAD)
        self.error: BaseException | None = None
        self._stopped = False

    def run(self) -> None:
        try:
            while not self._stopped:
                try:
                    batch = self.slot.get()
                except Closed:
                    return
                t = time.perf_counter()
                self.sink.process(batch)
                self.stats.busy_s += time.perf_counter() - t
                self.stats.frames += len(batch)
        except BaseException as e:  # noqa: BLE001 - raised in the stages' thread
            self.error = e
        finally:
            self.slot.close()

    def put(self, batch: list[FramePacket]) -> None:
        if not self.slot.put(batch) or self.error is not None:
            self.finish()  # raises the sink's error
            raise RuntimeError("the sink stopped taking frames")

    def finish(self) -> None:
        """Wait until every batch is in the sink; raise the sink's error if it failed."""
        self.slot.close()
        self.join()
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        """Stop at once (after an error elsewhere): batches still waiting are not written."""
        self._stopped = True
        self.slot.close()
        self.join_launched()


class LocalRunner(Runner):
    """Every stage object in this process (see the module docstring): the reference runner.
    batch_size: frames a batch; threads > 0: each library's thread pool size during the run
    (pipeline.runners.threads; convert gives half the CPUs); total, desc: the progress bar's."""

    def __init__(self, batch_size: int = 8, progress: bool = True, total: int | None = None,
                 desc: str = "convert", threads: int = 0) -> None:
        self.batch_size, self.progress, self.total, self.desc = batch_size, progress, total, desc
        self.threads = threads

    def run(self, chain: Chain, source: Source, sinks: Sequence[Link], policy: str = "block") -> Report:
        """Build the chain's stages and the sinks here and run them; on an error every sink aborts
        (no output under the final name); stages and sinks are closed whatever happens."""
        stages: list[Stage] = []
        sink = one_sink(sinks).build()
        try:
            stages = [lk.build() for lk in chain]
            run = _LocalRun(stages, sink, self.batch_size, self.progress, self.total, desc=self.desc,
                            policy=policy, threads=self.threads)
            stats = run.run(source.packets())
        except BaseException:
            sink.abort()
            raise
        finally:
            for st in [*stages, sink]:
                st.close()
        return Report(stats, sink.report())
