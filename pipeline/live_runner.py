"""The live runner: a live source through the stages to any number of sinks, over threads.

    capture ──newest slot──> stage 1 ──> stage 2 ──> ... ──> output ──> sink queue ──> sink
    (thread)  (drops stale)  (thread)    (thread)            (thread)   (one per sink, each its thread)

- Every stage runs in its own thread, one frame at a time, handing on through one-frame queues
  (`block`), so both cores work while one frame's latency stays near the sum of its stage times.
  MediaPipe, OpenCV, torch and the codecs release the GIL in their heavy calls.
- Back-pressure policy `newest` (the default): the capture thread keeps only the newest frame; a
  frame the first stage could not take in time is dropped and counted, so nothing queues behind
  a slow stage and latency cannot grow over a session. `block` takes every frame (a file source
  then plays slower than real time if the stages are slow).
- Sinks: a display sink (window, virtual camera) gets a one-frame `newest` queue: if it is slow
  it skips frames, never slows the others. Sinks that keep every frame or take audio (record,
  stream, web page) get a short `block` queue. A sink with `main_thread` (an OpenCV window:
  macOS draws windows only from the main thread) is driven by the runner's main loop.
- `delay_ms`: the output thread releases each frame at its capture time + delay (smooth, even
  playout); frames already late go at once and are counted.
- Audio (the source's own, or a microphone) is released to the sinks in step with the video: an
  audio chunk goes out when the video frame captured at the same moment does, i.e. delayed by
  the video's own latency, so lips stay in sync. Audio older than a second goes out anyway.
- It ends on the source's end (a file: normal end), `duration`, the quit control, Ctrl-C
  (KeyboardInterrupt: a normal end), or an error. Then sinks are flushed, so a recording is
  complete and playable, also after the camera was lost (the SourceLost error is raised after).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from pipeline.backpressure import Closed, Continuity, Handoff, check_policy
from pipeline.live_stats import LiveStats
from stages.base import Sink, Source, Stage
from stages.controls import Controls
from stages.packet import FramePacket

POLL_S = 0.05  # how often blocked threads look at the stop flag
AUDIO_MAX_WAIT_S = 1.0  # audio waits at most this long for its video


@dataclass
class LiveOptions:
    policy: str = "newest"
    delay_ms: float = 0.0
    duration: float | None = None  # seconds; None: until the source ends or the user quits
    sink_queue: int = 8  # frames a keep-every-frame sink may fall behind before it slows the chain
    on_capture: object = None  # called with each captured packet before it enters (instrumentation)


class AudioGate:
    """Holds audio chunks until the video captured at the same time is delivered."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._chunks: deque = deque()

    def push(self, chunk) -> None:
        with self._lock:
            self._chunks.append(chunk)

    def release(self, until: float | None) -> list:
        """Chunks captured before `until` (monotonic seconds), and any older than AUDIO_MAX_WAIT_S."""
        stale = time.monotonic() - AUDIO_MAX_WAIT_S
        out = []
        with self._lock:
            while self._chunks and (self._chunks[0].capture_time < stale
                                    or (until is not None and self._chunks[0].capture_time <= until)):
                out.append(self._chunks.popleft())
        return out

    def rest(self) -> list:
        with self._lock:
            out, self._chunks = list(self._chunks), deque()
        return out


