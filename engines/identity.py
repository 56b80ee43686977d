"""Who a face is: a unit-length 128-number embedding, and the distance that says "same person".

Contract: a frame ((H, W, 3) uint8 RGB) and a face's MediaPipe landmarks ((478, 2) float32, frame
px) in; the face is cut as dlib cuts it (a 150 px chip, similarity transform of five points, eye
corners and nose base, onto dlib's template with 0.25 padding) and run through dlib's ResNet
recogniser (swapstream.engines.faceid); out comes a (128,) float32 vector of length 1. Two faces are the
same person when `distance(a, b) <= SAME_PERSON`.

dlib's published threshold is 0.6 on its raw descriptors (99.38 % on LFW at that threshold); its
descriptors have a length of 1.35-1.47 (measured on the sample faces in every pose the sample
clips render), so on unit vectors the same decision lies near 0.6 / 1.45 = 0.41. Measured on the
sample clips (120 faces): the same person at most 0.20 apart, the two sample people 0.45-0.52
apart (tests/engines/test_identity.py).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import numpy as np

from swapstream.core.geometry import crop_face

if TYPE_CHECKING:
    import torch

# torch and the network (swapstream.engines.faceid) load on first use: a conversion that never embeds a face
# does not pay ~1.1 s for importing torch
CHIP = 150  # chip side, px (dlib's)
DIM = 128  # embedding size

# MediaPipe FaceMesh points nearest dlib's five, in dlib's order: the subject's left eye outer
# and inner corner, right eye outer and inner corner, the base of the nose.
FIVE = (263, 362, 33, 133, 2)
# dlib's five-point template (get_face_chip_details), unit square, before padding.
TEMPLATE = np.array([[0.8595674595992, 0.2134981538014], [0.6460604764104, 0.2289674387677],
                     [0.1205750620789, 0.2137274526848], [0.3340850613712, 0.2290642403242],
                     [0.4901123135679, 0.6277975316475]])
PADDING = 0.25  # dlib's face recognition example, on which the network was trained
RAW_LENGTH = 1.45  # typical length of a raw dlib descriptor
SAME_PERSON = round(0.6 / RAW_LENGTH, 2)  # 0.41: dlib's 0.6 on unit vectors


def chip_matrix(landmarks: np.ndarray) -> np.ndarray:
    """(478, 2) or (5, 2) float, frame px -> (2, 3) float64 similarity frame -> 150 px chip."""
    lm = np.asarray(landmarks, np.float64)
    src = lm[list(FIVE)] if len(lm) != 5 else lm
    dst = (PADDING + TEMPLATE) / (2 * PADDING + 1) * CHIP
    # least squares similarity (Umeyama without reflection)
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    a = (s * d).sum() / (s ** 2).sum()
    b = (s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum() / (s ** 2).sum()
    rot = np.array([[a, -b], [b, a]])
    return np.hstack([rot, (md - rot @ ms)[:, None]])


def face_chip(frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB frame, (478, 2) landmarks -> (150, 150, 3) uint8 RGB chip (large faces
    are area-averaged down, as dlib's pyramid does, so they do not alias)."""
    return crop_face(frame, chip_matrix(landmarks), CHIP)


def normalise(raw: np.ndarray) -> np.ndarray:
    """(N, 128) raw descriptors -> (N, 128) float32 of length 1."""
    raw = np.asarray(raw, np.float32)
    return raw / np.maximum(np.linalg.norm(raw, axis=-1, keepdims=True), 1e-12)


