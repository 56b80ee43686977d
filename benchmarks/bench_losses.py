"""The face-network losses, each with and without, at the same steps: sharpness, identity, speed.

Trains lite64 on the demo's pair (swapstream.pipeline.demo's clips and extraction: astronaut = A,
Grace Hopper = B) at the demo's learning rate and batch, the same seed and steps for every
variant, in this process (`--runner local`'s loop), with the perceptual term, the identity term,
both, or neither (training/faceloss.py). Then, on every face of each faceset (unaugmented crops):

  - sharpness: high-frequency energy, the mean square of the grey image minus its Gaussian blur
    (sigma 1 px), inside the face hull, of the model's output over that of the face it should
    show: A's reconstruction over A's crop ("recon A"), B's over B's, and the swap (A's face
    through B's decoder) over A's crop, the input it replaces ("swap"), and over B's crops on
    average ("swap/B": B's own faces may be sharper or softer than A's); 1.0 is as sharp;
  - identity of the swap: the swapped crop pasted back into A's faceset image (the decoder's mask
    times the face hull, as the blend pastes it), embedded by dlib's recogniser from the image's own
    landmarks (engines/identity.py, not the training loss's geometry), distance_to B's and A's
    faceset embeddings: share of faces closer to B, mean distance to B;
  - detail reproduced (reconstructions): 1 - the energy of (output's high frequencies - the
    face's) over the face's; 1 is every detail in place, 0 is none (a blur), below 0 invented ones;
  - speed: ms per training step, the variants' steps interleaved (one step of each in turn,
    --time-steps rounds, median) so that a shared CPU's load falls on all alike, and as a
    multiple of the base's ("x base").

    python benchmarks/bench_losses.py [--steps 400] [--perceptual 1.0] [--identity 2.0]
        [--variants base perceptual identity both] [--seed 0] [--json bench_losses.json]

The table is printed last; figures go to --json. A shared CPU makes ms/step noisy: compare the
variants of one run, not runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from swapstream.core.faceset import FACESET_COVERAGE, load_faceset  # noqa: E402
from swapstream.engines.checkpoint import load_checkpoint  # noqa: E402
from swapstream.engines.identity import FaceEmbedder, distance_to  # noqa: E402
from swapstream.engines.model import SwapModel, preset  # noqa: E402
from swapstream.pipeline.demo import DEMO_LR, SECONDS  # noqa: E402
from swapstream.training.augment import AugmentConfig, TrainingFaces, crop_to_faceset  # noqa: E402
from swapstream.training.loop import TrainConfig, face_losses, train  # noqa: E402
from swapstream.training.step import IDS, Batch, PairNet, Stepper, train_step  # noqa: E402

COVERAGE = 0.7
VARIANTS = ("base", "perceptual", "identity", "both")


def make_facesets(work: Path) -> tuple[Path, Path]:
    """The demo's two facesets (its clips, seeds 1 and 2, and its extraction)."""
    from swapstream.pipeline.samples import make_clip
    from swapstream.training.extract import extract

    dirs = []
    for ident, face, seed in (("a", "astronaut", 1), ("b", "grace_hopper", 2)):
        clip = make_clip(work / f"person_{ident}.mp4", [face], seconds=SECONDS, seed=seed)
        extract([clip], work / f"faceset_{ident}", progress=False)
        dirs.append(work / f"faceset_{ident}")
    return dirs[0], dirs[1]


def detail(x: torch.Tensor) -> torch.Tensor:
    """x (N, 3, S, S) in [0, 1] -> (N, 1, S, S): grey minus its Gaussian blur (sigma 1 px)."""
    grey = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    r = torch.arange(-3, 4, dtype=torch.float32)
    g = torch.exp(-r**2 / 2)
    g = g / g.sum()
    blur = F.conv2d(F.pad(grey, (3, 3, 3, 3), mode="replicate"), g.view(1, 1, 1, 7))
    return grey - F.conv2d(blur, g.view(1, 1, 7, 1))


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N, 1, S, S) values, mask -> (N,) their mean inside the mask."""
    return (x * mask).sum((1, 2, 3)) / mask.sum((1, 2, 3)).clamp_min(1)


def high_freq(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x (N, 3, S, S) in [0, 1], mask (N, 1, S, S) -> (N,) high-frequency energy inside the mask."""
    return masked_mean(detail(x) ** 2, mask)


