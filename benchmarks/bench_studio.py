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

`--idle S` measures the studio's server instead: `swapstream studio` in a process of its own
with its page open in headless Chromium, its CPU use over S seconds idle, then the page's requests
(/api/state, as the page polls it) answered while an extract job works both cores.
Goals: ~0 % CPU idle with the page open; the page stays responsive during a long job.
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle(seconds: float) -> dict:
    """The studio's CPU with its page open and idle, and its answers during a busy job."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    sys.path.insert(0, str(Path(__file__).parent))
    from browser import chromium  # benchmarks/browser.py

    work = Path(tempfile.mkdtemp(prefix="bench_studio-idle-"))
    (work / "sources").mkdir()
    make_clip(work / "sources" / "long.mp4", ["astronaut"], 90.0, 30, 1280, 720, 0.5, seed=3)
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    argv = [sys.executable, "-m", "swapstream.pipeline.cli", "studio", "--workspace", str(work),
            "--serve", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url, timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        with chromium() as browser:
            page = browser.new_page()
            page.goto(url)
            page.wait_for_selector("input.source")
            time.sleep(3)
            c0, t0 = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(seconds)
            idle_pct = 100 * (cpu_seconds(proc.pid) - c0) / (time.monotonic() - t0)
            body = json.dumps({"sources": ["sources/long.mp4"], "faceset": "long"}).encode()
            req = urllib.request.Request(url + "api/extract", body, {"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=10).close()
            waits = []
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                t = time.perf_counter()
                urllib.request.urlopen(url + "api/state", timeout=10).read()
                waits.append(1000 * (time.perf_counter() - t))
                time.sleep(0.5)
            shown = page.evaluate("document.getElementById('running').textContent")
            jobs = json.loads(urllib.request.urlopen(url + "api/state", timeout=10).read())["jobs"]
            job = {k: jobs[0].get(k) for k in ("state", "progress", "error")} if jobs else None
    finally:
        proc.terminate()
        proc.wait(10)
    waits.sort()
    res = {"idle_cpu_pct": round(idle_pct, 2), "state_ms_p50": round(statistics.median(waits), 1),
           "state_ms_p95": round(waits[int(0.95 * (len(waits) - 1))], 1),
           "state_ms_max": round(max(waits), 1),
           "requests": len(waits), "page_saw_the_job": shown, "job": job}
    print(f"studio idle with its page open: {res['idle_cpu_pct']} % of a core over {seconds:.0f} s")
    print(f"/api/state during an extract job ({len(waits)} requests): p50 {res['state_ms_p50']} ms, "
          f"p95 {res['state_ms_p95']} ms, max {res['state_ms_max']} ms; the page showed {shown!r}; "
          f"the job then: {job}")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--model", help="a checkpoint folder (default: lite64 with random weights)")
    ap.add_argument("--json", default="bench_studio.json")
    ap.add_argument("--idle", type=float, metavar="S",
                    help="measure the server idle and during a job instead")
    a = ap.parse_args()
    if a.idle:
        Path(a.json).write_text(json.dumps(idle(a.idle), indent=1))
        return
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
