"""Live swap latency, frame by frame, through the real outputs.

A paced source (a real face clip, played at 30 fps of wall-clock time and looped) stamps each
captured frame's index as a binary code in its top-left corner, away from the face. The code is
read back where the frame leaves: the in-process sink, the UDP stream decoded by a receiver in
this process (PyAV), and the web page in headless Chromium (the page draws each video frame into
a canvas and reads the code). Latency = when the frame left - when it was captured, per frame.

For each size x preset x engine, a run with the in-process sink only (the goal figures): fps
out, dropped %, latency p50/p95/p99, and drift (p50 of the last 10 s against the first 10 s).
Then, per size with lite64, a run with the UDP stream and one with the web page, each beside
the in-process sink, so each output is compared with in-process in the same run.

    python benchmarks/bench_live.py                       # 60 s runs, 640x480 and 1280x720
    python benchmarks/bench_live.py --seconds 20 --presets lite64 --no-outputs   # quick look
    python benchmarks/bench_live.py --presets "" --outputs browser   # only the web page runs
    python benchmarks/bench_live.py --occlusion none --mouth swap   # without the hands stage and mouth
    python benchmarks/bench_live.py --presets "" --outputs camera   # the browser-camera rows only

The browser-camera row (`--outputs camera`, `swapstream live --camera browser`): headless
Chromium's fake camera plays the stamped clip (a .y4m, looped) into the page, the page sends it to
the server over WebRTC and shows what comes back; the page reads the code from its own camera
preview and from the returned video. fps back = the returned frames the page decoded and handed to
its compositor a second (requestVideoFrameCallback's presentedFrames); dropped = the share of the
camera's frames (the same count on the preview) that did not come back; fps_drawn = the distinct
frames the page's callbacks read, lower by the frames that came back within the same display frame
as the next one (1-1.5 fps here). Round-trip latency = when the returned frame was decoded and
handed to the page's compositor (its presentationTime) - when the page's camera captured it (its
captureTime); both from requestVideoFrameCallback. The callback's own times come in display
frames (16.7 ms at 60 Hz), steps that move a 70 ms median by 24 %, so they are reported beside,
as `camera_drawn` (what the page drew when). Drift as above.

The page also reports each frame's receiveTime (its last RTP packet in), so the browser row is
split into the server's part (up to arrival) and the browser's (decode and draw).

Goals (2-core CPU, lite64, in-process sink): 640x480@30: 30 fps out, <= 1 % dropped, p95 <= 50
ms; 1280x720@30: >= 25 fps, p95 <= 80 ms; drift <= 10 %; through the browser p95 at most 60 ms
above in-process. Browser camera, 640x480, lite64: >= 25 fps back, p95 <= 150 ms, drift <= 10 %;
on a GPU with original64 at 1280x720: p95 <= 80 ms. GPU (1280x720, original64): p95 <= 40 ms.
Each run also reports the machine's CPU over it (busy, idle, steal, from /proc/stat): on a
virtual machine whose host is shared, steal (time the host gave others) took 30-40 % of these
two cores in some runs and under 5 % in others, and the figures move with it; compare runs with
alike steal. JSON to bench_live.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")

from swapstream.engines.checkpoint import save_checkpoint  # noqa: E402
from swapstream.engines.model import SwapModel, preset  # noqa: E402
from swapstream.pipeline.config import LiveConfig, SwapSection  # noqa: E402
from swapstream.pipeline.live import live  # noqa: E402
from swapstream.pipeline.samples import make_clip  # noqa: E402
from swapstream.stages.base import Sink  # noqa: E402
from swapstream.stages.face.masks import MOUTH_MODES, OCCLUSION_MODES  # noqa: E402

BITS, CELL, X0, Y0 = 16, 12, 8, 8  # two rows of 8 cells, 12 px each, at (8, 8)


def stamp(frame: np.ndarray, index: int) -> None:
    """Write `index` (16 bits) into (H, W, 3) uint8 `frame` as black/white cells, in place."""
    frame[Y0 - 4:Y0 + 2 * CELL + 4, X0 - 4:X0 + 8 * CELL + 4] = 128  # a grey frame around the cells
    for b in range(BITS):
        r, c = divmod(b, 8)
        v = 255 if (index >> b) & 1 else 0
        frame[Y0 + r * CELL:Y0 + (r + 1) * CELL, X0 + c * CELL:X0 + (c + 1) * CELL] = v


def read_code(frame: np.ndarray) -> int:
    """The index stamped into (H, W, 3) uint8 `frame` (cell centres, thresholded at mid-grey)."""
    value = 0
    for b in range(BITS):
        r, c = divmod(b, 8)
        y, x = Y0 + r * CELL + CELL // 2, X0 + c * CELL + CELL // 2
        if frame[y - 2:y + 3, x - 2:x + 3].mean() > 128:
            value |= 1 << b
    return value


# the page-side reader: the same cells, read from a canvas the video is drawn into; VIDEO_ID and
# CODES name the <video> read and the array the codes go to
PAGE_READER = "(() => { const K = " + json.dumps({"bits": BITS, "x0": X0, "y0": Y0, "cell": CELL}) + """;
  const v = VIDEO_ID ? document.getElementById(VIDEO_ID) : document.querySelector('video');
  const w = K.x0 + 8 * K.cell, h = K.y0 + 2 * K.cell;  // only the corner with the code
  const c = document.createElement('canvas'); c.width = w; c.height = h;
  const g = c.getContext('2d', {willReadFrequently: true});
  window.CODES = [];
  const tick = (now, meta) => {
    if (v.videoWidth) {
      g.drawImage(v, 0, 0, w, h, 0, 0, w, h);
      const d = g.getImageData(0, 0, w, h).data;
      let value = 0;
      for (let b = 0; b < K.bits; b++) {
        const r = Math.floor(b / 8), col = b % 8;
        const x0 = K.x0 + col * K.cell + K.cell / 2 - 2, y0 = K.y0 + r * K.cell + K.cell / 2 - 2;
        let s = 0;
        for (let y = y0; y < y0 + 5; y++) for (let x = x0; x < x0 + 5; x++) {
          const i = 4 * (y * w + x); s += (d[i] + d[i + 1] + d[i + 2]) / 3;
        }
        if (s / 25 > 128) value |= (1 << b);
      }
      const at = (x) => (x ? performance.timeOrigin + x : null);
      // [code, callback time (a display frame's), last packet in, captured (a local camera's
      // frame), handed to the compositor (decoded and ready to show), frames handed to it so far]
      window.CODES.push([value, performance.timeOrigin + now, at(meta.receiveTime),
                         at(meta.captureTime), at(meta.presentationTime), meta.presentedFrames]);
    }
    v.requestVideoFrameCallback(tick);
  };
  v.requestVideoFrameCallback(tick);
})();
"""


def reader(video_id: str = "", codes: str = "__codes") -> str:
    """PAGE_READER for the <video> with id `video_id` (default: the first), into window[codes]."""
    return PAGE_READER.replace("VIDEO_ID", json.dumps(video_id)).replace("CODES", codes)


class Clock:
    """Capture times (monotonic) by stamped index, and wall-clock offset for the browser."""

    def __init__(self) -> None:
        self.captured: dict[int, float] = {}
        self.offset = time.time() - time.monotonic()

    def on_capture(self, packet) -> None:
        stamp(packet.frame, packet.index & 0xFFFF)
        self.captured[packet.index & 0xFFFF] = packet.capture_time


class UdpReceiver(threading.Thread):
    """Decodes the MPEG-TS stream on 127.0.0.1:port; records (index, monotonic time) per frame."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.url = f"udp://127.0.0.1:{port}?timeout=4000000&overrun_nonfatal=1&fifo_size=1000000"
        self.got: list[tuple[int, float]] = []
        self.error = None

    def run(self) -> None:
        import av

        try:
            with av.open(self.url, format="mpegts", timeout=(20, 4),
                         options={"fflags": "nobuffer", "flags": "low_delay"}) as c:
                v = c.streams.video[0]
                v.thread_type = "SLICE"
                for pkt in c.demux(v):
                    for f in pkt.decode():
                        self.got.append((read_code(f.to_ndarray(format="rgb24")), time.monotonic()))
        except Exception as e:  # noqa: BLE001 - the stream ends with a timeout
            self.error = e


