"""Conversion speed and memory as a user gets them: plain transcode, local runner, the default
(`--runner auto`) and the Ray runner, each timed whole, start-up included, on several inputs.

Inputs (generated, with audio; `--inputs` picks some, `--input FILE` takes yours):
  720p-20s      one face, 20 s, 1280x720 (the clip of issue 12's table)
  720p-80s      one face, 80 s (an input of more than a minute)
  720p-20s-pan  one face, 20 s, the camera panning (every tile of the face search changes)
  1080p-3faces  three faces, 10 s, 1920x1080
Per input, in this order, each on the same clip with the same encoder settings (crf 18, preset fast):
  1. transcode: decode -> encode in YUV, x264 free to use every core, audio copied, no RGB round
     trip: what `ffmpeg -i in -c:v libx264 -crf 18 -preset fast -c:a copy out` does, the floor
     the codecs set;
  2. local:   `swapstream convert IN OUT --model M --runner local` as a subprocess;
  3. default: the same without --runner (auto), with the choice it made and why;
  4. ray:     `--runner ray` (it starts its own local Ray, as a user's run does).
Each row: seconds whole (process start to exit), frames/s, speed against the transcode and the
local runner, and the peak memory (PSS) of the process tree and every Ray process, sampled once a
second. Then the local runner's stage table: busy ms per frame and per face.

The swap model is lite64 with random weights unless --model (speed does not depend on what the
weights learnt). A warm-up conversion fills the engine cache first and checks the outputs (every
frame kept, the faces swapped), so no row pays for an ONNX export. Note: each conversion records
its rate in the swapstream cache's rates.json, which `--runner auto` reads; so the default row
uses what the local and Ray rows before it measured on this machine, as a user's would.

    python benchmarks/bench_convert.py [--inputs 720p-20s,1080p-3faces] [--json bench_convert.json]
    python benchmarks/bench_convert.py --size 1920x1080 --seconds 10 [--engine eager] [--codec h264_nvenc]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")

import av  # noqa: E402

from swapstream.pipeline.samples import make_clip  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# name: (faces, seconds, width, height, head share of the frame height, camera pan px a frame)
INPUTS = {
    "720p-20s": (["astronaut"], 20.0, 1280, 720, 0.5, 0.0),
    "720p-80s": (["astronaut"], 80.0, 1280, 720, 0.5, 0.0),
    "720p-20s-pan": (["astronaut"], 20.0, 1280, 720, 0.5, 3.0),
    "1080p-3faces": (["astronaut", "grace_hopper", "astronaut"], 10.0, 1920, 1080, 0.3, 0.0),
}
RUNS = ("local", "default", "ray")


class PeakMemory:
    """Samples, once a second in a thread, the summed PSS (MiB) of this process, the processes
    whose command line holds `marker`, and all Ray processes. Reading a process's PSS walks its
    page tables (~6 ms for one with torch loaded), so the interval is kept long."""

    INTERVAL_S = 1.0

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def now(self) -> float:
        total = 0
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                args = (proc / "cmdline").read_bytes().decode(errors="replace")
                if int(proc.name) != os.getpid() and self.marker not in args and not any(
                        k in args for k in ("ray::", "raylet", "gcs_server")):
                    continue
                with open(proc / "smaps_rollup") as f:
                    total += next(int(x.split()[1]) for x in f if x.startswith("Pss:"))
            except (OSError, StopIteration):
                pass  # ended while being read, or a kernel thread
        return total / 1024

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            self._stop.wait(self.INTERVAL_S)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def count_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def transcode(src: Path, dst: Path, crf: int, preset: str, codec: str = "libx264") -> float:
    """decode -> encode in the decoder's own YUV (no RGB), audio packets copied; returns seconds."""
    t = time.perf_counter()
    with av.open(str(src)) as i, av.open(str(dst), "w") as o:
        vi = i.streams.video[0]
        vi.thread_type = "AUTO"
        ai = i.streams.audio[0] if i.streams.audio else None
        vo = o.add_stream(codec, rate=vi.average_rate)
        vo.width, vo.height, vo.pix_fmt = vi.width, vi.height, "yuv420p"
        vo.options = {"crf": str(crf), "preset": preset} if codec == "libx264" else {}
        ao = o.add_stream_from_template(ai) if ai is not None else None
        for pkt in i.demux(*[s for s in (vi, ai) if s is not None]):
            if pkt.stream is ai:
                if pkt.dts is not None:
                    pkt.stream = ao
                    o.mux(pkt)
                continue
            for f in pkt.decode():
                f.pict_type = av.video.frame.PictureType.NONE
                if f.format.name != "yuv420p":
                    f = f.reformat(format="yuv420p")
                o.mux(vo.encode(f))
        o.mux(vo.encode())
    return time.perf_counter() - t


