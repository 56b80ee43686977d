"""`swapstream demo`: the whole job on built-in sample faces."""

from __future__ import annotations

from pathlib import Path


def add(sub) -> None:
    p = sub.add_parser("demo", help="the whole job on built-in sample faces",
                       description="Build two sample clips, extract, train lite64 for a few "
                                   "minutes, convert, and write a comparison image.")
    p.add_argument("-o", "--output", default="demo_output", help="directory for everything (demo_output)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: a ~4 minute budget)")
    p.set_defaults(func=run)


def run(a) -> int:
    from swapstream.pipeline.demo import run_demo

    run_demo(Path(a.output), steps=a.steps, progress=not a.quiet)
    return 0
