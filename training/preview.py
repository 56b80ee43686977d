"""Preview grids: how well each decoder reconstructs its own faces and swaps the other's."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

HEADER = 20  # px of label row, before scaling


@torch.no_grad()
def preview_grid(model, faces_a: torch.Tensor, faces_b: torch.Tensor, ids: tuple[str, str] = ("a", "b"),
                 scale: int = 1) -> np.ndarray:
    """(H, W, 3) uint8 RGB grid. Columns: A, A->A, A->B, B, B->B, B->A; rows: samples.

    faces_a, faces_b: (n, 3, S, S) float in [0, 1] (unaugmented crops; the shorter set is padded
    with black). ids: the model's decoder names for A and B. Cells are S*scale px square under a
    header row of HEADER*scale px. W = 6 * S * scale, H = (HEADER + rows * S) * scale.
    """
    a, b = ids
    was_training = model.training
    model.eval()
    try:
        dev = next(model.parameters()).device
        cols = []
        for faces, own, other in ((faces_a, a, b), (faces_b, b, a)):
            x = faces.to(dev, torch.float32)
            cols += [x, model(x, own)[:, :3].float(), model(x, other)[:, :3].float()]
    finally:
        model.train(was_training)
    rows = max(faces_a.shape[0], faces_b.shape[0])
    s = faces_a.shape[-1]
    grid = np.zeros((rows * s, 6 * s, 3), np.uint8)
    for j, col in enumerate(cols):
        img = (col.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()  # (n, S, S, 3)
        grid[: len(img) * s, j * s:(j + 1) * s] = img.reshape(-1, s, 3)
    if scale > 1:
        grid = cv2.resize(grid, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    cell, head = s * scale, HEADER * scale
    header = np.full((head, grid.shape[1], 3), 32, np.uint8)
    a, b = a.upper(), b.upper()
    labels = [a, f"{a}->{a}", f"{a}->{b}", b, f"{b}->{b}", f"{b}->{a}"]
    font = 0.35 * scale
    for j, label in enumerate(labels):
        (w, h), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font, 1)
        org = (j * cell + max(0, (cell - w) // 2), (head + h) // 2)
        cv2.putText(header, label, org, cv2.FONT_HERSHEY_SIMPLEX, font, (255, 255, 255), 1, cv2.LINE_AA)
    return np.ascontiguousarray(np.vstack([header, grid]))


def save_png(path: str | Path, img: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 RGB image as PNG, atomically (tmp + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    if not cv2.imwrite(str(tmp), cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {tmp}")
    tmp.replace(path)
    return path
