"""Seeing training learn: TensorBoard event files, a history file and a loss-curve plot.

history.jsonl (one JSON object per logged interval: step, mean of each loss term over the
interval, samples/s, skipped steps) travels inside every checkpoint, so a resumed run, or the
driver of a cluster job, has the whole curve. `plot_history` draws loss_curve.png from it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

HISTORY = "history.jsonl"
CURVE = "loss_curve.png"


def read_history(directory: str | Path | None) -> list[dict]:
    """Rows of <directory>/history.jsonl ([] if none); a torn last line is dropped."""
    if directory is None or not (Path(directory) / HISTORY).exists():
        return []
    rows = []
    for line in (Path(directory) / HISTORY).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def write_history(directory: str | Path, rows: list[dict]) -> Path:
    path = Path(directory) / HISTORY
    tmp = path.with_name(f".{HISTORY}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)
    return path


class TrainLog:
    """Accumulates per-step losses and writes one row per `every` steps (rank 0 only).

    `tensorboard`: a directory for event files (None: none written). Scalars are the loss terms,
    samples/s and skipped steps; `image` adds the preview grid.
    """

    def __init__(self, every: int, rows: list[dict] | None = None, tensorboard: str | None = None) -> None:
        self.every, self.rows = every, list(rows or [])
        self._sum: dict[str, float] = {}
        self._n, self._seconds, self._samples = 0, 0.0, 0
        self.writer = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(tensorboard, flush_secs=10)

    def step(self, step: int, losses: dict[str, float], seconds: float, samples: int) -> dict | None:
        """Add one step's losses, its wall time and the samples it trained on (all workers);
        returns the row when an interval closes. The row's "step_s" and "samples_per_s" cover the
        whole interval."""
        for k, v in losses.items():
            if math.isfinite(v):
                self._sum[k] = self._sum.get(k, 0.0) + v
        self._n += 1
        self._seconds += seconds
        self._samples += samples
        if step % self.every:
            return None
        skipped = int(self._sum.pop("skipped", 0.0))
        row = {"step": step, **{k: v / self._n for k, v in self._sum.items()},
               "step_s": self._seconds / self._n,
               "samples_per_s": self._samples / max(self._seconds, 1e-9), "skipped": skipped}
        self._sum, self._n, self._seconds, self._samples = {}, 0, 0.0, 0
        self.rows.append(row)
        if self.writer is not None:
            for k, v in row.items():
                if k != "step":
                    self.writer.add_scalar(k if "/" in k else f"train/{k}", v, step)
        return row

    def image(self, tag: str, img: np.ndarray, step: int) -> None:
        """img: (H, W, 3) uint8 RGB."""
        if self.writer is not None:
            self.writer.add_image(tag, img, step, dataformats="HWC")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def plot_history(rows: list[dict], path: str | Path) -> Path | None:
    """loss_curve.png: total loss of A and B (log scale) and samples/s over steps."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, height_ratios=[3, 1])
    for key in ("loss_a", "loss_b", "swap/identity", "gan/g", "gan/d"):
        ys = [r.get(key, np.nan) for r in rows]
        if not all(np.isnan(ys)):
            ax.plot(steps, ys, label=key)
    ax.set_yscale("log")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    skipped = [s for s, r in zip(steps, rows) if r.get("skipped")]
    for s in skipped:
        ax.axvline(s, color="red", alpha=0.3, lw=1)
    ax.set_title("training loss" + (f" ({len(skipped)} intervals with skipped NaN steps)" if skipped else ""))
    ax2.plot(steps, [r.get("samples_per_s", np.nan) for r in rows], color="gray")
    ax2.set_ylabel("samples/s")
    ax2.set_xlabel("step")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path
