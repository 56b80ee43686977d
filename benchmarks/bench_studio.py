"""The studio's Tune view: how long one 1080p frame takes to re-render when a setting changes.

A 1080p clip of a sample face and a lite64 model (random weights unless --model: the speed is the
same); the Tuner (pipeline/studio/tune.py) renders a frame, then the same frame again with each of
a series of setting changes (a blend setting: only the blend runs again; a detect setting: the
chain runs again on the cached frame), then a new position in the video. Reports ms per render
(total, and decode / chain / blend), median and max of each kind.

    python benchmarks/bench_studio.py                 # 1920x1080, lite64 random weights
    python benchmarks/bench_studio.py --model models/alice_bob --size 1280x720

Goal (2-core CPU, lite64): a 1080p frame re-rendered with new settings in <= 1 s (the first
render after choosing the video, which loads the model, apart).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")

from swapstream.engines.checkpoint import save_checkpoint  # noqa: E402
from swapstream.engines.model import SwapModel, preset  # noqa: E402
from swapstream.pipeline.samples import make_clip  # noqa: E402
from swapstream.pipeline.studio.tune import Tuner  # noqa: E402

CHANGES = [  # (kind, settings) applied in turn to the same frame
    ("blend", {"blend": {"color": "hist"}}),
    ("blend", {"blend": {"color": "none"}}),
    ("blend", {"blend": {"sharpen": "none"}}),
    ("blend", {"blend": {"feather": 0.1}}),
    ("blend", {"blend": {"erode": 0.05, "mouth": "swap"}}),
    ("blend", {"blend": {"occlusion": "learned"}}),
    ("blend", {"blend": {"composite": "seamless"}}),
    ("chain", {"detect": {"min_face": 48}}),
    ("chain", {"align": {"smoothing": False}}),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--model", help="a checkpoint folder (default: lite64 with random weights)")
    ap.add_argument("--json", default="bench_studio.json")
    a = ap.parse_args()
    w, h = map(int, a.size.split("x"))
    work = Path(tempfile.mkdtemp(prefix="bench_studio-"))
    clip = make_clip(work / "clip.mp4", ["astronaut"], 4.0, 30, w, h, 0.5, seed=3)
    model = Path(a.model) if a.model else \
        save_checkpoint(work / "lite64", SwapModel(preset("lite64"), ["a", "b"]), "lite64")
    tuner = Tuner()
    rows = []
    first = tuner.render(clip, Path(model), 1.0, {})
    rows.append(("first (loads the model)", first["ms"]))
    for kind, values in CHANGES:
        rows.append((kind, tuner.render(clip, Path(model), 1.0, values)["ms"]))
    for t in (0.2, 2.5, 3.4):
        rows.append(("seek", tuner.render(clip, Path(model), t, {})["ms"]))
    tuner.close()
    print(f"{'render':<26}{'total':>7}{'decode':>8}{'chain':>7}{'blend':>7}  "
          f"(ms, {w}x{h}, faces {first['faces']})")
    for name, ms in rows:
        print(f"{name:<26}{ms['total']:>7}{ms['decode']:>8}{ms['chain']:>7}{ms['blend']:>7}")
    summary = {}
    for kind in ("blend", "chain", "seek"):
        totals = [ms["total"] for name, ms in rows if name == kind]
        summary[kind] = {"median_ms": statistics.median(totals), "max_ms": max(totals)}
        print(f"{kind}: median {summary[kind]['median_ms']:.0f} ms, max {summary[kind]['max_ms']} ms")
    worst = max(ms["total"] for name, ms in rows if name in ("blend", "chain"))
    print(f"goal: a setting change re-rendered in <= 1000 ms: {'met' if worst <= 1000 else 'NOT met'} "
          f"(worst {worst} ms)")
    Path(a.json).write_text(json.dumps({"size": a.size, "rows": rows, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
