"""`swapstream live`: swap faces live, from a camera into any number of outputs."""

from __future__ import annotations

from swapstream.pipeline.cli.common import (
    drop_none,
    map_flag,
    map_values,
    only_flag,
    settings_file,
    swap_flags,
    swap_values,
)
from swapstream.pipeline.outputs import outputs


def add(sub) -> None:
    p = sub.add_parser(
        "live", help="swap faces live: camera in; window, virtual camera, stream, web page, recording out",
        description="Swap faces in a live source with a model you trained, into any number of outputs at "
                    "once. With no output given: a window where there is a display, else a web page at "
                    "http://127.0.0.1:8080. Keys in the window: s swap on/off, d direction, b face boxes, "
                    "o overlay, q quit; the web page has the same controls.")
    p.add_argument("--camera", default=None,
                   help="0 | /dev/video2 | camera name | rtsp:// udp:// http:// URL | video file "
                        "(plays in real time) | FORMAT:ARGS (e.g. lavfi:testsrc) | browser (the camera of "
                        "the page --serve opens, e.g. a laptop's or phone's); default 0")
    p.add_argument("--size", help="WIDTHxHEIGHT to ask the camera for (e.g. 1280x720); frames are scaled "
                                  "to it (--camera browser: 640x480 unless given)")
    p.add_argument("--fps", type=float, help="frame rate to ask the camera for")
    p.add_argument("--loop", action="store_true", help="a file source starts over at its end")
    p.add_argument("--list-cameras", action="store_true", help="list cameras and the sizes/rates they offer")
    o = p.add_argument_group("outputs (any number)")
    for out in outputs().values():  # pipeline.outputs: one module per output
        o.add_argument(out.flag, dest=out.dest, **out.flag_options)
    p.add_argument("--tls-cert", metavar="PEM", help="certificate for the https page (with --tls-key); "
                                                     "default off loopback with --camera browser: a "
                                                     "self-signed one kept in the cache folder")
    p.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    p.add_argument("--codec", help="video encoder of --stream and --record: libx264 (default), h264_nvenc")
    p.add_argument("--audio", metavar="DEVICE",
                   help="audio device for stream/serve/record (default: the source's own audio); "
                        "e.g. default (PulseAudio/ALSA), :0 (macOS), 'Microphone (Realtek)' (Windows), "
                        "or FORMAT:ARGS")
    p.add_argument("--delay", type=float, metavar="MS", help="fixed output delay: frames released evenly at "
                                                             "capture time + MS")
    swap_flags(p, model_required=False)
    p.add_argument("--config", help="YAML file; its detect/align/blend sections apply")
    p.add_argument("--stats", metavar="FILE.json", help="write the statistics table as JSON at the end")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--in-flight", type=int, metavar="N", dest="in_flight",
                   help="frames in the swap chain at once, 1-4 (default: 1 with --camera browser, "
                        "else 2: two keep two CPU cores busy, at the cost of latency)")
    p.add_argument("--policy", choices=["newest", "block"],
                   help="newest (default): drop frames the swap cannot keep up with, so latency never "
                        "grows; block: process every frame")
    only_flag(p)
    map_flag(p)
    p.set_defaults(func=run)


def run(a) -> int:
    # OpenCV before PyAV: both wheels bundle libxcb-shm under the same file name, and with PyAV's
    # loaded first the window's Qt plugin hangs connecting to the display (in cv2.namedWindow).
    import cv2  # noqa: F401

    from swapstream.core.errors import ConfigError
    from swapstream.pipeline.config import LiveConfig, fill, live_values, merge

    if a.list_cameras:
        from swapstream.stages.devices import describe, list_cameras

        for line in describe(list_cameras()):
            print(line)
        return 0
    values = live_values(settings_file(a.config))
    chosen = {o.name: getattr(a, o.dest) for o in outputs().values()}
    flags = {"swap": swap_values(a), "camera": a.camera, "size": a.size, "fps": a.fps, "loop": a.loop or None,
             "codec": a.codec, "audio": a.audio,
             "tls_cert": a.tls_cert, "tls_key": a.tls_key, "delay_ms": a.delay, "duration": a.duration,
             "policy": a.policy, "in_flight": a.in_flight, "stats": a.stats, "identity": {"only": a.only},
             "map": map_values(a.map),
             "outputs": {k: v for k, v in chosen.items() if v is not None and v is not False}}
    cfg = fill(LiveConfig, merge(values, drop_none(flags)))
    if not cfg.swap.model and not cfg.map:
        raise ConfigError("--model DIR is required (a checkpoint from `swapstream train`; `make demo` "
                          "trains one into demo_output/model), or --map REF=MODEL for each person")
    from swapstream.pipeline.live import live

    live(cfg)
    return 0