class LiveRunner:
    """Runs `stages` over `source` into `sinks`; see the module docstring. `audio_source`, if
    given, is an iterable of AudioChunks read in its own thread (a microphone)."""

    def __init__(self, source: Source, stages: list[Stage], sinks: list[Sink], stats: LiveStats,
                 controls: Controls | None = None, options: LiveOptions | None = None,
                 audio_source=None, audio_gate: AudioGate | None = None) -> None:
        self.source, self.stages, self.sinks = source, stages, sinks
        self.stats = stats
        self.controls = controls or Controls()
        self.opt = options or LiveOptions()
        check_policy(self.opt.policy)
        self.audio_source = audio_source
        self.audio = audio_gate or AudioGate()  # a source's own audio is pushed into it
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._failed_sinks: set[int] = set()
        self._threads: list[threading.Thread] = []
        self.ended_by = ""

    # ------------------------------------------------------------------------------ threads
    def _spawn(self, name: str, fn, *args) -> threading.Thread:
        def body() -> None:
            try:
                fn(*args)
            except BaseException as e:  # noqa: BLE001 - raised by run() after the outputs close
                self._errors.append(e)
                self._stop.set()

        t = threading.Thread(target=body, name=name, daemon=True)
        t.start()
        self._threads.append(t)
        return t

    def _get(self, q: Handoff):
        """The next item of `q`; None when the run stops or `q` is closed and drained."""
        while True:
            try:
                return q.get(timeout=POLL_S)
            except TimeoutError:
                if self._stop.is_set():
                    return None
            except Closed:
                return None

    def _put(self, q: Handoff, item) -> bool:
        while not q.put(item, timeout=POLL_S):
            if self._stop.is_set() or q.closed:
                return False
        return True

    def _capture(self, out: Handoff) -> None:
        try:
            for p in self.source.packets():
                self.stats.frame_captured(p.capture_time if p.capture_time is not None else time.monotonic())
                if self.opt.on_capture is not None:
                    self.opt.on_capture(p)
                out.put(p)  # `newest`: never waits, drops the frame nobody took
                self.stats.set_capture_drops(out.dropped)
                if self._stop.is_set():
                    return
            self.ended_by = self.ended_by or "end of input"
        finally:
            out.close()

    def _read_audio(self) -> None:
        for chunk in self.audio_source:
            self.audio.push(chunk)
            if self._stop.is_set():
                return

    def _stage(self, stage: Stage, inq: Handoff, outq: Handoff, first: bool) -> None:
        cont = Continuity()
        try:
            while (p := self._get(inq)) is not None:
                if first:
                    cont.admit(p)  # frames dropped before the chain: continue the last one in
                    self.stats.frame_taken()
                t = time.perf_counter()
                [p] = stage.process([p])
                self.stats.stage_time(stage.name, 1000 * (time.perf_counter() - t))
                if not self._put(outq, p):
                    return
        finally:
            outq.close()

    def _output(self, inq: Handoff, queues: list[Handoff]) -> None:
        """Release frames (at capture time + delay) and their audio to every sink's queue."""
        delay = self.opt.delay_ms / 1000
        try:
            while True:
                try:
                    p = inq.get(timeout=POLL_S)
                except TimeoutError:
                    self._send_audio(self.audio.release(None), queues)
                    if self._stop.is_set():
                        return
                    continue
                except Closed:
                    break
                if delay and p.capture_time is not None:
                    wait = p.capture_time + delay - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    elif wait < -0.005:
                        self.stats.late += 1
                self._send_audio(self.audio.release(p.capture_time), queues)
                self.stats.frame_out(len(p.faces))
                for q in queues:
                    q.put(p)  # a `newest` queue replaces what its sink has not taken
            self._send_audio(self.audio.rest(), queues)
        finally:
            for q in queues:
                q.close()

    def _send_audio(self, chunks: list, queues: list[Handoff]) -> None:
        for chunk in chunks:
            for sink, q in zip(self.sinks, queues):
                if sink.wants_audio:
                    q.put(chunk)

    def _deliver(self, k: int, item) -> None:
        sink = self.sinks[k]
        try:
            if isinstance(item, FramePacket):
                sink.process([item])
                self.stats.delivered_to(sink.name, item.capture_time)
            else:
                sink.audio(item)
        except BaseException:
            self._failed_sinks.add(k)
            raise

    def _sink(self, k: int, q: Handoff) -> None:
        while True:
            try:
                item = q.get(timeout=POLL_S)
            except TimeoutError:
                if self._stop.is_set():
                    return
                self.sinks[k].idle()
                continue
            except Closed:
                return
            self._deliver(k, item)

    # ---------------------------------------------------------------------------------- run
    def run(self) -> LiveStats:
        """Run until the end (see the module docstring). Sinks are flushed, so outputs are
        complete, except a sink that failed, which aborts; then the first error is raised
        (SourceLost: exit 1 in the CLI)."""
        try:
            for st in [*self.stages, *self.sinks]:
                st.setup()
        except BaseException:
            self._close_all(abort=True)
            raise
        slot = Handoff(self.opt.policy, 1)
        keep = [s.keeps_every_frame or s.wants_audio for s in self.sinks]
        sink_qs = [Handoff("block", self.opt.sink_queue) if k else Handoff("newest", 1) for k in keep]
        for s, q in zip(self.sinks, sink_qs):
            q.on_drop = lambda _item, name=s.name: self.stats.drop(f"sink:{name}")
        self._spawn("capture", self._capture, slot)
        if self.audio_source is not None:
            self._spawn("audio", self._read_audio)
        prev = slot
        for i, st in enumerate(self.stages):
            q = Handoff("block", 1)
            self._spawn(f"stage-{st.name}", self._stage, st, prev, q, i == 0)
            prev = q
        workers = [self._spawn("output", self._output, prev, sink_qs)]
        main = [(k, q) for k, (s, q) in enumerate(zip(self.sinks, sink_qs)) if s.main_thread]
        workers += [self._spawn(f"sink-{s.name}", self._sink, k, q)
                    for k, (s, q) in enumerate(zip(self.sinks, sink_qs)) if not s.main_thread]
        try:
            self._main_loop(main, workers, self.opt.duration)
        except KeyboardInterrupt:
            self.ended_by = "Ctrl-C"
        self._stop.set()
        slot.close()
        for t in self._threads:
            t.join(timeout=2.0)
        self.stats.ended = time.monotonic()
        self.stats.camera_fps = getattr(self.source, "measured_fps", None)
        self._close_all(abort=False)
        if self._errors:
            raise self._errors[0]
        return self.stats

    def _main_loop(self, main: list, workers: list[threading.Thread], duration: float | None) -> None:
        """Wait for the end; `duration` counts from the first frame captured (after set-up)."""
        while True:
            if main:
                for k, q in main:
                    self._pump(k, q)
            else:
                time.sleep(POLL_S)
            if self._errors:
                self.ended_by = self.ended_by or "error"
                return
            if self.controls.quit.is_set():
                self.ended_by = "quit"
                return
            if duration is not None and self.stats.captured and \
                    time.monotonic() >= self.stats.started + duration:
                self.ended_by = "duration"
                return
            if not any(t.is_alive() for t in workers) and all(q.closed and not len(q) for _, q in main):
                return  # the source ended and every frame went out

    def _pump(self, k: int, q: Handoff) -> None:
        """Drive a main-thread sink: deliver what waits for it, else let it idle (draw, keys)."""
        try:
            item = q.get(timeout=POLL_S / 2)
        except (TimeoutError, Closed):
            self.sinks[k].idle()
            return
        self._deliver(k, item)

    def _close_all(self, abort: bool) -> None:
        """Flush every sink (complete its output) or abort it, then close stages, sinks, source."""
        try:
            for k, s in enumerate(self.sinks):
                try:
                    if abort or k in self._failed_sinks:
                        s.abort()
                    else:
                        s.flush()
                except Exception as e:  # noqa: BLE001 - one sink must not keep the others open
                    self._errors.append(e)
                    s.abort()
        finally:
            for st in [*self.stages, *self.sinks]:
                st.close()
            self.source.close()
