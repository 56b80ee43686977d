"""`swapstream live`: a camera (or stream, or file played in real time) swapped live into any
number of outputs: a window, a virtual camera, a network stream, a web page, a recording.

An assembly: it checks the model and every output before the camera opens (a bad one is one
line, exit 2), opens the source, builds the same stages as convert (detect with tracking, align
with One Euro smoothing, swap through the engine registry, blend with colour transfer and
sharpening) plus the face-box overlay, wires the controls (keys, web page) to them, and runs it
all on the live runner under the `newest` policy. At the end it prints the statistics table.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# OpenCV before PyAV: both wheels bundle libxcb-shm under the same file name, and with PyAV's loaded
# first a window's Qt plugin hangs connecting to the display (cv2.namedWindow).
import cv2  # noqa: F401

from swapstream.core.errors import ConfigError, OutputError
from swapstream.pipeline.config import LiveConfig, live_in_flight
from swapstream.pipeline.live_stats import LiveStats
from swapstream.pipeline.outputs import OutputContext, outputs
from swapstream.pipeline.request import check_model, make_chain, to_stderr
from swapstream.pipeline.runners.base import built
from swapstream.pipeline.runners.live import AudioGate, LiveOptions, LiveRunner
from swapstream.stages.base import Sink
from swapstream.stages.face.swap import SwapStage
from swapstream.stages.sinks.controls import Controls
from swapstream.stages.sinks.overlay import BoxesStage
from swapstream.stages.sources.browser import BROWSER, BrowserSource, Inbox
from swapstream.stages.sources.camera import CameraSource, CaptureSettings, parse_size


def plan_outputs(cfg: LiveConfig) -> LiveConfig:
    """With no output asked for: the first output that offers itself as the default (a window
    where there is a display, else the web page; pipeline.outputs). With --camera browser the
    web page is always one of the outputs (it is the camera)."""
    if cfg.camera == BROWSER and "serve" not in cfg.outputs:
        return dataclasses.replace(cfg, outputs={**cfg.outputs, "serve": outputs()["serve"].default_value})
    if cfg.outputs:
        return cfg
    for out in outputs().values():
        if out.default is not None and out.default():
            return dataclasses.replace(cfg, outputs={out.name: out.default_value})
    return cfg


def check_outputs(cfg: LiveConfig) -> None:
    """Every output's user errors, before the camera opens."""
    known = outputs()
    for name, value in cfg.outputs.items():
        if name not in known:
            raise ConfigError(f"unknown live output {name!r}; outputs: {', '.join(known)}")
        known[name].check(value, cfg)
    if cfg.stats and not Path(cfg.stats).absolute().parent.is_dir():
        raise OutputError(f"--stats {cfg.stats}: folder {Path(cfg.stats).absolute().parent} does not exist; "
                          "create it or choose another path")


def build_sinks(cfg: LiveConfig, info, controls: Controls, snapshot: Callable[[], dict],
                has_audio: bool, inbox: Inbox | None = None) -> list[Sink]:
    """The sinks of the outputs cfg asks for, in the outputs' order."""
    from swapstream.stages.sinks.live_av import live_stream_info

    stream_info = live_stream_info(info.label, info.width, info.height, info.fps, has_audio)
    ctx = OutputContext(cfg, info, stream_info, controls, snapshot, has_audio, inbox)
    return [out.build(cfg.outputs[name], ctx) for name, out in outputs().items() if name in cfg.outputs]


def _one_torch_thread(device: str) -> None:
    """On a CPU, live runs the swap in a single torch thread: the other stages, the codecs and the
    web page's encoders run beside it, and torch's OpenMP team, spinning for cores that other
    threads hold, took 36 ms a face instead of 5 (measured here with a viewer on the web page)."""
    import torch

    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        torch.set_num_threads(1)


def wire_controls(controls: Controls, stages: list) -> None:
    """Make the swap and box stages among `stages` obey `controls` (swap on/off, direction, boxes)."""
    swap = next(s for s in stages if isinstance(s, SwapStage))
    boxes = next(s for s in stages if isinstance(s, BoxesStage))

    def apply(state: dict) -> None:
        swap.enabled = state["swap"]
        if state["direction"] != swap.settings.direction:
            swap.set_direction(state["direction"])
        boxes.enabled = state["boxes"]

    controls.on_change(apply)


@dataclass
class _Session:
    """What a live session runs: the opened camera (and microphone), the stages, the controls, the
    sinks and the statistics they read."""

    source: CameraSource
    info: object  # stages.sources.camera.CaptureInfo
    audio: object  # an opened MicrophoneSource, or None
    gate: AudioGate
    stages: list
    controls: Controls
    sinks: list[Sink]
    stats: LiveStats

    @property
    def has_audio(self) -> bool:
        return self.audio is not None or self.info.has_audio


