"""Every GPU check in one run (`make gpu-check`), under 10 minutes on one H100/H200, one table.

1. the `gpu`-marked tests (engines on CUDA against eager fp32, fp16 training, ...)
2. bench_engines on CUDA: original64 at batch 1 and 32, fp32 and fp16, every engine that runs there
3. bench_convert --size 1920x1080 (10 s clip): frames/s with --engine auto and --engine eager,
   and with the NVENC encoder where this PyAV build has it
4. bench_live at 1280x720 with original64 (20 s): p95 against the 40 ms goal
5. bench_train --gpu: steps/s fp32 and bf16

Each part has a time limit; a part that fails or runs out of time is reported as such and the
rest still run. Exit 2 without a CUDA GPU (nothing here can be measured on a CPU).

    python benchmarks/gpu_check.py [--out gpu_check]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(name: str, cmd: list[str], limit_s: int, log: Path) -> tuple[str, float]:
    """Run one part; ('ok' | 'failed (rc N)' | 'timed out', seconds). Output goes to `log`."""
    t0 = time.time()
    with open(log, "w") as f:
        try:
            rc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=limit_s).returncode
            status = "ok" if rc == 0 else f"failed (rc {rc})"
        except subprocess.TimeoutExpired:
            status = "timed out"
    print(f"  {name}: {status} in {time.time() - t0:.0f} s (log {log})", flush=True)
    return status, time.time() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu_check", help="folder for logs and JSON (gpu_check)")
    a = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU is visible here; run it on a GPU machine (nothing to measure "
              "on a CPU)", file=sys.stderr)
        return 2
    out = Path(a.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
    parts = {
        "gpu tests": ([py, "-m", "pytest", "-q", "-m", "gpu", "-rs"], 100),
        "bench_engines": ([py, "benchmarks/bench_engines.py", "--device", "cuda", "--presets",
                           "original64", "--batches", "1,32", "--precisions", "fp32,fp16", "--seconds", "2",
                           "--json", str(out / "engines.json")], 190),
        "bench_convert auto": ([py, "benchmarks/bench_convert.py", "--size", "1920x1080", "--seconds", "10",
                                "--json", str(out / "convert_auto.json")], 80),
        "bench_convert eager": ([py, "benchmarks/bench_convert.py", "--size", "1920x1080", "--seconds", "10",
                                 "--engine", "eager", "--json", str(out / "convert_eager.json")], 70),
        "bench_convert nvenc": ([py, "benchmarks/bench_convert.py", "--size", "1920x1080", "--seconds", "10",
                                 "--codec", "h264_nvenc", "--json", str(out / "convert_nvenc.json")], 50),
        "bench_live": ([py, "benchmarks/bench_live.py", "--sizes", "1280x720", "--presets", "original64",
                        "--engines", "auto", "--seconds", "20", "--no-outputs", "--json",
                        str(out / "live.json")], 45),
        "bench_train": ([py, "benchmarks/bench_train.py", "--presets", "original64", "--workers", "1",
                         "--gpu", "--json", str(out / "train.json")], 60),
    }
    status = {name: run(name, cmd, limit, out / f"{name.replace(' ', '_')}.log")
              for name, (cmd, limit) in parts.items()}
    print(f"\n{'part':<22}{'status':<18}{'s':>5}  figures")
    for name, (st, secs) in status.items():
        print(f"{name:<22}{st:<18}{secs:>5.0f}  {summary(name, out)}")
    return 0 if all(st == "ok" for st, _ in status.values()) else 1


def summary(name: str, out: Path) -> str:
    """The headline figures of a part, read from its JSON (empty when it wrote none)."""
    try:
        if name == "bench_engines":
            rows = json.loads((out / "engines.json").read_text())["rows"]
            return "; ".join(f"{r['preset']} {r['engine']} {r['precision']} b{r['batch']}: "
                             f"{r['faces_per_s']:.0f}/s x{r['x_eager']}" for r in rows if r["batch"] == 32)
        if name.startswith("bench_convert"):
            r = json.loads((out / f"convert_{name.split()[-1]}.json").read_text())
            return f"{r['engine']['ran']}: local {r['local']['fps']:.1f} fps, ray {r['ray']['fps']:.1f} fps"
        if name == "bench_live":
            r = json.loads((out / "live.json").read_text())[0]["in-process"]
            return f"p50 {r['p50']} ms, p95 {r['p95']} ms (goal 40), {r['fps_out']} fps"
        if name == "bench_train":
            return (out / "train.json").read_text()[:200].replace("\n", " ")
    except (OSError, KeyError, IndexError, ValueError):
        return ""
    return ""


if __name__ == "__main__":
    sys.exit(main())
