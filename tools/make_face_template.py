"""Regenerate stages/data/face_template.npy: the canonical 2-D face that align.py maps faces onto.

It is the similarity-aligned mean of MediaPipe's 478 landmarks on two public-domain frontal faces
that ship in packages (scikit-image's astronaut, matplotlib's grace_hopper.jpg), mirrored and
averaged with itself so that the template is left/right symmetric, then normalised so that the
stable landmarks (brows, eyes, nose, mouth) fill the unit square.

    python tools/make_face_template.py
"""

from pathlib import Path

import matplotlib.cbook
import mediapipe as mp
import numpy as np
from PIL import Image
from skimage import data

from swapstream.core.geometry import STABLE_LANDMARKS, umeyama


def landmarks_of(rgb: np.ndarray) -> np.ndarray:
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True) as mesh:
        res = mesh.process(rgb)
    lm = res.multi_face_landmarks[0].landmark
    h, w = rgb.shape[:2]
    return np.array([[p.x * w, p.y * h] for p in lm], np.float64)


def main() -> None:
    a = landmarks_of(data.astronaut())
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        b = landmarks_of(np.asarray(Image.open(f).convert("RGB")))
    m = umeyama(b[STABLE_LANDMARKS], a[STABLE_LANDMARKS])
    b_in_a = b @ m[:, :2].T + m[:, 2]
    mean = (a + b_in_a) / 2
    # mirror: x -> -x, then match each point to its nearest mirrored point to symmetrise
    mirrored = mean * [-1, 1]
    mirrored += mean.mean(0) - mirrored.mean(0)
    pairs = np.argmin(((mean[:, None] - mirrored[None]) ** 2).sum(-1), axis=1)
    sym = (mean + mirrored[pairs]) / 2
    stable = sym[STABLE_LANDMARKS]
    lo, hi = stable.min(0), stable.max(0)
    t = (sym - (lo + hi) / 2) / (hi - lo).max() + 0.5
    out = Path(__file__).resolve().parent.parent / "stages" / "data" / "face_template.npy"
    np.save(out, t.astype(np.float32))
    print(f"wrote {out}: {t.shape}, stable box {t[STABLE_LANDMARKS].min(0)}..{t[STABLE_LANDMARKS].max(0)}")


if __name__ == "__main__":
    main()
