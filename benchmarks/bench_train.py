"""Training speed: samples/s per preset, for 1 and 2 Ray Train workers (scaling efficiency), and
on a GPU in fp32 and bf16.

Builds two small facesets from the sample faces (or takes --a/--b), then for each preset and each
worker count runs `swapstream train`'s job for --warmup + --steps steps and reports samples/s
(both identities, all workers) over the timed steps, read from the run's history.jsonl. Checkpoint
and preview cost are kept out of the timed steps. On a CUDA machine, --gpu also times the
single-process loop (no Ray needed) in fp32 and bf16 (and with --compile, torch.compile), with
steps/s and the peak GPU memory (torch.cuda.max_memory_allocated over the whole run, preview and
checkpoint included).

    python benchmarks/bench_train.py                               # CPU: lite64, original64 x 1, 2 workers
    python benchmarks/bench_train.py --gpu --presets original64 hd128 --batch-size 64
    python benchmarks/bench_train.py --gpu --presets hd256 --batch-size 8 --face whole   # 256 px
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")

import torch  # noqa: E402

from swapstream.training.logs import read_history  # noqa: E402
from swapstream.training.loop import TrainConfig, train  # noqa: E402


def make_facesets(work: Path) -> tuple[str, str]:
    """Two facesets extracted from 2 s sample clips (needs MediaPipe and PyAV)."""
    from swapstream.pipeline.samples import make_clip
    from swapstream.training.extract import ExtractSettings, extract

    dirs = []
    for ident, face in (("a", "astronaut"), ("b", "grace_hopper")):
        clip = make_clip(work / f"{ident}.mp4", [face], 2.0, 30, 640, 360, 0.6)
        extract([str(clip)], str(work / ident), ExtractSettings(every=2), progress=False)
        dirs.append(str(work / ident))
    return dirs[0], dirs[1]


def timed(rows: list[dict], warmup: int, batch: int, workers: int) -> dict:
    rows = [r for r in rows if r["step"] > warmup]
    step_s = sum(r["step_s"] for r in rows) / max(len(rows), 1)
    return {"steps": len(rows), "step_ms": round(step_s * 1000, 1), "steps_per_s": round(1 / step_s, 2),
            "samples_per_s": round(2 * batch * workers / step_s, 1)}


def run_one(a: str, b: str, out: Path, preset: str, workers: int, args, **kw) -> dict:
    total = args.warmup + args.steps
    cfg = TrainConfig(a=a, b=b, out=str(out), preset=preset, steps=total, batch_size=args.batch_size,
                      face=args.face, save_every=total, preview_every=total, log_every=1, workers=workers,
                      **kw)
    t = time.perf_counter()
    cuda = kw.get("device") == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    if kw.get("device"):
        train(cfg, progress=False)
    else:
        from swapstream.training.job import train_job

        train_job(cfg, progress=False)
    res = timed(read_history(out), args.warmup, args.batch_size, workers)
    res["wall_s"] = round(time.perf_counter() - t, 1)
    if cuda:
        res["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a"), ap.add_argument("--b")
    ap.add_argument("--presets", nargs="+", default=["lite64", "original64"])
    ap.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--batch-size", type=int, default=16, help="per identity, per worker (16)")
    ap.add_argument("--face", choices=["face", "whole"], default="face", help="the crop (train --face)")
    ap.add_argument("--steps", type=int, default=8, help="timed steps (8)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (3)")
    ap.add_argument("--gpu", action="store_true", help="also time one CUDA process: fp32, bf16")
    ap.add_argument("--compile", action="store_true", help="with --gpu: also bf16 + torch.compile")
    ap.add_argument("--json", default="bench_train.json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_train-"))
    a, b = (args.a, args.b) if args.a else make_facesets(work)
    results: dict = {"machine": {"cpu": platform.processor() or platform.machine(),
                                 "cores": os.cpu_count(), "cuda": torch.cuda.is_available(),
                                 "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
                     "batch_size": args.batch_size, "face": args.face, "cpu": {}, "gpu": {}}
    if not args.gpu:
        for preset in args.presets:
            per = {}
            for n in args.workers:
                per[n] = run_one(a, b, work / f"{preset}-{n}", preset, n, args)
                print(f"{preset:<11} {n} worker(s): {per[n]['samples_per_s']:>8.1f} samples/s "
                      f"({per[n]['step_ms']} ms/step)", flush=True)
            if 1 in per and len(per) > 1:
                n = max(per)
                eff = per[n]["samples_per_s"] / (n * per[1]["samples_per_s"])
                per["scaling_efficiency"] = round(eff, 2)
                print(f"{preset:<11} scaling efficiency 1 -> {n} workers: {eff:.0%}")
            results["cpu"][preset] = per
    else:
        modes = {"fp32": {"amp": "off"}, "bf16": {"amp": "bf16"}}
        if args.compile:
            modes["bf16+compile"] = {"amp": "bf16", "compile": True}
        for preset in args.presets:
            for mode, kw in modes.items():
                r = run_one(a, b, work / f"{preset}-{mode}", preset, 1, args, device="cuda", **kw)
                results["gpu"][f"{preset}/{mode}"] = r
                print(f"{preset:<11} {mode:<13} {r['samples_per_s']:>9.1f} samples/s "
                      f"({r['steps_per_s']} steps/s, {r['step_ms']} ms/step), peak GPU memory "
                      f"{r['peak_gpu_gib']} GiB", flush=True)
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