class BarcodeSink(Sink):
    """The in-process output: reads each delivered frame's barcode as it arrives, keeping
    (frame index, code read, time.monotonic())."""

    name = "memory"
    keeps_every_frame = False

    def __init__(self) -> None:
        self.read: list[tuple[int, int, float]] = []

    def process(self, batch):
        for p in batch:
            self.read.append((p.index, read_code(p.frame), time.monotonic()))
        return batch


def latencies(pairs, clock: Clock, wall: bool = False) -> list[tuple[float, float]]:
    """(time out, latency ms) for (index, time out) pairs whose index was captured."""
    out = []
    for idx, t in pairs:
        cap = clock.captured.get(idx)
        if cap is None:
            continue
        t_mono = t / 1000 - clock.offset if wall else t
        out.append((t_mono, 1000 * (t_mono - cap)))
    return out


def figures(lat: list[tuple[float, float]], captured: int, dropped: int, seconds: float) -> dict:
    if not lat:
        return {"frames": 0}
    ms = np.array([v for _, v in lat])
    t = np.array([t for t, _ in lat])
    first, last = ms[t <= t[0] + 10], ms[t >= t[-1] - 10]
    span = max(t[-1] - t[0], 1e-6)
    return {"frames": len(ms), "fps_out": round((len(ms) - 1) / span, 2),
            "dropped_pct": round(100 * dropped / max(captured, 1), 2),
            "p50": round(float(np.percentile(ms, 50)), 1), "p95": round(float(np.percentile(ms, 95)), 1),
            "p99": round(float(np.percentile(ms, 99)), 1),
            "drift_pct": round(100 * (np.median(last) / np.median(first) - 1), 1) if seconds >= 25 else None,
            # the same with means: a page's times come in display frames (16.7 ms at 60 Hz), and
            # one of them moves a median of 67 ms by 25 %
            "drift_mean_pct": round(100 * (np.mean(last) / np.mean(first) - 1), 1) if seconds >= 25 else None,
            # the latency's course: p50 of each 5 s of the run (drift compares the ends of it)
            "p50_by_5s": [round(float(np.median(ms[(t >= a) & (t < a + 5)])), 1)
                          for a in np.arange(t[0], t[-1], 5.0) if ((t >= a) & (t < a + 5)).any()]}


