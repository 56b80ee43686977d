"""Swap engine speed: faces/s of every engine that runs here x preset x batch, against eager fp32.

For each preset (lite64, original64, hd128; random weights: speed does not depend on what they
learnt), each engine available on the device and each precision it runs there, and batch 1, 8
and 32: faces per second through engine.swap() (uint8 crops in, uint8 faces and float masks
out, as the swap stage calls it), and at batch 1 the p50/p95 milliseconds per call. Batch 1 uses
an engine built for one face per call (what live mode builds: static shapes, CUDA graphs for
compile on a GPU); batches 8 and 32 one built for up to 32. Build time (export / compile, with
empty caches) is reported beside. The ratio column is against eager fp32 at the same batch.

    python benchmarks/bench_engines.py                       # this machine's default device
    python benchmarks/bench_engines.py --device cuda --presets original64 --batches 1,32

Goals: on the 2-core CPU the best engine >= 1.5x eager for original64 at batch 32 and at batch
1; on a GPU, tensorrt fp16 >= 3x eager fp32 at batch 32. JSON to bench_engines.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ["SWAPSTREAM_CACHE"] = tempfile.mkdtemp(prefix="bench-engines-cache-")  # cold builds
os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(os.environ["SWAPSTREAM_CACHE"], "inductor")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from swapstream.engines import available_engines, create_engine  # noqa: E402
from swapstream.engines.checkpoint import save_checkpoint  # noqa: E402
from swapstream.engines.device import cpu_has_bf16, resolve_device  # noqa: E402
from swapstream.engines.model import PRESETS, SwapModel, preset  # noqa: E402
from swapstream.engines.registry import engine_class  # noqa: E402


def variants(device: torch.device, only: list[str] | None,
             precisions: list[str] | None = None) -> list[tuple[str, str]]:
    """(engine, precision) pairs to measure, eager fp32 first."""
    kind = "cuda" if device.type == "cuda" else "cpu"
    out = [("eager", "fp32")]
    for name in available_engines(str(device)):
        if only and name not in only:
            continue
        for prec in engine_class(name).precisions[kind]:
            if kind == "cpu" and prec == "bf16" and not cpu_has_bf16():
                continue  # emulated: slower than fp32
            if precisions and prec not in precisions:
                continue
            if (name, prec) not in out:
                out.append((name, prec))
    return out


def measure(engine, crops: np.ndarray, seconds: float, min_calls: int) -> tuple[float, list[float]]:
    """(faces/s, per-call ms) over at least `seconds` and `min_calls` calls, after one warm call."""
    engine.swap(crops, "b")
    times = []
    start = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        engine.swap(crops, "b")
        times.append(1000 * (time.perf_counter() - t))
    return len(crops) * len(times) / (time.perf_counter() - start), times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--engines", default="", help="comma-separated engines (default: all that run here)")
    ap.add_argument("--precisions", default="",
                    help="comma-separated precisions (default: all each engine runs)")
    ap.add_argument("--seconds", type=float, default=3.0, help="time per measurement (3)")
    ap.add_argument("--json", default="bench_engines.json")
    a = ap.parse_args()
    device = resolve_device(a.device)
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    work = Path(tempfile.mkdtemp(prefix="bench-engines-"))
    batches = [int(b) for b in a.batches.split(",")]
    todo = variants(device, [e for e in a.engines.split(",") if e] or None,
                    [p for p in a.precisions.split(",") if p] or None)
    print(f"device {device} ({torch.get_num_threads()} threads on CPU), engines: "
          f"{', '.join(f'{e} {p}' for e, p in todo)}", flush=True)
    rows = []
    for name in a.presets.split(","):
        torch.manual_seed(0)
        ckpt = save_checkpoint(work / name, SwapModel(preset(name), ["a", "b"]), name)
        size = preset(name).size
        rng = np.random.default_rng(0)
        crops = rng.integers(0, 256, (max(batches), size, size, 3), dtype=np.uint8)
        base: dict[int, float] = {}
        for eng_name, prec in todo:
            for per_call in sorted({1 if b == 1 else 32 for b in batches}):
                t0 = time.perf_counter()
                try:
                    eng = create_engine(eng_name, ckpt, device=str(device), precision=prec,
                                        batch_size=per_call)
                    eng.warmup("b", (1,) if per_call == 1 else (8,))
                except Exception as err:  # noqa: BLE001 - one engine failing must not end the run
                    print(f"  {name} {eng_name} {prec}: failed to build: {err}", flush=True)
                    break
                build_s = time.perf_counter() - t0
                for b in (b for b in batches if (b == 1) == (per_call == 1)):
                    fps, ms = measure(eng, crops[:b], a.seconds, 20 if b == 1 else 3)
                    if (eng_name, prec) == ("eager", "fp32"):
                        base[b] = fps
                    ratio = round(fps / base[b], 2) if b in base else None
                    row = {"preset": name, "engine": eng_name, "precision": prec, "batch": b,
                           "faces_per_s": round(fps, 1), "x_eager": ratio,
                           "p50_ms": round(float(np.percentile(ms, 50)), 2),
                           "p95_ms": round(float(np.percentile(ms, 95)), 2), "build_s": round(build_s, 1)}
                    rows.append(row)
                    print(f"  {name:<11}{eng_name:<9}{prec:<6}batch {b:<3}{fps:8.1f} faces/s  x{ratio}  "
                          f"p50 {row['p50_ms']} ms  p95 {row['p95_ms']} ms  (built in {build_s:.1f} s)",
                          flush=True)
                del eng
    Path(a.json).write_text(json.dumps({"device": str(device), "rows": rows}, indent=1))
    print(f"\n{'preset':<12}{'engine':<10}{'prec':<6}{'batch':>6}{'faces/s':>10}{'x eager':>9}"
          f"{'p50 ms':>9}{'p95 ms':>9}{'build s':>9}")
    for r in rows:
        p50, p95 = (f"{r['p50_ms']:.1f}", f"{r['p95_ms']:.1f}") if r["batch"] == 1 else ("", "")
        print(f"{r['preset']:<12}{r['engine']:<10}{r['precision']:<6}{r['batch']:>6}{r['faces_per_s']:>10.1f}"
              f"{r['x_eager'] or 0:>9.2f}{p50:>9}{p95:>9}{r['build_s']:>9.1f}")
    for name in a.presets.split(","):
        for b in (1, 32):
            cands = [r for r in rows if r["preset"] == name and r["batch"] == b and r["x_eager"]]
            if cands:
                best = max(cands, key=lambda r: r["x_eager"])
                print(f"best for {name} at batch {b}: {best['engine']} {best['precision']} "
                      f"x{best['x_eager']:.2f} eager fp32")


if __name__ == "__main__":
    main()
