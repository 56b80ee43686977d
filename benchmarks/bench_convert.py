"""Conversion speed: the local runner against a plain decode -> encode transcode, side by side.

Builds one 720p clip with one face (or takes --input), trains nothing: the swap model is a
lite64 checkpoint made with random weights unless --model is given (speed does not depend on
what the weights learnt). Runs, on the same clip and the same encoder settings:
  1. transcode: decode -> encode (the floor the codecs set)
  2. local runner: decode -> detect -> align -> swap -> blend -> encode
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
from pipeline.samples import make_clip  # noqa: E402
from stages.decode import DecodeSettings, DecodeStage  # noqa: E402
from stages.encode import EncodeSettings, EncodeStage  # noqa: E402


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
    ap.add_argument("--input", help="video to convert (default: a generated 720p clip)")
    ap.add_argument("--model", help="checkpoint (default: random lite64 weights)")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the generated clip")
    ap.add_argument("--json", default="bench_convert.json", help="where to write the figures")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_convert-"))
    src = Path(a.input) if a.input else make_clip(work / "in.mp4", ["astronaut"], a.seconds, 30,
                                                    1280, 720, 0.5)
    model = a.model
    if model is None:
        torch.manual_seed(0)
        model = str(save_checkpoint(work / "model", SwapModel(preset("lite64"), ["a", "b"]), "lite64",
                                    training={"coverage": 0.7}))
    cfg = ConvertConfig(model=model)
    n = count_frames(src)

    # warm-up, and a check of the outputs before anything is timed: the conversion must keep
    # every frame and swap the face in (nearly) all of them, or its speed means nothing
    warm = make_clip(work / "warm.mp4", ["astronaut"], 1.0, 30, 1280, 720, 0.5)
    check = convert(warm, work / "warm_out.mp4", cfg, progress=False)
    assert count_frames(work / "warm_out.mp4") == count_frames(warm) == check.frames, "frames lost"
    assert check.faces_swapped >= 0.9 * check.frames, "faces were not found: nothing would be timed"
    transcode(warm, work / "warm_transcode.mp4", cfg.encode.crf, cfg.encode.preset)

    t_transcode = transcode(src, work / "transcode.mp4", cfg.encode.crf, cfg.encode.preset)
    summary = convert(src, work / "local.mp4", cfg, progress=False)
    t_local = summary.seconds
    for out in (work / "transcode.mp4", work / "local.mp4"):
        assert count_frames(out) == n, f"{out} lost frames"
    assert summary.faces_swapped > 0.9 * n, "faces were not found in the timed run"

    res = {
        "clip": {"path": str(src), "frames": n, "size": "1280x720" if not a.input else "input"},
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()},
        "transcode_fps": n / t_transcode,
        "local_fps": n / t_local,
        "local_vs_transcode": t_transcode / t_local,
        "stage_busy_s": {s.name: round(s.busy_s, 2) for s in summary.stats.stages},
        "encode": {"crf": cfg.encode.crf, "preset": cfg.encode.preset},
    }
    Path(a.json).write_text(json.dumps(res, indent=2))
    print(f"\n{'pipeline':<28}{'frames/s':>10}{'vs transcode':>14}")
    print(f"{'transcode (decode+encode)':<28}{res['transcode_fps']:>10.1f}{1.0:>14.2f}")
    print(f"{'local runner (full swap)':<28}{res['local_fps']:>10.1f}{res['local_vs_transcode']:>14.2f}")
    print("stage busy seconds: " + ", ".join(f"{k} {v}" for k, v in res["stage_busy_s"].items()))
    print(f"figures written to {a.json}")


if __name__ == "__main__":
    main()