class CpuShare:
    """The machine's CPU time over a run, from /proc/stat (Linux): the shares busy, idle and
    stolen (a virtual machine's host running others on its cores: steal). A run whose steal is
    high had less machine than its core count says; compare runs with alike steal."""

    def __init__(self) -> None:
        self.start = self._read()

    def restart(self) -> None:
        """Count from now (once set-up is over)."""
        self.start = self._read()

    @staticmethod
    def _read() -> list[int] | None:
        try:
            with open("/proc/stat") as f:
                return [int(v) for v in f.readline().split()[1:9]]
        except OSError:
            return None

    def shares(self) -> dict:
        end = self._read()
        if self.start is None or end is None:
            return {}
        d = [b - a for a, b in zip(self.start, end)]
        total = max(sum(d), 1)
        # user nice system idle iowait irq softirq steal
        return {"busy_pct": round(100 * (d[0] + d[1] + d[2] + d[5] + d[6]) / total, 1),
                "idle_pct": round(100 * (d[3] + d[4]) / total, 1), "steal_pct": round(100 * d[7] / total, 1)}


class CpuCost:
    """This process's CPU time over a run, sampled once a second (time.process_time: every thread,
    user + system), to read as CPU ms a frame the server took. The work a frame asks is the same
    all run long, so where it costs more CPU ms the cores ran slower: a virtual machine's cores
    whose physical cores the host shares with others (hyperthread siblings, neighbours) run
    slower without any of it showing as steal. Measured here with two single-thread probes, one a
    core: each lost up to 25 % for seconds at a time while the machine showed 0 % steal."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []  # (wall-clock ms, CPU s)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while True:
            self.samples.append((time.time() * 1000, time.process_time()))
            if self._done.wait(1.0):
                return

    def stop(self) -> None:
        self._done.set()
        if self._thread.ident is not None:  # started (a session that never got ready did not)
            self._thread.join(timeout=5)

    def per_frame(self, arrived: list[tuple[int, float]], bins: list[float] | None = None) -> dict:
        """CPU ms a frame over the run, and of each 5 s from `bins` (wall-clock s, the legs'
        bins); `arrived`: (code, wall-clock ms) of each frame the server took."""
        if len(self.samples) < 2 or not arrived:
            return {}
        at = np.array([t for _, t in arrived])

        def cost(t0: float, t1: float) -> float | None:
            s = [c for t, c in self.samples if t0 <= t <= t1]
            ts = [t for t, _ in self.samples if t0 <= t <= t1]
            n = int(((at >= ts[0]) & (at < ts[-1])).sum()) if len(ts) >= 2 else 0
            return round(1000 * (s[-1] - s[0]) / n, 1) if n else None

        res = {"cpu_ms_a_frame": cost(at[0], at[-1])}
        if bins:
            res["cpu_ms_a_frame_by_5s"] = [cost(1000 * b, 1000 * (b + 5)) for b in bins]
        return res


def run(clip: Path, model: str, engine: str, seconds: float, output: str, port: int,
        blend: dict | None = None) -> dict:
    """One live run with the in-process sink, plus `output` ("udp" or "browser") if given; blend:
    BlendSettings fields to set (occlusion, mouth), the live defaults otherwise."""
    clock = Clock()
    sink = BarcodeSink()
    cfg = LiveConfig(swap=SwapSection(model=model, engine=engine), camera=str(clip), loop=True,
                     duration=seconds)
    for key, value in (blend or {}).items():
        setattr(cfg.blend, key, value)
    recv = browser = None
    if output == "udp":
        cfg.outputs["stream"] = f"udp://127.0.0.1:{port}"
        recv = UdpReceiver(port)
        recv.start()
    elif output == "browser":
        cfg.outputs["serve"] = f"127.0.0.1:{port + 1}"
        browser = BrowserViewer(f"http://127.0.0.1:{port + 1}/")
    cpu = CpuShare()

    def ready() -> None:  # once set-up is over and the server is up
        cpu.restart()
        if browser is not None:
            browser.start()

    stats = live(cfg, say=lambda line: None, extra_sinks=[sink], on_capture=clock.on_capture,
                 on_ready=ready)
    machine = cpu.shares()
    summary = stats.summary()
    captured, dropped = summary["frames_captured"], summary["dropped"]["capture"]
    read = [(code, t) for _, code, t in sink.read]
    wrong = sum(1 for index, code, _ in sink.read if code != (index & 0xFFFF))
    res = {"in-process": figures(latencies(read, clock), captured, dropped, seconds),
           "codes_misread": wrong, "summary": summary, "cpu": machine}
    if recv is not None:
        recv.join(timeout=10)
        res["udp"] = figures(latencies(recv.got, clock), captured, dropped, seconds)
    if browser is not None:
        codes = browser.stop()
        shown = [c[:2] for c in codes]
        res["browser"] = figures(latencies(shown, clock, wall=True), captured, dropped, seconds)
        # where the page's latency goes: up to the frame's last packet arriving (the server's
        # encoding and sending), and from there to the page drawing it (the browser's part)
        received = [(c[0], c[2]) for c in codes if c[2] is not None]
        res["browser-received"] = figures(latencies(received, clock, wall=True), captured, dropped, seconds)
    return res


class BrowserViewer:
    """Headless Chromium on the web page, reading codes from a canvas (benchmarks/browser.py)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.codes: list = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        from browser import chromium  # benchmarks/browser.py

        with chromium() as browser:
            page = browser.new_page()
            page.goto(self.url)
            page.wait_for_function("(document.querySelector('video') || {}).videoWidth > 0", timeout=30000)
            page.evaluate(reader())
            while not self._done.wait(1.0):
                self.codes += page.evaluate("window.__codes.splice(0)")
            self.codes += page.evaluate("window.__codes.splice(0)")

    def stop(self) -> list:
        self._done.set()
        self._thread.join(timeout=20)
        return self.codes


