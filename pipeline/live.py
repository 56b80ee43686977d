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
import os
import sys
from collections.abc import Callable
from pathlib import Path

from swapstream.core.errors import ConfigError, OutputError
from swapstream.pipeline.chain import check_model, make_chain
from swapstream.pipeline.config import LiveConfig
from swapstream.pipeline.live_stats import LiveStats
from swapstream.pipeline.runners.live import AudioGate, LiveOptions, LiveRunner
from swapstream.stages.base import Sink
from swapstream.stages.face.swap import SwapStage
from swapstream.stages.sinks.controls import HELP, Controls
from swapstream.stages.sinks.file import EncodeSettings, EncodeStage
from swapstream.stages.sinks.overlay import BoxesStage
from swapstream.stages.sources.camera import CameraSource, CaptureSettings, parse_size

DEFAULT_SERVE = "127.0.0.1:8080"


def display_available() -> bool:
    """Whether an OpenCV window can open here: a display, and an OpenCV built with a GUI."""
    linux = sys.platform.startswith("linux")
    if linux and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    import cv2

    gui = [ln for ln in cv2.getBuildInformation().splitlines() if ln.strip().startswith("GUI:")]
    return not gui or "NONE" not in gui[0].upper()


def parse_serve(text: str) -> tuple[str, int]:
    """'[HOST:]PORT' -> (host, port); the host defaults to 127.0.0.1; port 0: any free port."""
    host, _, port = str(text).rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"--serve {text!r} is not [HOST:]PORT (e.g. 8080 or 0.0.0.0:8080)")
    return host, int(port)


def plan_outputs(cfg: LiveConfig) -> LiveConfig:
    """With no output asked for: a window where there is a display, else the web page."""
    if cfg.outputs():
        return cfg
    if display_available():
        return dataclasses.replace(cfg, window=True)
    return dataclasses.replace(cfg, serve=DEFAULT_SERVE)


def check_outputs(cfg: LiveConfig) -> None:
    """Every output's user errors, before the camera opens."""
    if cfg.record:
        EncodeStage(EncodeSettings(cfg.record, cfg.codec), None).validate()  # codec, folder, extension
    if cfg.stream:
        from swapstream.stages.hardware import check_codec
        from swapstream.stages.sinks.stream import stream_format

        stream_format(cfg.stream)
        check_codec(cfg.codec)
    if cfg.serve is not None:
        from swapstream.stages.sinks.web import listen

        listen(*parse_serve(cfg.serve)).close()  # in use, not an address here, privileged
    if cfg.window and not display_available():
        raise ConfigError("--window: no display here (DISPLAY is not set, or OpenCV has no GUI); use "
                          "--serve to watch in a browser, or --virtual-camera / --stream")
    if cfg.virtual_camera is not None:
        from swapstream.stages.sinks.virtualcam import check_virtual_camera

        check_virtual_camera(cfg.virtual_camera or None)
    if cfg.stats and not Path(cfg.stats).absolute().parent.is_dir():
        raise OutputError(f"--stats {cfg.stats}: folder {Path(cfg.stats).absolute().parent} does not exist; "
                          "create it or choose another path")


def build_sinks(cfg: LiveConfig, info, controls: Controls, snapshot: Callable[[], dict],
                has_audio: bool) -> list[Sink]:
    from swapstream.stages.sinks.live_av import live_stream_info

    sinks: list[Sink] = []
    stream_info = live_stream_info(info.label, info.width, info.height, info.fps, has_audio)
    if cfg.window:
        from swapstream.stages.sinks.window import WindowSink

        sinks.append(WindowSink(controls, snapshot))
    if cfg.virtual_camera is not None:
        from swapstream.stages.sinks.virtualcam import VirtualCameraSink

        sinks.append(VirtualCameraSink(cfg.virtual_camera or None, info.fps))
    if cfg.stream:
        from swapstream.stages.sinks.stream import StreamSettings, StreamSink

        sinks.append(StreamSink(StreamSettings(cfg.stream, cfg.codec), stream_info, audio=has_audio))
    if cfg.serve is not None:
        from swapstream.stages.sinks.web import WebSettings, WebSink

        host, port = parse_serve(cfg.serve)
        sinks.append(WebSink(WebSettings(host, port, audio=has_audio), controls, snapshot))
    if cfg.record:
        from swapstream.stages.sinks.record import RecordSink

        sinks.append(RecordSink(EncodeSettings(cfg.record, cfg.codec, crf=20, preset="veryfast"), stream_info,
                                audio=has_audio))
    return sinks


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


def live(cfg: LiveConfig, say: Callable[[str], None] = print,
         extra_sinks: list[Sink] | None = None, on_capture: Callable | None = None) -> LiveStats:
    """Run a live session (see the module docstring); returns its statistics. SwapstreamError
    for a user's mistake (exit 2); SourceLost when the camera or stream stops (exit 1), after
    every output was closed properly. For programs (tests, benchmarks): `extra_sinks` are added
    to the outputs, `on_capture(packet)` sees each frame as it is captured."""
    cfg = plan_outputs(cfg) if not extra_sinks else cfg
    meta = check_model(cfg, say)
    check_outputs(cfg)
    w, h = parse_size(cfg.size) if cfg.size else (0, 0)
    audio_src = None
    if cfg.audio:
        from swapstream.stages.sources.microphone import MicrophoneSource

        audio_src = MicrophoneSource(cfg.audio)
    gate = AudioGate()
    wants_audio = bool(cfg.stream or cfg.serve is not None or cfg.record
                       or any(s.wants_audio for s in extra_sinks or []))
    capture = CaptureSettings(cfg.camera, w, h, cfg.fps, cfg.loop, audio=wants_audio and not cfg.audio)
    source = CameraSource(capture, on_audio=gate.push)
    info = source.open()
    sinks: list[Sink] = []
    stages = []
    try:
        if audio_src is not None:
            audio_src.open()
        has_audio = audio_src is not None or info.has_audio
        _one_torch_thread(cfg.device)
        stages = [lk.build() for lk in make_chain(cfg, meta)] + [BoxesStage()]
        controls = Controls(direction=cfg.direction)
        wire_controls(controls, stages)
        # the window and the page read the statistics, which are made once the sinks are known
        sinks = build_sinks(cfg, info, controls, lambda: stats.snapshot(), has_audio)
        sinks += extra_sinks or []
        stats = LiveStats([s.name for s in stages], [s.name for s in sinks])
    except BaseException:
        source.close()
        if audio_src is not None:
            audio_src.close()
        for s in sinks:
            s.close()
        raise

    def ready() -> None:  # after set-up: a server's URL has its real port now
        say(f"live: {info.label} ({info.kind}), {info.width}x{info.height} at {info.fps:g} fps"
            f"{', with audio' if has_audio else ''}; model {cfg.model} ({cfg.direction})")
        for s in sinks:
            if getattr(s, "url", None):
                say(f"live: {s.name} at {s.url}")
        if cfg.window:
            say(f"live: {HELP}")

    options = LiveOptions(cfg.policy, cfg.delay_ms, cfg.duration, on_capture=on_capture, on_ready=ready)
    runner = LiveRunner(source, stages, sinks, stats, controls, options,
                        audio_source=audio_src.chunks() if audio_src is not None else None, audio_gate=gate)
    try:
        runner.run()
    finally:
        if audio_src is not None:
            audio_src.close()
        say(f"live: ended ({runner.ended_by or 'error'})")
        for line in stats.lines():
            say(line)
        if cfg.stats:
            Path(cfg.stats).write_text(json.dumps(stats.summary(), indent=2))
    return stats
