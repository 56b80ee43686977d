"""Live statistics: per-stage times, end-to-end latency per output, rates in and out, drops.

Every frame's capture time travels with it; each stage's time per frame and each sink's delivery
time are recorded here (thread-safe). `snapshot()` is what the window and the web page show
while running (the last few seconds); `summary()` / `lines()` the table at the end (the whole
session), `--stats FILE.json` writes `summary()`.
"""

from __future__ import annotations

import threading
import time
from array import array
from collections import deque

import numpy as np

RECENT_S = 5.0  # the window the live figures cover
COURSE_S = 10.0  # the summary's course of each stage and output: p50 of each 10 s


def _pct(values, qs=(50, 95, 99)) -> dict[str, float]:
    if len(values) == 0:
        return {f"p{q}": float("nan") for q in qs}
    a = np.frombuffer(values, np.float32) if isinstance(values, array) else np.asarray(values, np.float32)
    return {f"p{q}": round(float(np.percentile(a, q)), 2) for q in qs}


class _Series:
    """Milliseconds of one measure: all of them with their times (for the end) and the recent
    (time, ms) pairs."""

    def __init__(self) -> None:
        self.all = array("f")
        self.at = array("d")  # time.monotonic() of each of `all`
        self.recent: deque[tuple[float, float]] = deque()

    def add(self, now: float, ms: float) -> None:
        self.all.append(ms)
        self.at.append(now)
        self.recent.append((now, ms))
        while self.recent and self.recent[0][0] < now - RECENT_S:
            self.recent.popleft()

    def recent_values(self, now: float) -> list[float]:
        return [v for t, v in self.recent if t >= now - RECENT_S]

    def course(self, start: float, step: float = COURSE_S) -> list[float | None]:
        """p50 ms of each `step` seconds from `start` (a session's course: does it slow down?);
        None for a span with no value (a stall), so the k-th entry is always k * step on."""
        if not self.all:
            return []
        ms, at = np.frombuffer(self.all, np.float32), np.frombuffer(self.at, np.float64) - start
        bins = (np.maximum(at, 0) // step).astype(int)
        return [round(float(np.median(ms[bins == b])), 1) if (bins == b).any() else None
                for b in range(int(bins.max()) + 1)]


class LiveStats:
    """Thread-safe recorder of a live run's figures."""

    def __init__(self, stages: list[str], sinks: list[str]) -> None:
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.stages = {name: _Series() for name in stages}
        self.latency = {name: _Series() for name in sinks}
        self.captured = 0  # frames the source delivered
        self.taken = 0  # frames that entered the chain
        self.out = 0  # frames that left it
        self.delivered = dict.fromkeys(sinks, 0)
        self.dropped = {"capture": 0, **{f"sink:{n}": 0 for n in sinks}}
        self.late = 0  # frames that missed their --delay playout time
        self.faces = 0  # faces in the last frame out
        self._in_times: deque[float] = deque()
        self._out_times: deque[float] = deque()
        self.camera_fps: float | None = None
        self.ended = None

    # ------------------------------------------------------------------------------ recording
    def frame_captured(self, capture_time: float) -> None:
        with self._lock:
            if not self.captured:  # the session's clock starts with its first frame, after set-up
                self.started = time.monotonic()
            self.captured += 1
            self._in_times.append(capture_time)
            self._trim(self._in_times, time.monotonic())

    def frame_taken(self) -> None:
        with self._lock:
            self.taken += 1

    def stage_time(self, name: str, ms: float) -> None:
        with self._lock:
            self.stages[name].add(time.monotonic(), ms)

    def frame_out(self, faces: int) -> None:
        """A frame left the chain for the sinks (counts fps out)."""
        now = time.monotonic()
        with self._lock:
            self.out += 1
            self.faces = faces
            self._out_times.append(now)
            self._trim(self._out_times, now)

    def delivered_to(self, sink: str, capture_time: float | None) -> None:
        """A sink delivered a frame: its end-to-end latency from capture."""
        now = time.monotonic()
        with self._lock:
            self.delivered[sink] += 1
            if capture_time is not None:
                self.latency[sink].add(now, 1000 * (now - capture_time))

    def drop(self, where: str, n: int = 1) -> None:
        with self._lock:
            self.dropped[where] = self.dropped.get(where, 0) + n

    def set_capture_drops(self, n: int) -> None:
        with self._lock:
            self.dropped["capture"] = n

    @staticmethod
    def _trim(times: deque, now: float) -> None:
        while times and times[0] < now - RECENT_S:
            times.popleft()

    # ------------------------------------------------------------------------------- reading
    @staticmethod
    def _rate(times: deque, now: float) -> float:
        recent = [t for t in times if t >= now - RECENT_S]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)

    def snapshot(self) -> dict:
        """The last few seconds: fps in/out, latency p50/p95 (first sink), drops, faces."""
        now = time.monotonic()
        with self._lock:
            lat = next(iter(self.latency.values()), None)
            pct = _pct(lat.recent_values(now) if lat else [], (50, 95))
            return {"fps_in": round(self._rate(self._in_times, now), 1),
                    "fps_out": round(self._rate(self._out_times, now), 1),
                    "latency_ms": pct, "dropped": sum(self.dropped.values()), "faces": self.faces,
                    "captured": self.captured, "seconds": round(now - self.started, 1),
                    "stages_ms": {n: _pct(s.recent_values(now), (50,))["p50"]
                                  for n, s in self.stages.items()}}

    def summary(self) -> dict:
        """The whole session: per stage ms p50/p95, end to end p50/p95/p99 per output, fps in and
        out, frames dropped and where; course_ms: each stage's and output's (end to end) p50 of each
        10 s."""
        end = self.ended or time.monotonic()
        with self._lock:
            secs = max(end - self.started, 1e-6)
            out = self.out
            return {
                "seconds": round(secs, 2),
                "frames_captured": self.captured, "frames_processed": self.taken, "frames_out": out,
                "frames_delivered": dict(self.delivered),
                "fps_in": round(self.captured / secs, 2), "fps_out": round(out / secs, 2),
                "camera_fps_measured": None if self.camera_fps is None else round(self.camera_fps, 2),
                "dropped": dict(self.dropped), "late_for_delay": self.late,
                "stage_ms": {n: _pct(s.all, (50, 95)) for n, s in self.stages.items()},
                "latency_ms": {n: _pct(s.all) for n, s in self.latency.items()},
                # p50 of each 10 s, in order: where a session that slows down slows
                "course_ms": {"stages": {n: s.course(self.started) for n, s in self.stages.items()},
                              "outputs": {n: s.course(self.started) for n, s in self.latency.items()}},
            }

    def lines(self) -> list[str]:
        s = self.summary()
        cam = s["camera_fps_measured"]
        out = [f"live: {s['seconds']:.1f} s, {s['frames_captured']} frames captured ({s['fps_in']:.1f} fps), "
               f"{s['frames_processed']} processed, {s['fps_out']:.1f} fps out"
               + (f"; camera measured {cam:.1f} fps" if cam else "")]
        out.append(f"{'stage':<16}{'p50 ms':>9}{'p95 ms':>9}")
        for name, p in s["stage_ms"].items():
            out.append(f"{name:<16}{p['p50']:>9.1f}{p['p95']:>9.1f}")
        out.append(f"{'end to end':<16}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'frames':>8}")
        for name, p in s["latency_ms"].items():
            out.append(f"{'-> ' + name:<16}{p['p50']:>9.1f}{p['p95']:>9.1f}{p['p99']:>9.1f}"
                       f"{s['frames_delivered'][name]:>8}")
        drops = ", ".join(f"{k} {v}" for k, v in s["dropped"].items() if v) or "none"
        late = s["late_for_delay"]
        out.append(f"dropped: {drops}" + (f"; {late} late for --delay" if late else ""))
        return out