class BrowserCamera:
    """Headless Chromium whose fake camera plays `y4m` into the page at `url` (which sends it, as
    `--camera browser`); reads the codes of the page's preview (going out) and of its main video
    (coming back)."""

    def __init__(self, url: str, y4m: Path) -> None:
        self.url, self.y4m = url, y4m
        self.out: list = []
        self.back: list = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        from browser import chromium  # benchmarks/browser.py

        args = ("--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={self.y4m}")
        with chromium(args) as browser:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(self.url)
            page.wait_for_function("document.getElementById('video').videoWidth > 0", timeout=60000)
            page.evaluate(reader("preview", "__out"))
            page.evaluate(reader("video", "__back"))
            while not self._done.wait(1.0):
                self._take(page)
            self._take(page)

    def _take(self, page) -> None:
        out, back = page.evaluate("[window.__out.splice(0), window.__back.splice(0)]")
        self.out += out
        self.back += back

    def stop(self) -> tuple[list, list]:
        self._done.set()
        self._thread.join(timeout=20)
        return self.out, self.back


def camera_clip(work: Path, w: int, h: int, frames: int = 150) -> Path:
    """The astronaut clip with each frame's index stamped, as a .y4m for Chromium's fake camera."""
    from browser import write_y4m  # benchmarks/browser.py

    from swapstream.pipeline.samples import render_frames

    def stamped():
        for i, f in enumerate(render_frames(["astronaut"], frames, w, h, 0.5, seed=3)):
            f = np.ascontiguousarray(f)
            stamp(f, i)
            yield f

    return write_y4m(stamped(), work / f"camera_{w}x{h}.y4m", 30)