def paste(images: np.ndarray, crops: torch.Tensor, alpha: torch.Tensor, size: int) -> np.ndarray:
    """Swapped crops (N, 3, S, S) pasted into faceset images (N, F, F, 3) uint8 with alpha (N, 1,
    S, S): (N, F, F, 3) uint8."""
    n, side = len(images), images.shape[1]
    fs_to_crop = np.linalg.inv(crop_to_faceset(size, COVERAGE, side, FACESET_COVERAGE))  # normalised
    theta = torch.tensor(fs_to_crop[:2], dtype=torch.float32).expand(n, 2, 3)
    grid = F.affine_grid(theta, [n, 4, side, side], align_corners=False)
    warped = F.grid_sample(torch.cat([crops, alpha], 1), grid, align_corners=False)  # zeros outside
    base = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    out = warped[:, 3:] * warped[:, :3] + (1 - warped[:, 3:]) * base
    return (out.permute(0, 2, 3, 1) * 255).round().clamp(0, 255).byte().numpy()


@torch.no_grad()
def measure(model_dir: Path, dir_a: Path, dir_b: Path, embedder: FaceEmbedder,
            refs: tuple[np.ndarray, np.ndarray]) -> dict:
    model = load_checkpoint(model_dir).model.eval()
    size = model.cfg.size
    fs_a, fs_b = load_faceset(dir_a), load_faceset(dir_b)
    out = {}
    crops = {}
    for ident, fs in (("a", fs_a), ("b", fs_b)):
        data = TrainingFaces(fs, size, COVERAGE)
        _, target, mask = data._crop(data.faces, AugmentConfig.off(), None)
        crops[ident] = (target, mask[:, :1])
        rec = model(target, ident)[:, :3]
        hull = mask[:, :1]
        out[f"sharp_recon_{ident}"] = float((high_freq(rec, hull) / high_freq(target, hull)).mean())
        # the target's detail the reconstruction reproduces: 1 - error energy / target energy
        miss = masked_mean((detail(rec) - detail(target)) ** 2, hull) / high_freq(target, hull)
        out[f"detail_{ident}"] = float((1 - miss).mean())
        out[f"l1_recon_{ident}"] = float(((rec - target).abs().mean(1, keepdim=True) * mask[:, :1]).sum()
                                         / mask[:, :1].sum())
    target, hull = crops["a"]
    swapped = model(target, "b")
    hf_swap = high_freq(swapped[:, :3], hull)
    out["sharp_swap"] = float((hf_swap / high_freq(target, hull)).mean())
    out["sharp_swap_b"] = float(hf_swap.mean() / high_freq(*crops["b"]).mean())
    pasted = paste(fs_a.images, swapped[:, :3], swapped[:, 3:] * hull, size)
    emb = embedder.embed_faces(list(zip(pasted, fs_a.landmarks)))
    d_b, d_a = distance_to(emb, refs[1]), distance_to(emb, refs[0])
    out["closer_to_b"] = float((d_b < d_a).mean())
    out["dist_b"], out["dist_a"] = float(d_b.mean()), float(d_a.mean())
    return out


def run_variant(name: str, weights: tuple[float, float], dirs: tuple[Path, Path], work: Path,
                args) -> dict:
    out = work / f"model_{name}"
    shutil.rmtree(out, ignore_errors=True)
    r = train(TrainConfig(a=str(dirs[0]), b=str(dirs[1]), out=str(out), preset="lite64", steps=args.steps,
                          lr=DEMO_LR, seed=args.seed, save_every=args.steps, preview_every=args.steps,
                          perceptual_weight=weights[0], identity_weight=weights[1]), progress=False)
    return {"perceptual_weight": weights[0], "identity_weight": weights[1],
            "loss_a": round(r.history[-1]["loss_a"], 4), "loss_b": round(r.history[-1]["loss_b"], 4),
            "model": out}


