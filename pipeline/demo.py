"""`swapstream demo`: the whole job on sample faces that ship in packages, in a few minutes on a CPU.

Person A is scikit-image's astronaut photo, person B matplotlib's Grace Hopper photo, each turned
into a clip whose head moves, turns and changes scale, with a tone as audio. The demo extracts
both, trains lite64, converts A's clip to B's face and writes a side-by-side comparison image.
"""

from __future__ import annotations

import shutil
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from swapstream.core.packet import FramePacket
from swapstream.pipeline.config import ConvertConfig, SwapSection
from swapstream.pipeline.convert import convert
from swapstream.pipeline.samples import make_clip
from swapstream.stages.face.detect import DetectStage
from swapstream.training.extract import extract
from swapstream.training.job import train_job
from swapstream.training.loop import TrainConfig

# The demo trains for minutes, not the hours a real model gets, so it uses a higher learning
# rate than `swapstream train`'s default (5e-5, the 2017 value).
DEMO_LR = 5e-4
DEMO_STEPS = 3000
DEMO_SECONDS = 240  # training time budget: `make demo` must finish within 10 minutes, install included
SECONDS = 6


def _frames_at(path: Path, indices: list[int]) -> list[np.ndarray]:
    want, got = set(indices), {}
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i in want:
                got[i] = f.to_ndarray(format="rgb24")
    return [got[i] for i in indices if i in got]


def _face_box(frame: np.ndarray, detect: DetectStage) -> tuple[int, int, int]:
    """(cx, cy, side) of a square around the first face found, 2x its landmark height."""
    [p] = detect.process([FramePacket(0, None, Fraction(1, 30), frame, follows=None)])  # a still
    if not p.faces:
        h, w = frame.shape[:2]
        return w // 2, h // 2, min(w, h) // 2
    x0, y0, x1, y1 = p.faces[0].bbox
    return int((x0 + x1) / 2), int((y0 + y1) / 2), int(1.6 * max(x1 - x0, y1 - y0))


def _close_up(frame: np.ndarray, box: tuple[int, int, int], side: int) -> np.ndarray:
    cx, cy, s = box
    m = np.array([[side / s, 0, side / 2 - cx * side / s], [0, side / s, side / 2 - cy * side / s]])
    return cv2.warpAffine(frame, m, (side, side), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def comparison_image(a: Path, swapped: Path, b: Path, indices: list[int]) -> np.ndarray:
    """Rows of frames (A input | A -> B output | B reference) then close-ups of the three faces;
    (H, W, 3) uint8 with a header row of labels."""
    cols = [_frames_at(p, indices) for p in (a, swapped, b)]
    detect = DetectStage()
    rows = []
    for fa, fs, fb in zip(*cols):
        h = 270
        small = [cv2.resize(f, (int(f.shape[1] * h / f.shape[0]), h), interpolation=cv2.INTER_AREA)
                 for f in (fa, fs, fb)]
        box_a, box_b = _face_box(fa, detect), _face_box(fb, detect)
        close = [_close_up(fa, box_a, h), _close_up(fs, box_a, h), _close_up(fb, box_b, h)]
        rows.append(np.hstack(small + close))
    detect.close()
    body = np.vstack(rows)
    header = np.full((40, body.shape[1], 3), 255, np.uint8)
    x = 0
    labels = ["A (input)", "A -> B (output)", "B (reference)", "A face", "A -> B face", "B face"]
    widths = [small[0].shape[1]] * 3 + [270] * 3
    for label, w in zip(labels, widths):
        cv2.putText(header, label, (x + 10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 2, cv2.LINE_AA)
        x += w
    return np.vstack([header, body])


def run_demo(out: Path, steps: int | None = None, progress: bool = True) -> dict[str, Path]:
    """Run the demo into directory `out`; returns the paths of what it wrote."""
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    clip_a, clip_b = out / "person_a.mp4", out / "person_b.mp4"
    print(f"[1/5] building sample clips ({SECONDS} s, 30 fps, with audio)")
    make_clip(clip_a, ["astronaut"], seconds=SECONDS, seed=1)
    make_clip(clip_b, ["grace_hopper"], seconds=SECONDS, seed=2)

    print("[2/5] extracting faces")
    sets = {}
    for name, clip in (("a", clip_a), ("b", clip_b)):
        sets[name] = out / f"faceset_{name}"
        shutil.rmtree(sets[name], ignore_errors=True)  # the demo's own output: start afresh
        r = extract([clip], sets[name], progress=progress)
        print(f"      {r.faces} faces of {name.upper()} -> {sets[name]}")

    print(f"[3/5] training lite64 (up to {DEMO_STEPS} steps or {DEMO_SECONDS // 60} minutes)")
    model = out / "model"
    shutil.rmtree(model, ignore_errors=True)
    shutil.rmtree(f"{model}.train", ignore_errors=True)  # Ray's checkpoints of an earlier demo
    n = steps or DEMO_STEPS
    # the same Ray Train job as `swapstream train`, one worker on this machine
    result = train_job(TrainConfig(a=str(sets["a"]), b=str(sets["b"]), out=str(model), preset="lite64",
                                   steps=n, lr=DEMO_LR, save_every=max(n // 4, 1),
                                   preview_every=max(n // 10, 1),
                                   max_seconds=None if steps else DEMO_SECONDS), progress=progress)
    last = result.history[-1]
    print(f"      step {result.step}: loss A {last['loss_a']:.4f}, loss B {last['loss_b']:.4f} "
          f"({result.samples_per_s:.0f} samples/s)")

    print("[4/5] converting A's clip to B's face")
    swapped = out / "person_a_as_b.mp4"
    summary = convert(clip_a, swapped, ConvertConfig(swap=SwapSection(model=str(model))), progress=progress)
    for line in summary.lines():
        print("      " + line)

    print("[5/5] writing the comparison image")
    total = SECONDS * 30
    comp = out / "comparison.png"
    img = comparison_image(clip_a, swapped, clip_b, [total // 6, total // 2, 5 * total // 6])
    cv2.imwrite(str(comp), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    paths = {"swapped video": swapped, "comparison": comp, "training preview": model / "preview.png",
             "loss curve": model / "loss_curve.png",
             "model": model, "facesets": out, "contact sheet": sets["a"] / "_contact_sheet.png"}
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s. Outputs:")
    for k, v in paths.items():
        print(f"  {k:17s} {v}")
    return paths