def round_trips(out: list, back: list, vsync: bool = False) -> list[tuple[float, float]]:
    """(time back, latency ms): each returned code against the latest time before it that the
    page's camera produced that code (codes repeat as the clip loops). Times are the frames' own,
    not the display's: out = the camera's captureTime, back = the returned frame's
    presentationTime (decoded, handed to the compositor); the draw that follows waits for the next
    display frame (16.7 ms at 60 Hz), as on any page, and callback times come in those steps.
    vsync=True: both ends at the callback times instead (what the page drew when)."""
    def when(row: list, precise: int) -> float:
        return row[1] if vsync or len(row) <= precise or row[precise] is None else row[precise]

    seen: dict[int, list[float]] = {}
    for row in out:
        seen.setdefault(row[0], []).append(when(row, 3))
    res, last = [], None
    for row in back:
        code, t = row[0], when(row, 4)
        if code == last:
            continue  # the same frame drawn again
        last = code
        sent = [s for s in seen.get(code, []) if s <= t]
        if sent and t - sent[-1] < 2000:
            res.append((t / 1000, t - sent[-1]))
    return res


def run_camera(y4m: Path, model: str, engine: str, seconds: float, port: int, size: str,
               blend: dict | None = None, codec: str = "") -> dict:
    """One live run with --camera browser: the page's camera goes to the server and comes back
    (codec: what the page sends in, vp8 or h264; "": the browser's first choice)."""
    cfg = LiveConfig(swap=SwapSection(model=model, engine=engine), camera="browser", size=size,
                     duration=seconds, outputs={"serve": f"127.0.0.1:{port + 2}"})
    for key, value in (blend or {}).items():
        setattr(cfg.blend, key, value)
    cam = BrowserCamera(f"http://127.0.0.1:{port + 2}/" + (f"?codec={codec}" if codec else ""), y4m)
    arrived: list[tuple[int, float]] = []  # (code, wall-clock ms) of each frame the server took

    def on_capture(packet) -> None:
        wall = time.time() - time.monotonic() + packet.capture_time
        arrived.append((read_code(packet.frame), wall * 1000))

    cpu = CpuShare()

    cost = CpuCost()

    def ready() -> None:  # the page opens once the server is up
        cpu.restart()
        cost.start()
        cam.start()

    stats = live(cfg, say=lambda line: None, on_ready=ready, on_capture=on_capture)
    machine = cpu.shares()  # the session's time (the browser's start-up in it, not its close)
    cost.stop()
    out, back = cam.stop()
    summary = stats.summary()
    lat = round_trips(out, back)
    res = {"camera": figures(lat, max(len(out), 1), max(len(out) - len(lat), 0), seconds), "summary": summary}
    res["camera"].update(presented(out, back))
    drawn = round_trips(out, back, vsync=True)  # the same at the page's display-frame times
    res["camera_drawn"] = {k: v for k, v in figures(drawn, 1, 0, seconds).items()
                           if k in ("p50", "p95", "p99", "drift_pct", "drift_mean_pct")}
    res["legs"] = legs(out, arrived, back)
    res["cpu"] = {**machine, **cost.per_frame(arrived, res["legs"].get("bins"))}
    return res