def time_variants(on: dict[str, tuple[float, float]], dirs: tuple[Path, Path],
                  rounds: int) -> dict[str, float]:
    """{variant: median ms of one training step}, one step of each variant in turn (the same
    batches), after one untimed round."""
    steppers = {}
    data = [TrainingFaces(load_faceset(d), 64, COVERAGE) for d in dirs]
    for name, (perceptual, identity) in on.items():
        cfg = TrainConfig(a=str(dirs[0]), b=str(dirs[1]), out="unused", perceptual_weight=perceptual,
                          identity_weight=identity, lr=DEMO_LR)
        torch.manual_seed(0)
        model = SwapModel(preset(cfg.preset), list(IDS))
        nets, pull = face_losses(cfg, model.cfg.size, data, torch.device("cpu"))
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas)
        steppers[name] = Stepper(PairNet(model, swap=pull is not None), opt, cfg.loss_config(), nets=nets,
                                 identity=pull)
    g = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {name: [] for name in on}
    for i in range(rounds + 1):
        batches = [Batch(*d.sample(16, g)) for d in data]
        for name, s in steppers.items():
            t = time.perf_counter()
            train_step(s, *batches)
            if i:
                times[name].append(time.perf_counter() - t)
    return {name: 1000 * statistics.median(v) for name, v in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=400, help="training steps of every variant (400)")
    ap.add_argument("--perceptual", type=float, default=1.0, help="perceptual weight when on (1.0)")
    ap.add_argument("--identity", type=float, default=2.0, help="identity weight when on (2.0)")
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--a", help="faceset A (default: the demo's, built here)")
    ap.add_argument("--b", help="faceset B (default: the demo's, built here)")
    ap.add_argument("--work", help="keep models and facesets here (default: a temporary folder)")
    ap.add_argument("--time-steps", type=int, default=8, help="interleaved timed steps of each variant (8)")
    ap.add_argument("--json", default="bench_losses.json")
    args = ap.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_losses-"))
    work.mkdir(parents=True, exist_ok=True)
    dirs = (Path(args.a), Path(args.b)) if args.a and args.b else make_facesets(work)
    embedder = FaceEmbedder()
    refs = tuple(embedder.embed_faces(list(zip(fs.images, fs.landmarks)))
                 for fs in (load_faceset(dirs[0]), load_faceset(dirs[1])))
    on = {"base": (0.0, 0.0), "perceptual": (args.perceptual, 0.0), "identity": (0.0, args.identity),
          "both": (args.perceptual, args.identity)}
    results = {}
    for name in args.variants:
        res = run_variant(name, on[name], dirs, work, args)
        res.update(measure(res.pop("model"), *dirs, embedder, refs))
        results[name] = res
        print(f"{name}: {res}", flush=True)
    ms = time_variants({name: on[name] for name in ("base", *args.variants)}, dirs, args.time_steps)
    for name, res in results.items():
        res["ms_per_step"], res["step_cost"] = ms[name], ms[name] / ms["base"]
    report = {"steps": args.steps, "seed": args.seed, "lr": DEMO_LR, "batch_size": 16,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
                         f"{torch.__version__}", "variants": results}
    Path(args.json).write_text(json.dumps(report, indent=2))
    cols = [("perceptual_weight", "perc w", "{:.2g}"), ("identity_weight", "id w", "{:.2g}"),
            ("sharp_recon_a", "sharp rec A", "{:.3f}"), ("sharp_recon_b", "sharp rec B", "{:.3f}"),
            ("detail_a", "detail A", "{:.3f}"), ("detail_b", "detail B", "{:.3f}"),
            ("sharp_swap", "sharp swap", "{:.3f}"), ("sharp_swap_b", "swap/B", "{:.3f}"),
            ("closer_to_b", "closer B", "{:.0%}"), ("dist_b", "dist B", "{:.3f}"),
            ("dist_a", "dist A", "{:.3f}"), ("l1_recon_a", "L1 rec A", "{:.4f}"),
            ("ms_per_step", "ms/step", "{:.0f}"), ("step_cost", "x base", "{:.2f}")]
    print(f"\n{args.steps} steps, seed {args.seed}, lite64, demo lr and batch; sharpness = output / input "
          f"high-frequency energy in the face; {args.json}")
    print(f"{'variant':<11}" + "".join(f"{h:>12}" for _, h, _ in cols))
    for name, res in results.items():
        print(f"{name:<11}" + "".join(f"{f.format(res[k]):>12}" for k, _, f in cols))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
