"""`swapstream studio`: the web app for the whole job, over a workspace folder."""

from __future__ import annotations


def add(sub) -> None:
    p = sub.add_parser("studio", help="a local web app for the whole job: facesets, training, conversion",
                       description="Serve the studio: a web page over a workspace folder (sources, facesets, "
                                   "models, settings, outputs, jobs) that extracts and cleans facesets, "
                                   "trains and converts. Every action runs the same swapstream command you "
                                   "could type, as a job in its own process; its command line is shown.")
    p.add_argument("--workspace", default="studio", metavar="DIR",
                   help="the workspace folder (created if missing; default ./studio)")
    p.add_argument("--serve", default="127.0.0.1:8090", metavar="[HOST:]PORT",
                   help="where to listen (default 127.0.0.1:8090); any address but loopback requires the "
                        "token the printed URL carries")
    p.add_argument("--max-upload-mb", type=int, default=2048, help="largest file an upload may be (2048 MB)")
    p.set_defaults(func=run)


def run(a) -> int:
    from swapstream.core.errors import ConfigError
    from swapstream.pipeline.outputs.serve import parse_serve
    from swapstream.pipeline.studio.server import StudioSettings, serve

    host, port = parse_serve(a.serve)
    if a.max_upload_mb < 1:
        raise ConfigError("--max-upload-mb must be at least 1")
    serve(StudioSettings(a.workspace, host, port, max_upload=a.max_upload_mb << 20))
    return 0