def presented(out: list, back: list) -> dict:
    """Frames by the page's own count (requestVideoFrameCallback's presentedFrames: frames decoded
    and handed to the compositor), going out (the camera preview) and coming back: fps_back, and
    dropped_pct = camera frames that did not come back. The callbacks fire once a display frame
    (60 Hz), so where two frames come back within one, the draw shows the newer and the callback
    sees only it: fps_drawn (the distinct frames the callbacks read) is a little lower.
    frames_out: callbacks on the preview; frames_back: distinct frames read coming back."""
    def count(rows: list) -> tuple[int, float]:
        rows = [r for r in rows if len(r) > 5 and r[5] is not None]
        if len(rows) < 2:
            return 0, 1e-6
        return rows[-1][5] - rows[0][5], max((rows[-1][1] - rows[0][1]) / 1000, 1e-6)

    (n_out, s_out), (n_back, s_back) = count(out), count(back)
    drawn = sum(1 for i, r in enumerate(back) if i == 0 or r[0] != back[i - 1][0])
    span = max((back[-1][1] - back[0][1]) / 1000, 1e-6) if back else 1e-6
    res = {"frames_out": len(out), "frames_back": drawn,
           "fps_drawn": round((drawn - 1) / span, 2) if drawn >= 2 else None}
    if n_out and n_back:  # the fps and drops figures the goal reads
        res.update(fps_back=round(n_back / s_back, 2), fps_out=round(n_back / s_back, 2),
                   fps_camera=round(n_out / s_out, 2),
                   dropped_pct=round(100 * max(0.0, 1 - (n_back / s_back) / (n_out / s_out)), 2))
    return res


def legs(out: list, arrived: list, back: list) -> dict:
    """Where the round trip goes, p50 ms of each 5 s: up (the page's camera capturing a frame ->
    the server taking it, decoded), server (-> the page receiving its last packet back: the
    stages, the encoder, the network) and page (-> the page's frame decoded, for the compositor).
    Codes repeat as the clip loops: each is matched with its latest occurrence before."""
    def latest(events: list[tuple[int, float]], code: int, before: float) -> float | None:
        ts = [t for c, t in events if c == code and t <= before and before - t < 2000]
        return ts[-1] if ts else None

    sent = [(r[0], r[3] if len(r) > 3 and r[3] is not None else r[1]) for r in out]
    rows, last = [], None
    for r in back:
        code, received = r[0], r[2]
        shown = r[4] if len(r) > 4 and r[4] is not None else r[1]
        if received is None or code == last:  # the same frame drawn again
            continue
        last = code
        got = latest(arrived, code, received)
        went = latest(sent, code, got) if got is not None else None
        if went is not None:
            rows.append((shown / 1000, got - went, received - got, shown - received))
    if not rows:
        return {}
    a = np.array(rows)
    bins = np.arange(a[0, 0], a[-1, 0], 5.0)
    pick = [(a[:, 0] >= b) & (a[:, 0] < b + 5) for b in bins]
    res = {name: [round(float(np.median(a[m, i])), 1) for m in pick if m.any()]
           for i, name in ((1, "up"), (2, "server"), (3, "page"))}
    res["bins"] = [float(b) for b, m in zip(bins, pick) if m.any()]  # each 5 s's start, wall-clock s
    return res


