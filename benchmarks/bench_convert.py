"""Conversion speed and memory: plain transcode, local runner and Ray runner, side by side.

Builds one clip with one face, 720p unless --size (or takes --input), trains nothing: the swap
model is a lite64 checkpoint made with random weights unless --model is given (speed does not
depend on what the weights learnt). Runs, on the same clip and the same encoder settings:
  1. transcode: decode -> encode (the floor the codecs set)
  2. local runner: decode -> detect -> align -> swap -> blend -> encode, one process
  3. Ray runner: the same stages as Ray actors (a fresh local Ray, started before the clock
     starts; its actors start within the run, as in `swapstream convert`)
Peak memory of each run: proportional set size (PSS) of this process plus every Ray process,
sampled every second. `--long-factor K` also converts a K times longer clip with the Ray runner
and reports both peaks (memory must not grow with the length of the video).
checks the outputs on a warm-up run first (frames kept, faces swapped), then prints frames/s of
each and their ratio, and writes JSON.

    python benchmarks/bench_convert.py [--seconds 10] [--json bench_convert.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("GLOG_minloglevel", "2")

import av  # noqa: E402
import torch  # noqa: E402

from engines.checkpoint import save_checkpoint  # noqa: E402
from engines.model import SwapModel, preset  # noqa: E402
from pipeline.config import ConvertConfig  # noqa: E402
from pipeline.convert import convert  # noqa: E402
from pipeline.local_runner import LocalRunner  # noqa: E402
from pipeline.ray_runner import should_fuse  # noqa: E402
from pipeline.samples import make_clip  # noqa: E402
from stages.decode import DecodeSettings, DecodeStage  # noqa: E402
from stages.encode import EncodeSettings, EncodeStage  # noqa: E402


class PeakMemory:
    """Samples the summed PSS (MiB) of this process and all Ray processes, once a second, in a
    thread. Reading a process's PSS walks its page tables (~6 ms for a process with torch loaded):
    sampled ten times a second over half a dozen Ray workers it took ~0.4 of a core from the run
    being measured, so the interval is kept long."""

    INTERVAL_S = 1.0

    def __init__(self) -> None:
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def now() -> float:
        """Proportional set size (PSS): shared pages, such as Ray's object store mapped by
        several workers, count once in all, not once per process as in summed RSS."""
        total = 0
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                args = (proc / "cmdline").read_bytes().decode(errors="replace")
                if int(proc.name) != os.getpid() and not any(
                        k in args for k in ("ray::", "raylet", "gcs_server")):
                    continue
                with open(proc / "smaps_rollup") as f:
                    total += next(int(x.split()[1]) for x in f if x.startswith("Pss:"))
            except (OSError, StopIteration):
                pass  # the process ended while being read, or is a kernel thread
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
        self.peak = max(self.peak, self.now())


def count_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def transcode(src: Path, dst: Path, crf: int, preset_name: str) -> float:
    """Plain decode -> encode through the same stage objects and runner; returns seconds, set-up
    included (as the conversion's time includes its own)."""
    t = time.perf_counter()
    dec = DecodeStage(DecodeSettings(str(src)))
    info = dec.setup()
    enc = EncodeStage(EncodeSettings(str(dst), crf=crf, preset=preset_name, audio_from=str(src)), info)
    LocalRunner([], enc, progress=False).run(dec.frames())
    dec.close()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", help="video to convert (default: a generated clip, see --size)")
    ap.add_argument("--model", help="checkpoint (default: random lite64 weights)")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the generated clip")
    ap.add_argument("--size", default="1280x720",
                    help="WxH of the generated clip (1920x1080 for the GPU-node target)")
    ap.add_argument("--json", default="bench_convert.json", help="where to write the figures")
    ap.add_argument("--long-factor", type=int, default=0,
                    help="also run the Ray runner on a clip this many times longer (memory check)")
    ap.add_argument("--fuse", default="auto", choices=["auto", "on", "off"],
                    help="Ray runner: align+swap+blend in one actor (auto: on <= 4 CPUs, no GPU)")
    ap.add_argument("--engine", default="auto",
                    help="swap engine (auto: what convert picks; eager: the reference)")
    ap.add_argument("--precision", default="auto", help="auto | fp32 | fp16 | bf16")
    ap.add_argument("--codec", default="libx264", help="video encoder (h264_nvenc on an NVIDIA GPU)")
    a = ap.parse_args()
    try:
        width, height = (int(x) for x in a.size.lower().split("x"))
    except ValueError:
        ap.error(f"--size {a.size!r}: give it as WIDTHxHEIGHT, e.g. 1920x1080")
    work = Path(tempfile.mkdtemp(prefix="bench_convert-"))
    src = Path(a.input) if a.input else make_clip(work / "in.mp4", ["astronaut"], a.seconds, 30,
                                                    width, height, 0.5)
    model = a.model
    if model is None:
        torch.manual_seed(0)
        model = str(save_checkpoint(work / "model", SwapModel(preset("lite64"), ["a", "b"]), "lite64",
                                    training={"coverage": 0.7}))
    cfg = ConvertConfig(model=model, runner="local", engine=a.engine, precision=a.precision)
    cfg.encode.codec = a.codec
    n = count_frames(src)

    # warm-up, and a check of the outputs before anything is timed: the conversion must keep
    # every frame and swap the face in (nearly) all of them, or its speed means nothing
    warm = make_clip(work / "warm.mp4", ["astronaut"], 1.0, 30, width, height, 0.5)
    check = convert(warm, work / "warm_out.mp4", cfg, progress=False)
    assert count_frames(work / "warm_out.mp4") == count_frames(warm) == check.frames, "frames lost"
    assert check.faces_swapped >= 0.9 * check.frames, "faces were not found: nothing would be timed"
    transcode(warm, work / "warm_transcode.mp4", cfg.encode.crf, cfg.encode.preset)

    # transcode and local runner first, while no Ray process exists to count in their memory
    with PeakMemory() as m_transcode:
        t_transcode = transcode(src, work / "transcode.mp4", cfg.encode.crf, cfg.encode.preset)
    with PeakMemory() as m_local:
        local = convert(src, work / "local.mp4", cfg, progress=False)

    import ray

    from pipeline.ray_runner import init_ray

    with av.open(str(src)) as c:
        frame_bytes = c.streams.video[0].width * c.streams.video[0].height * 3
    # A fresh local Ray, started before the clock starts (Ray's own start-up, ~3 s, is not part of
    # a conversion); the actors start within the run, as in `swapstream convert`, so their
    # start-up counts in frames/s (and is shown on its own).
    init_ray(None, False, frame_bytes)
    cpus, gpus = int(ray.cluster_resources().get("CPU", 1)), int(ray.cluster_resources().get("GPU", 0))
    ray_cfg = ConvertConfig(model=model, runner="ray", fuse=a.fuse, engine=cfg.engine, precision=a.precision)
    ray_cfg.encode.codec = a.codec
    with PeakMemory() as m_ray:
        ray_run = convert(src, work / "ray.mp4", ray_cfg, progress=False)
    ray.shutdown()
    for out in (work / "transcode.mp4", work / "local.mp4", work / "ray.mp4"):
        assert count_frames(out) == n, f"{out} lost frames"
    assert min(local.faces_swapped, ray_run.faces_swapped) > 0.9 * n, "faces were not found in the timed run"
    long_peaks = None
    if a.long_factor:
        long_src = make_clip(work / "long.mp4", ["astronaut"], a.seconds * a.long_factor, 30, width, height,
                             0.5)
        init_ray(None, False, frame_bytes)
        with PeakMemory() as m_long:
            convert(long_src, work / "long_out.mp4", ray_cfg, progress=False)
        ray.shutdown()
        long_peaks = {"seconds": [a.seconds, a.seconds * a.long_factor],
                      "peak_mib": [round(m_ray.peak), round(m_long.peak)]}

    def figures(r) -> dict:
        return {"fps": n / r.seconds, "vs_transcode": t_transcode / r.seconds,
                "vs_local": local.seconds / r.seconds, "startup_s": round(r.stats.startup_s, 2),
                "steady_fps": n / (r.seconds - r.stats.startup_s),
                "stages": {s.name: [s.actors, round(s.busy_s, 2), round(s.mean_queue, 2)]
                           for s in r.stats.stages}}

    res = {
        "clip": {"path": str(src), "frames": n, "size": a.size if not a.input else "input"},
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "ray_cpus": cpus, "ray_gpus": gpus,
                    "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()},
        "encode": {"codec": a.codec, "crf": cfg.encode.crf, "preset": cfg.encode.preset},
        "engine": {"asked": a.engine, "ran": cfg.engine, "precision": a.precision},
        "transcode": {"fps": n / t_transcode, "peak_mib": round(m_transcode.peak)},
        "local": {**figures(local), "peak_mib": round(m_local.peak),
                  "stages": {s.name: round(s.busy_s, 2) for s in local.stats.stages}},
        "ray": {**figures(ray_run), "peak_mib": round(m_ray.peak),
                "fused": should_fuse(a.fuse, cpus, gpus)},
        "long_input_memory": long_peaks,
    }
    Path(a.json).write_text(json.dumps(res, indent=2))
    print(f"\nswap engine: {cfg.engine} (asked: {a.engine}), precision {a.precision}")
    print(f"{'pipeline':<36}{'frames/s':>9}{'vs local':>9}{'start-up s':>11}{'after':>7}{'peak MiB':>9}")
    t = res["transcode"]
    print(f"{'transcode (decode+encode)':<36}{t['fps']:>9.1f}{'':>9}{'':>11}{'':>7}{t['peak_mib']:>9}")
    for name in ("local", "ray"):
        r = res[name]
        label = {"local": "local runner", "ray": "ray runner" + (" (align+swap+blend fused)"
                                                                  if r.get("fused") else "")}[name]
        print(f"{label:<36}{r['fps']:>9.1f}{r['vs_local']:>8.2f}x{r['startup_s']:>11.1f}"
              f"{r['steady_fps']:>7.1f}{r['peak_mib']:>9}")
    r = res["ray"]
    print(f"ray runner vs local runner: {r['vs_local']:.2f}x; after start-up "
          f"{r['steady_fps'] / res['local']['steady_fps']:.2f}x ('after': frames/s once frames flow)")
    if long_peaks:
        print(f"ray peak memory, {long_peaks['seconds'][0]:.0f} s vs {long_peaks['seconds'][1]:.0f} s input: "
              f"{long_peaks['peak_mib'][0]} vs {long_peaks['peak_mib'][1]} MiB")
    print(f"figures written to {a.json}")


if __name__ == "__main__":
    main()
