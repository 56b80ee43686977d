"""The live runner: a live source through the stages to any number of sinks, over threads.

    capture ──newest slot──> stage 1 ──> stage 2 ──> ... ──> output ──> sink queue ──> sink
    (thread)  (drops stale)  (thread)    (thread)            (thread)   (one per sink, each its thread)

- Every stage runs in its own thread, one frame at a time, handing on through one-frame queues
  (`block`). At most `in_flight` frames are in the chain at once (live: 2, or 1 with the
  browser's camera; pipeline.config.live_in_flight): two are enough for both cores to work (one
  frame in detect while the one before it is swapped and blended), few enough that one frame's
  latency stays near the sum of its stage times whichever stage is the slow one. With one frame
  in flight the stages never overlap, so they share one thread (`_stages`): no hand-offs.
  MediaPipe, OpenCV, torch and the codecs release the GIL in their heavy calls.
- Back-pressure policy `newest` (the default): the capture thread keeps only the newest frame; a
  frame the first stage could not take in time is dropped and counted, so nothing queues behind
  a slow stage and latency cannot grow over a session. `block` takes every frame (a file source
  then plays slower than real time if the stages are slow).
- Sinks: each has its own thread and queue, and no sink ever makes the chain wait: a display
  (window, virtual camera, web page) gets a one-frame `newest` queue, so if it is slow it skips
  frames; a sink that keeps every frame (record, stream) gets a few frames of room and loses
  (and counts) frames only when it stays behind. A sink with `main_thread` (an OpenCV window:
  macOS draws windows only from the main thread) is driven by the runner's main loop.
- `delay_ms`: the output thread releases each frame at its capture time + delay (smooth, even
  playout); frames already late go at once and are counted.
- Audio (the source's own, or a microphone) is released to the sinks in step with the video: an
  audio chunk goes out when the video frame captured at the same moment does, i.e. delayed by
  the video's own latency, so lips stay in sync. Audio older than a second goes out anyway.
- It ends on the source's end (a file: normal end), `duration`, the quit control, Ctrl-C, SIGTERM
  or SIGHUP (KeyboardInterrupt, swapstream.core.process: a normal end), or an error. Then sinks
  are flushed, so a recording is complete and playable, also after the camera was lost (the
  SourceLost error is raised after); a signal that comes while they are flushed is not raised.
- A sink that fails (a full disk, a vanished receiver) stops alone: one line says why, what it
  wrote is completed where it can be (a recording stays playable) and the other outputs go on.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from swapstream.core.errors import OutputLost
from swapstream.core.packet import FramePacket
from swapstream.core.process import SignalSafeThread, holding_stops, how_interrupted
from swapstream.pipeline.chain import Chain, Link
from swapstream.pipeline.live_stats import LiveStats
from swapstream.pipeline.runners.backpressure import Closed, Continuity, Handoff, check_policy
from swapstream.pipeline.runners.base import Report, Runner, cascade, merge_reports
from swapstream.stages.base import Sink, Source, Stage
from swapstream.stages.sinks.controls import Controls

SWITCH_S = 0.001  # GIL switch interval while running
POLL_S = 0.05  # how often blocked threads look at the stop flag
AUDIO_MAX_WAIT_S = 1.0  # audio waits at most this long for its video


@dataclass
class LiveOptions:
    delay_ms: float = 0.0
    duration: float | None = None  # seconds; None: until the source ends or the user quits
    sink_queue: int = 8  # frames a keep-every-frame sink may fall behind before it loses the oldest
    on_capture: object = None  # called with each captured packet before it enters (instrumentation)
    in_flight: int = 2  # frames in the chain at once: two keep both cores busy; more only add latency
    on_ready: object = None  # called once every stage and sink is set up, before the first frame
    on_output_failed: object = None  # called with the one line that says an output stopped


def _why(err: BaseException) -> str:
    """An error as a short phrase: an OSError's own words ('File too large', 'Broken pipe')."""
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return " ".join(str(text).split())


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