def live(cfg: LiveConfig, say: Callable[[str], None] = print,
         extra_sinks: list[Sink] | None = None, on_capture: Callable | None = None,
         warn: Callable[[str], None] = to_stderr, on_ready: Callable[[], None] | None = None) -> LiveStats:
    """Run a live session (see the module docstring); returns its statistics. SwapstreamError
    for a user's mistake (exit 2); SourceLost when the camera or stream stops (exit 1), after
    every output was closed properly; an output that fails mid-run (a full disk) stops alone,
    `warn` gets the one line that says so (OutputLost, exit 1, when it was the last one). For
    programs (tests, benchmarks): `extra_sinks` are added to the outputs, `on_capture(packet)`
    sees each frame as it is captured, `on_ready()` is called once every output is up (a page
    may connect)."""
    cfg = plan_outputs(cfg) if not extra_sinks or cfg.camera == BROWSER else cfg
    model = check_model(cfg, say)
    check_outputs(cfg)
    s = _open(cfg, model, extra_sinks or [])
    options = LiveOptions(cfg.delay_ms, cfg.duration, on_capture=on_capture, on_output_failed=warn,
                          in_flight=live_in_flight(cfg),
                          on_ready=lambda: (_say_ready(cfg, s, say), on_ready and on_ready()))
    runner = LiveRunner(s.stats, s.controls, options, audio_gate=s.gate,
                        audio_source=s.audio.chunks() if s.audio is not None else None)
    try:
        runner.run([built(st) for st in s.stages], s.source, [built(sk) for sk in s.sinks], cfg.policy)
    finally:
        if s.audio is not None:
            s.audio.close()
        say(f"live: ended ({runner.ended_by or 'error'})")
        for line in s.stats.lines():
            say(line)
        if cfg.stats:
            Path(cfg.stats).write_text(json.dumps(s.stats.summary(), indent=2))
    return s.stats


def _open(cfg: LiveConfig, model, extra_sinks: list[Sink]) -> _Session:
    """Open the camera (and microphone) and build the stages, controls and sinks; on an error
    whatever was opened is closed again."""
    w, h = parse_size(cfg.size) if cfg.size else (0, 0)
    audio = None
    if cfg.audio:
        from swapstream.stages.sources.microphone import MicrophoneSource

        audio = MicrophoneSource(cfg.audio)
    gate = AudioGate()
    wants_audio = (any(outputs()[name].audio for name in cfg.outputs)
                   or any(s.wants_audio for s in extra_sinks))
    inbox = None
    if cfg.camera == BROWSER:  # the page's camera (and microphone unless --audio names a device)
        inbox = Inbox(on_audio=gate.push if wants_audio and not cfg.audio else None)
        source = BrowserSource(inbox, w, h, cfg.fps)
    else:
        capture = CaptureSettings(cfg.camera, w, h, cfg.fps, cfg.loop, audio=wants_audio and not cfg.audio)
        source = CameraSource(capture, on_audio=gate.push)
    info = source.open()
    sinks: list[Sink] = []
    try:
        if audio is not None:
            audio.open()
        has_audio = audio is not None or info.has_audio
        _one_torch_thread(cfg.swap.device)
        chain = make_chain(cfg, model.meta, "live", model.reference, model.people)
        stages = [lk.build() for lk in chain] + [BoxesStage()]
        controls = Controls(direction=cfg.swap.direction)
        wire_controls(controls, stages)
        # the window and the page read the statistics, which are made once the sinks are known
        stats: list[LiveStats] = []
        sinks = build_sinks(cfg, info, controls, lambda: stats[0].snapshot(), has_audio, inbox) + extra_sinks
        stats.append(LiveStats([s.name for s in stages], [s.name for s in sinks]))
    except BaseException:
        source.close()
        if audio is not None:
            audio.close()
        for s in sinks:
            s.close()
        raise
    return _Session(source, info, audio, gate, stages, controls, sinks, stats[0])


def _say_ready(cfg: LiveConfig, s: _Session, say: Callable[[str], None]) -> None:
    """The session's lines once everything is set up (a server's URL has its real port now)."""
    info = s.info
    say(f"live: {info.label} ({info.kind}), {info.width}x{info.height} at {info.fps:g} fps"
        f"{', with audio' if s.has_audio else ''}; "
        f"{'model ' + cfg.swap.model if cfg.swap.model else 'models ' + ', '.join(cfg.map.values())} "
        f"({cfg.swap.direction})")
    for sink in s.sinks:
        if getattr(sink, "url", None):
            say(f"live: {sink.name} at {sink.url}")
        if getattr(sink, "fingerprint", None):
            say(f"live: {sink.name}: the browser will warn of a self-signed certificate; check that it "
                f"shows this SHA-256 fingerprint before going on: {sink.fingerprint}")
    if cfg.camera == BROWSER:
        say("live: waiting for a page to send its camera: open the URL above on the laptop or phone "
            "that has the camera, and allow it")
    for name in cfg.outputs:
        if outputs()[name].hint:
            say(f"live: {outputs()[name].hint}")