def random_model(work: Path, name: str = "lite64") -> str:
    """A checkpoint of preset `name` with random weights (the speed is a trained one's)."""
    return str(save_checkpoint(work / name, SwapModel(preset(name), ["a", "b"]), name))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each run (60)")
    ap.add_argument("--sizes", default="640x480,1280x720")
    ap.add_argument("--presets", default="lite64,original64")
    ap.add_argument("--engines", default="eager")
    ap.add_argument("--outputs", default="udp,browser",
                    help="outputs measured beside the in-process sink, each in a run of its own; "
                         "camera: the browser-camera run (--camera browser), added with --outputs "
                         "udp,browser,camera")
    ap.add_argument("--no-outputs", action="store_true", help="skip the UDP + browser runs")
    ap.add_argument("--camera-preset", default="lite64", help="the preset of the browser-camera run (lite64)")
    ap.add_argument("--camera-codec", default="", choices=["", "vp8", "h264"],
                    help="the codec the page sends its camera in (default: the browser's first choice, VP8)")
    ap.add_argument("--camera-engine", default="auto",
                    help="the engine of the browser-camera run (auto: what `swapstream live` picks here)")
    ap.add_argument("--model", help="checkpoint to use for every preset (default: random weights per preset)")
    ap.add_argument("--port", type=int, default=23450)
    ap.add_argument("--occlusion", choices=OCCLUSION_MODES,
                    help="blend.occlusion for every run (default: live's own, both: the learned mask "
                         "and the hands stage; none: neither)")
    ap.add_argument("--mouth", choices=MOUTH_MODES, help="blend.mouth for every run (default: live's own)")
    ap.add_argument("--json", default="bench_live.json")
    a = ap.parse_args()
    blend = {k: getattr(a, k) for k in ("occlusion", "mouth") if getattr(a, k)}
    work = Path(tempfile.mkdtemp(prefix="bench_live-"))
    results = []
    for size in a.sizes.split(","):
        w, h = map(int, size.split("x"))
        clip = make_clip(work / f"clip_{size}.mp4", ["astronaut"], 10.0, 30, w, h, 0.5, seed=3)
        for name in [p for p in a.presets.split(",") if p]:
            model = a.model or str(save_checkpoint(work / name, SwapModel(preset(name), ["a", "b"]), name))
            for engine in a.engines.split(","):
                print(f"{size} {name} {engine}: {a.seconds:.0f} s, in-process sink", flush=True)
                r = run(clip, model, engine, a.seconds, "", a.port, blend)
                results.append({"size": size, "preset": name, "engine": engine, "with": "", **r})
                print("   ", r["in-process"], flush=True)
        for output in ([] if a.no_outputs else [o for o in a.outputs.split(",") if o]):
            if output == "camera":
                model = a.model or random_model(work, a.camera_preset)
                print(f"{size} {a.camera_preset} {a.camera_engine}: {a.seconds:.0f} s, the browser's camera, "
                      "there and back", flush=True)
                r = run_camera(camera_clip(work, w, h), model, a.camera_engine, a.seconds, a.port, size,
                               blend, a.camera_codec)
                results.append({"size": size, "preset": a.camera_preset, "engine": a.camera_engine,
                                "with": "camera", **r})
                print(f"    camera: {r['camera']}", flush=True)
                c = r["camera"]
                print(f"    fps back {c.get('fps_back')} (the page's camera {c.get('fps_camera')}), "
                      f"drawn {c.get('fps_drawn')}; server out {r['summary']['fps_out']}; "
                      f"the machine's CPU: {r['cpu']}", flush=True)
                shown = {k: v for k, v in r["legs"].items() if k != "bins"}
                print(f"    legs (p50 ms of each 5 s): {shown}", flush=True)
                print(f"    the server's CPU ms a frame, of each 5 s: {r['cpu'].get('cpu_ms_a_frame_by_5s')}",
                      flush=True)
                print(f"    at the display-frame times: {r['camera_drawn']}", flush=True)
                continue
            model = a.model or random_model(work)
            print(f"{size} lite64 eager: {a.seconds:.0f} s, in-process + {output}", flush=True)
            r = run(clip, model, "eager", a.seconds, output, a.port, blend)
            results.append({"size": size, "preset": "lite64", "engine": "eager", "with": output, **r})
            for k in ("in-process", output, *(["browser-received"] if output == "browser" else [])):
                print(f"    {k}: {r.get(k)}", flush=True)
    for r in results:
        r["blend"] = {**vars(LiveConfig().blend), **blend}
    Path(a.json).write_text(json.dumps(results, indent=1, default=str))
    print(f"\n{'size':<10}{'preset':<12}{'engine':<8}{'output':<12}{'fps out':>8}{'drop %':>8}"
          f"{'p50':>7}{'p95':>7}{'p99':>7}{'drift %':>9}{'steal %':>9}{'cpu ms/f':>10}")
    for r in results:
        for k in ("in-process", "udp", "browser", "browser-received", "camera"):
            f = r.get(k)
            if not f or not f.get("frames"):
                continue
            drift = "" if f.get("drift_pct") is None else f"{f['drift_pct']:+.1f}"
            out = k if not r["with"] or k != "in-process" else f"in-proc+{r['with'][:3]}"
            steal = r.get("cpu", {}).get("steal_pct")
            cost = r.get("cpu", {}).get("cpu_ms_a_frame") if k == "camera" else None
            print(f"{r['size']:<10}{r['preset']:<12}{r['engine']:<8}{out:<12}{f['fps_out']:>8.1f}"
                  f"{f['dropped_pct']:>8.1f}{f['p50']:>7.1f}{f['p95']:>7.1f}{f['p99']:>7.1f}{drift:>9}"
                  f"{'' if steal is None else f'{steal:.1f}':>9}{'' if cost is None else f'{cost:.1f}':>10}")


if __name__ == "__main__":
    main()