class _Feed:
    """What the output thread hands one sink: frames (a `newest` queue: one frame for a display,
    a few for a sink that keeps every frame, which then loses frames only when it stays behind),
    and audio (never dropped in practice: ~20 s of room), delivered before the frame it precedes."""

    def __init__(self, sink: Sink, frames: int, on_drop) -> None:
        self.sink = sink
        self.frames = Handoff("newest", frames, on_drop)
        self.audio = Handoff("newest", 1024)
        self._pending: deque = deque()

    def audio_waiting(self) -> bool:
        return bool(self._pending) or len(self.audio) > 0

    def audio_until(self, t: float | None) -> list:
        """Chunks captured up to time `t` (all when None), in order."""
        while len(self.audio):
            try:
                self._pending.append(self.audio.get(timeout=0))
            except (TimeoutError, Closed):
                break
        out = []
        while self._pending and (t is None or self._pending[0].capture_time <= t):
            out.append(self._pending.popleft())
        return out

    def close(self) -> None:
        self.frames.close()
        self.audio.close()


class LiveRunner(Runner):
    """Runs a chain over a live source into sinks, over threads; see the module docstring.
    stats: the session's LiveStats (outputs read it while it runs); `audio_source`, if given, is
    an iterable of AudioChunks read in its own thread (a microphone)."""

    def __init__(self, stats: LiveStats, controls: Controls | None = None, options: LiveOptions | None = None,
                 audio_source=None, audio_gate: AudioGate | None = None) -> None:
        self.stats = stats
        self.controls = controls or Controls()
        self.opt = options or LiveOptions()
        self.policy = "newest"
        self.audio_source = audio_source
        self.audio = audio_gate or AudioGate()  # a source's own audio is pushed into it
        self._stop = threading.Event()
        # Admission: while the chain holds in_flight frames, new ones wait in the newest slot
        # (and are replaced there): frames never queue inside the chain, whichever stage is slow.
        self._room = threading.Semaphore(max(1, self.opt.in_flight))
        self._room_lock = threading.Lock()
        self._held: dict[int, FramePacket] = {}  # frames a stage holds back, by id (kept alive here)
        self._errors: list[BaseException] = []
        self._failed_sinks: set[int] = set()
        self._salvaged: set[int] = set()
        self.failures: list[str] = []  # one line per output that stopped early
        self._threads: list[SignalSafeThread] = []
        self.ended_by = ""

    # ------------------------------------------------------------------------------ threads
    def _spawn(self, name: str, fn, *args) -> threading.Thread:
        def body() -> None:
            try:
                fn(*args)
            except BaseException as e:  # noqa: BLE001 - raised by run() after the outputs close
                self._errors.append(e)
                self._stop.set()

        t = SignalSafeThread(target=body, name=name, daemon=True)
        self._threads.append(t)  # before start(): a stop signal inside start() still joins it
        t.start()
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

    def _admit(self) -> bool:
        """Wait for room in the chain (at most in_flight frames in it); False when stopping."""
        while not self._room.acquire(timeout=POLL_S):
            if self._stop.is_set():
                return False
        return True

    def _hold(self, p: FramePacket) -> None:
        """A stage holds frame `p` back: it no longer counts against in_flight (nor again when
        the stage lets it go)."""
        with self._room_lock:
            self._held[id(p)] = p
        self._room.release()

    def _left_chain(self, p: FramePacket) -> None:
        """Frame `p` went out of the chain: room for the next one, unless it was held (counted then)."""
        with self._room_lock:
            if self._held.get(id(p)) is p:
                del self._held[id(p)]
                return
        self._room.release()

    def _stages(self, stages: list[Stage], inq: Handoff, outq: Handoff, first: bool) -> None:
        """Run `stages` in this thread, frame by frame: one stage a thread (two frames in
        flight), or every stage in one (one frame in flight: the stages never run at once then,
        and a thread each only adds hand-offs, each a wake-up that waits for a core and the GIL
        on a busy machine). first: this thread takes frames into the chain. A frame a stage
        holds back no longer takes room in the chain."""
        cont = Continuity()
        try:
            while (not first or self._admit()) and (p := self._get(inq)) is not None:
                if first:
                    cont.admit(p)  # frames dropped before the chain: continue the last one in
                    self.stats.frame_taken()
                batch = [p]
                for stage in stages:
                    out: list[FramePacket] = []
                    for q in batch:
                        t = time.perf_counter()
                        out += stage.process([q])
                        self.stats.stage_time(stage.name, 1000 * (time.perf_counter() - t))
                    batch = out
                if not any(q is p for q in batch):  # held back: it no longer takes room
                    self._hold(p)
                for q in batch:
                    if not self._put(outq, q):
                        return
        finally:
            outq.close()

    def _output(self, inq: Handoff, feeds: list[_Feed]) -> None:
        """Release frames (at capture time + delay) and their audio to every sink's feed."""
        delay = self.opt.delay_ms / 1000
        try:
            while True:
                try:
                    p = inq.get(timeout=POLL_S)
                except TimeoutError:
                    self._send_audio(self.audio.release(None), feeds)
                    if self._stop.is_set():
                        return
                    continue
                except Closed:
                    break
                self._left_chain(p)  # the first stage may take the next frame
                if delay and p.capture_time is not None:
                    wait = p.capture_time + delay - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    elif wait < -0.005:
                        self.stats.late += 1
                self._send_audio(self.audio.release(p.capture_time), feeds)
                self.stats.frame_out(len(p.faces))
                for f in feeds:
                    f.frames.put(p)  # never waits: a sink that fell behind loses its oldest frame
            self._send_audio(self.audio.rest(), feeds)
        finally:
            for f in feeds:
                f.close()

    def _send_audio(self, chunks: list, feeds: list[_Feed]) -> None:
        for chunk in chunks:
            for f in feeds:
                if f.sink.wants_audio:
                    f.audio.put(chunk)

    def _deliver(self, k: int, p: FramePacket | None, feed: _Feed) -> None:
        """Audio due before frame `p` (all of it when p is None), then p."""
        sink = self.sinks[k]
        try:
            for chunk in feed.audio_until(None if p is None else p.capture_time):
                sink.audio(chunk)
            if p is not None:
                sink.process([p])
                self.stats.delivered_to(sink.name, p.capture_time)
        except BaseException:
            self._failed_sinks.add(k)
            raise

    def _sink(self, k: int, feed: _Feed) -> None:
        try:
            self._sink_loop(k, feed)
        except Exception as err:  # noqa: BLE001 - this output stops; the others go on
            self._sink_failed(k, feed, err)

    def _sink_failed(self, k: int, feed: _Feed | None, err: Exception) -> None:
        """Output k failed (a full disk, a vanished receiver): it stops alone. What it wrote is
        kept where it can be (Sink.salvage), one line says so, the others go on; when no output
        is left the session ends with the error."""
        sink = self.sinks[k]
        self._failed_sinks.add(k)
        self._salvaged.add(k)
        if feed is not None:
            feed.close()
        try:
            kept = sink.salvage()
        except Exception as e:  # noqa: BLE001 - the line below is what matters
            kept = f"its output could not be kept ({_why(e)})"
        others = len(self.sinks) - len(self._failed_sinks)
        what = f"output {sink.name} stopped: {_why(err)}; {kept}"
        self.failures.append(what)
        if not others:  # the session ends with it: the CLI prints it, exit 1
            self._errors.append(OutputLost(f"{what}; no other output was left, so the session ended"))
            self._stop.set()
        elif self.opt.on_output_failed is not None:
            rest = "the other output goes on" if others == 1 else f"the other {others} outputs go on"
            self.opt.on_output_failed(f"live: {what}; {rest}")

    def _sink_loop(self, k: int, feed: _Feed) -> None:
        while True:
            try:
                p = feed.frames.get(timeout=POLL_S)
            except TimeoutError:
                if self._stop.is_set():
                    return
                if feed.audio_waiting():
                    self._deliver(k, None, feed)  # no video for a while: audio goes on
                else:
                    self.sinks[k].idle()
                continue
            except Closed:
                self._deliver(k, None, feed)
                return
            self._deliver(k, p, feed)

    # ---------------------------------------------------------------------------------- run
    def run(self, chain: Chain, source: Source, sinks: Sequence[Link], policy: str = "newest") -> Report:
        """Run until the end (see the module docstring). Sinks are flushed, so outputs are
        complete, except a sink that failed, which aborts; then the first error is raised
        (SourceLost: exit 1 in the CLI). The report's stats are the LiveStats."""
        self.policy = check_policy(policy)
        self.source, self.stages, self.sinks = source, [], []
        try:
            self.stages = [lk.build() for lk in chain]
            self.sinks = [lk.build() for lk in sinks]
            for st in [*self.stages, *self.sinks]:
                st.setup()
        except BaseException:
            self._close_all(abort=True)
            raise
        if self.opt.on_ready is not None:
            self.opt.on_ready()
        # A dozen threads hand frames on; with Python's default 5 ms GIL switch interval each
        # hand-off may wait 5 ms for a thread busy in Python (measured with the web page:
        # 1 ms took browser latency p50 from 106 to 70 ms, p95 173 -> 128).
        switch = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_S)
        try:
            self._run()
        finally:
            sys.setswitchinterval(switch)
        return Report(self.stats, merge_reports(s.report() for s in self.sinks))

    def _run(self) -> None:
        slot = Handoff(self.policy, 1)
        feeds = [_Feed(s, self.opt.sink_queue if s.keeps_every_frame else 1,
                       lambda _p, name=s.name: self.stats.drop(f"sink:{name}")) for s in self.sinks]
        try:  # threads start inside: a stop signal while they start still completes the outputs
            self._spawn("capture", self._capture, slot)
            if self.audio_source is not None:
                self._spawn("audio", self._read_audio)
            prev = slot
            one_thread = self.opt.in_flight == 1 and len(self.stages) > 1  # see _stages
            for i, group in enumerate([self.stages] if one_thread else [[st] for st in self.stages]):
                q = Handoff("block", 1)
                name = "stages" if len(group) > 1 else f"stage-{group[0].name}"
                self._spawn(name, self._stages, group, prev, q, i == 0)
                prev = q
            workers = [self._spawn("output", self._output, prev, feeds)]
            main = [(k, f) for k, f in enumerate(feeds) if f.sink.main_thread]
            workers += [self._spawn(f"sink-{f.sink.name}", self._sink, k, f)
                        for k, f in enumerate(feeds) if not f.sink.main_thread]
            self._main_loop(main, workers, self.opt.duration)
        except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM, SIGHUP
            self.ended_by = how_interrupted(e)
        with holding_stops():  # the outputs are completed whatever comes now
            self._stop.set()
            slot.close()
            wake = getattr(self.source, "wake", None)
            if wake is not None:  # a source waiting for frames that may never come (a page's camera)
                wake()
            for t in self._threads:
                t.join_launched(timeout=2.0)
            self.stats.ended = time.monotonic()
            self.stats.camera_fps = getattr(self.source, "measured_fps", None)
            self._close_all(abort=False)
        if self._errors:
            raise self._errors[0]

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
            if not any(t.is_alive() for t in workers) and all(
                    (f.frames.closed and not len(f.frames)) or k in self._salvaged for k, f in main):
                return  # the source ended and every frame went out

    def _cascade(self) -> None:
        """What the stages held back at the end (live stages hold nothing today), through the
        stages after the one that held it and straight to every sink still working."""
        def through(rest: list[FramePacket], start: int) -> None:
            for st in self.stages[start:]:
                rest = st.process(rest)
            for k, s in enumerate(self.sinks):
                if k not in self._failed_sinks:
                    s.process(rest)

        try:
            cascade(enumerate(st.flush for st in self.stages), through)
        except Exception as e:  # noqa: BLE001 - the outputs are still completed
            self._errors.append(e)

    def _pump(self, k: int, feed: _Feed) -> None:
        """Drive a main-thread sink: deliver what waits for it, else let it idle (draw, keys)."""
        if k in self._salvaged:
            return
        try:
            p = feed.frames.get(timeout=POLL_S / 2)
        except (TimeoutError, Closed):
            p = None
        try:
            if p is None:
                self.sinks[k].idle()
            else:
                self._deliver(k, p, feed)
        except Exception as err:  # noqa: BLE001 - this output stops; the others go on
            self._sink_failed(k, feed, err)

    def _close_all(self, abort: bool) -> None:
        """The end-of-stream cascade (frames a stage held back, through the rest, to every sink),
        then flush every sink (complete its output) or abort it; then close stages, sinks, source."""
        try:
            if not abort:
                self._cascade()
            for k, s in enumerate(self.sinks):
                if k in self._salvaged:
                    continue  # stopped alone when it failed, what it wrote kept then
                try:
                    if abort or k in self._failed_sinks:
                        s.abort()
                    else:
                        s.flush()  # a recording's last fragment may not fit on the disk either
                except Exception as e:  # noqa: BLE001 - one sink must not keep the others open
                    if abort or k in self._failed_sinks:
                        self._errors.append(e)
                        s.abort()
                    else:
                        self._sink_failed(k, None, e)
        finally:
            for st in [*self.stages, *self.sinks]:
                st.close()
            self.source.close()