def cli_convert(src: Path, dst: Path, model: str, runner: str | None, extra: list[str]) -> dict:
    """Run `swapstream convert` as a user does; returns its --stats JSON with the whole run's
    seconds (process start to exit) and peak memory added."""
    stats = dst.with_suffix(".stats.json")
    cmd = [sys.executable, "-m", "swapstream.pipeline.cli", "-q", "convert", str(src), str(dst),
           "--model", model,
           "--stats", str(stats), *extra] + (["--runner", runner] if runner else [])
    marker = str(dst)
    with PeakMemory(marker) as mem:
        t = time.perf_counter()
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        whole = time.perf_counter() - t
    if p.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    res = json.loads(stats.read_text())
    return {**res, "whole_s": whole, "peak_mib": round(mem.peak)}


def bench_input(name: str, src: Path, work: Path, model: str, a) -> dict:
    extra = ["--engine", a.engine, "--precision", a.precision, "--codec", a.codec]
    n = count_frames(src)
    with av.open(str(src)) as c:
        v = c.streams.video[0]
        size = f"{v.width}x{v.height}"
    print(f"\n{name}: {src.name}, {n} frames, {size}", flush=True)
    with PeakMemory("no process has this marker") as m_t:
        t_transcode = transcode(src, work / f"{name}-transcode.mp4", 18, "fast",
                                "libx264" if a.codec.startswith("libx264") else a.codec)
    rows = {"transcode": {"whole_s": t_transcode, "peak_mib": round(m_t.peak)}}
    for run in RUNS:
        runner = {"local": "local", "default": None, "ray": "ray"}[run]
        out = work / f"{name}-{run}.mp4"
        rows[run] = cli_convert(src, out, model, runner, extra)
        assert count_frames(out) == n, f"{out}: frames lost"
        r = rows[run]
        print(f"  {run:<9} {r['whole_s']:6.1f} s  ({r['runner']}: {r['runner_reason']})", flush=True)
    for r in rows.values():
        r["fps"] = n / r["whole_s"]
        r["vs_transcode"] = t_transcode / r["whole_s"]
        r["vs_local"] = rows["local"]["whole_s"] / r["whole_s"]
    faces = rows["local"]["faces"]
    assert rows["local"]["faces_swapped"] >= 0.9 * faces > 0, "faces were not found: nothing was timed"
    return {"frames": n, "size": size, "rows": rows}


def print_input(name: str, res: dict) -> None:
    rows = res["rows"]
    print(f"\n{name} ({res['frames']} frames, {res['size']}; seconds whole, start-up included)")
    print(f"{'pipeline':<38}{'s':>7}{'frames/s':>10}{'vs transcode':>14}{'vs local':>10}{'peak MiB':>10}")
    for run, r in rows.items():
        label = {"transcode": "transcode (YUV, audio copied)", "local": "local runner",
                 "ray": "ray runner"}.get(run, f"default (chose {r.get('runner', '?')})")
        print(f"{label:<38}{r['whole_s']:>7.1f}{r['fps']:>10.1f}{r['vs_transcode']:>13.2f}x"
              f"{r['vs_local']:>9.2f}x{r['peak_mib']:>10}")
    print(f"default: runner: {rows['default']['runner']} ({rows['default']['runner_reason']})")
    stages = rows["local"]["stages"]
    print(f"local runner, per stage: {'  '.join(_stage_cell(s) for s in stages)}")