def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance of unit embeddings, 0 (same) to 2; (..., 128) and (..., 128) broadcast.
    Same person when <= SAME_PERSON."""
    return np.linalg.norm(np.asarray(a, np.float32) - np.asarray(b, np.float32), axis=-1)


def distance_to(embeddings: np.ndarray, reference: np.ndarray, nearest: int = 3) -> np.ndarray:
    """(N, 128) embeddings vs a reference set (M, 128) -> (N,) float32: the mean distance to the
    `nearest` closest reference faces (one odd reference face cannot decide alone)."""
    e, r = np.atleast_2d(embeddings), np.atleast_2d(reference)
    d = np.linalg.norm(e[:, None] - r[None], axis=-1)  # (N, M)
    k = max(1, min(nearest, r.shape[0]))
    return np.sort(d, axis=1)[:, :k].mean(1).astype(np.float32)


class FaceEmbedder:
    """Embeds faces: embed(frame, landmarks) for one, embed_chips for a batch. Loads the network
    on first use; thread-safe (one forward at a time). device: cpu (default) or cuda[:N]."""

    def __init__(self, device: str = "cpu", batch: int = 32) -> None:
        self.device, self.batch = device, batch
        self._net: torch.nn.Module | None = None
        self._lock = threading.Lock()

    @property
    def net(self) -> torch.nn.Module:
        if self._net is None:
            from swapstream.engines.faceid import load_facenet

            self._net = load_facenet().to(self.device)
        return self._net

    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        """(N, 150, 150, 3) uint8 RGB chips -> (N, 128) float32 unit embeddings."""
        chips = np.asarray(chips)
        if chips.ndim != 4 or chips.shape[1:] != (CHIP, CHIP, 3) or chips.dtype != np.uint8:
            raise ValueError(f"chips must be (N, {CHIP}, {CHIP}, 3) uint8, "
                             f"got {chips.dtype}{list(chips.shape)}")
        import torch

        out = np.empty((len(chips), DIM), np.float32)
        with self._lock, torch.inference_mode():
            for i in range(0, len(chips), self.batch):
                x = torch.from_numpy(chips[i:i + self.batch]).to(self.device)
                out[i:i + len(x)] = self.net(x.permute(0, 3, 1, 2).float()).cpu().numpy()
        return normalise(out)

    def embed_faces(self, items: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """[(frame (H, W, 3) uint8, landmarks (478, 2)), ...] -> (N, 128) float32 unit."""
        if not items:
            return np.zeros((0, DIM), np.float32)
        return self.embed_chips(np.stack([face_chip(f, lm) for f, lm in items]))

    def embed(self, frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """One face -> (128,) float32 unit embedding."""
        return self.embed_faces([(frame, landmarks)])[0]


def group_identities(embeddings: np.ndarray, threshold: float = SAME_PERSON,
                     rounds: int = 3) -> np.ndarray:
    """Group (N, 128) unit embeddings by person: (N,) int64 labels, 0 the largest group, 1 the next.

    Leader clustering, then a few rounds of moving each face to the nearest group centre within
    `threshold` (a face farther than that from every centre starts a group of its own): O(N x
    groups), so a faceset of thousands of faces groups in a second."""
    e = np.atleast_2d(np.asarray(embeddings, np.float32))
    if len(e) == 0:
        return np.zeros(0, np.int64)
    centres: list[np.ndarray] = []
    labels = np.empty(len(e), np.int64)
    for i, v in enumerate(e):
        if centres:
            d = distance(np.stack(centres), v)
            j = int(d.argmin())
            if d[j] <= threshold:
                labels[i] = j
                continue
        labels[i] = len(centres)
        centres.append(v)
    for _ in range(rounds):
        c = normalise(np.stack([e[labels == k].mean(0) for k in range(len(centres))
                                if (labels == k).any()]))
        d = np.linalg.norm(e[:, None] - c[None], axis=-1)  # (N, groups)
        new = d.argmin(1)
        far = d[np.arange(len(e)), new] > threshold
        new[far] = len(c) + np.arange(far.sum())  # each far face on its own
        if np.array_equal(new, labels):
            break
        labels = new
    # relabel by size, largest first (ties: first seen first)
    ids, counts = np.unique(labels, return_counts=True)
    first = np.array([np.flatnonzero(labels == i)[0] for i in ids])
    order = ids[np.lexsort((first, -counts))]
    remap = {int(old): new for new, old in enumerate(order)}
    return np.array([remap[int(x)] for x in labels], np.int64)