def _stage_cell(s: dict) -> str:
    per_frame = 1000 * s["busy_s"] / max(s["frames"], 1)
    per_face = f" ({1000 * s['busy_s'] / s['faces']:.1f}/face)" if s.get("faces") else ""
    return f"{s['name']} {per_frame:.1f} ms{per_face}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", default=",".join(INPUTS),
                    help=f"generated inputs to run, comma-separated, from: {', '.join(INPUTS)}")
    ap.add_argument("--input", help="your own video instead of the generated ones")
    ap.add_argument("--size", help="WxH: one generated one-face clip of this size instead (with --seconds)")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the --size clip")
    ap.add_argument("--model", help="checkpoint (default: random lite64 weights)")
    ap.add_argument("--json", default="bench_convert.json", help="where to write the figures")
    ap.add_argument("--engine", default="auto", help="swap engine (auto: what convert picks)")
    ap.add_argument("--precision", default="auto", help="auto | fp32 | fp16 | bf16")
    ap.add_argument("--codec", default="libx264", help="video encoder (h264_nvenc on an NVIDIA GPU)")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_convert-"))
    if a.input:
        todo = {Path(a.input).stem: Path(a.input)}
    elif a.size:
        try:
            w, h = (int(x) for x in a.size.lower().split("x"))
        except ValueError:
            ap.error(f"--size {a.size!r}: give it as WIDTHxHEIGHT, e.g. 1920x1080")
        todo = {f"{w}x{h}-{a.seconds:g}s": (["astronaut"], a.seconds, w, h, 0.5, 0.0)}
    else:
        unknown = [x for x in a.inputs.split(",") if x not in INPUTS]
        if unknown:
            ap.error(f"unknown input {', '.join(unknown)}; choose from {', '.join(INPUTS)}")
        todo = {x: INPUTS[x] for x in a.inputs.split(",")}
    model = a.model
    if model is None:
        import torch

        from swapstream.engines.checkpoint import save_checkpoint
        from swapstream.engines.model import SwapModel, preset

        torch.manual_seed(0)
        model = str(save_checkpoint(work / "model", SwapModel(preset("lite64"), ["a", "b"]), "lite64",
                                    training={"coverage": 0.7}))
    # warm-up: fills the engine cache (an ONNX export is not part of any timed row) and checks
    # that a conversion keeps every frame and swaps the face
    warm = make_clip(work / "warm.mp4", ["astronaut"], 1.0, 30, 640, 360, 0.5)
    check = cli_convert(warm, work / "warm_out.mp4", model, "local", ["--engine", a.engine, "--precision",
                                                                    a.precision, "--codec", a.codec])
    assert check["frames"] == count_frames(warm) and check["faces_swapped"] >= 0.9 * check["frames"], check
    results = {}
    for name, spec in todo.items():
        if isinstance(spec, Path):
            src = spec
        else:
            faces, seconds, w, h, share, pan = spec
            print(f"making {name} ...", flush=True)
            src = make_clip(work / f"{name}.mp4", faces, seconds, 30, w, h, share, pan=pan)
        results[name] = bench_input(name, src, work, model, a)
    res = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
           "encode": {"codec": a.codec, "crf": 18, "preset": "fast"},
           "engine": {"asked": a.engine, "precision": a.precision}, "inputs": results}
    Path(a.json).write_text(json.dumps(res, indent=2))
    for name, r in results.items():
        print_input(name, r)
    print(f"\nfigures written to {a.json}")


if __name__ == "__main__":
    main()
