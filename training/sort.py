"""`swapstream sort`: split a faceset by person into subfolders, so a person cleans it in a minute.

Every face of the faceset is embedded (swapstream.engines.identity: the aligned PNG cut to dlib's chip with
the landmarks of the sidecar) and grouped with group_identities. Then, inside FACESET:

- `person_1/`, `person_2/`, ...: one folder per person, the largest first. A group is a person
  when it holds at least NOISE_FACES faces and NOISE_SHARE of the faceset (the rule extract uses
  to count people, so `sort` makes as many person folders as extract's note said).
- `outliers/`: faces farther than `outlier` x `threshold` (0.75 x 0.41 = 0.31) from their
  group's centre, and the faces of groups too small to be a person (a stray face of a passer-by,
  a bad detection, a profile the recogniser cannot place). Faces of one person sit within ~0.2
  of their centre, so an outlier is worth a look, and usually a delete.

Each folder is a faceset of its own (PNGs moved, not copied, with their sidecar entries; train
on `FACESET/person_1`) with a `_contact_sheet.png` laid out nearest-to-centre first, so the doubtful
faces are at the end (a group of more than SHEET_FACES shows its SHEET_FACES farthest faces).
FACESET's own `_contact_sheet.png` becomes an overview: a row per folder.

The faceset stays valid at every step: a folder's sidecar is written (temp + os.replace) before
its PNGs are moved in, and FACESET's sidecar drops the moved entries last; a sidecar entry
without its PNG is ignored by load_faceset, so a crash half-way loses nothing. `dry_run` moves and
writes nothing and only reports the groups.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from swapstream.core.errors import ConfigError, FacesetError
from swapstream.core.faceset import FACESET_SIZE, SIDECAR, FacesetWriter, _read_sidecar
from swapstream.core.geometry import NUM_LANDMARKS
from swapstream.core.paths import check_writable_dir
from swapstream.engines.identity import (
    SAME_PERSON,
    FaceEmbedder,
    distance,
    face_chip,
    group_identities,
    normalise,
)
from swapstream.training.extract import CONTACT_SHEET, NOISE_FACES, NOISE_SHARE, contact_sheet

OUTLIER = 0.75  # share of the threshold: farther from the group's centre is an outlier
OUTLIERS = "outliers"
SHEET_FACES = 400  # thumbnails on a folder's contact sheet (a 96 px tile each)
READ_BATCH = 64  # PNGs read and embedded together (~13 MB of images)


@dataclass
class SortSettings:
    """threshold: same-person distance of unit embeddings (group_identities); outlier: a face
    farther than outlier x threshold from its group's centre goes to outliers/; dry_run: report
    the groups, move and write nothing."""

    threshold: float = SAME_PERSON
    outlier: float = OUTLIER
    dry_run: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 2.0:
            raise ConfigError(f"--threshold {self.threshold} is outside (0, 2); {SAME_PERSON} is "
                              f"dlib's same-person distance")
        if not 0.0 < self.outlier <= 1.0:
            raise ConfigError(f"--outlier {self.outlier} must be in (0, 1], a share of --threshold")


@dataclass
class Group:
    """A folder: `names` (face files, nearest to the centre first), their distances to the centre
    (for outliers/: to the nearest person's centre; NaN when there is no person), and how many of
    the group's faces went to outliers/."""

    folder: str
    names: list[str]
    distances: np.ndarray
    outliers: int = 0


@dataclass
class SortReport:
    faceset: Path
    groups: list[Group]  # person_1, person_2, ..., then outliers (when there are any)
    skipped: list[str] = field(default_factory=list)  # unreadable PNGs, left where they were
    dry_run: bool = False

    def coverage_lines(self) -> list[str]:
        """Each person's expression and pose coverage (training.coverage), and what a model
        trained on that folder will be unable to draw."""
        from swapstream.training.coverage import faceset_coverage

        out = []
        for g in self.groups:
            if g.folder == OUTLIERS:
                continue
            cov = faceset_coverage(self.faceset if self.dry_run else self.faceset / g.folder, g.names)
            out.append(f"{g.folder}/ {cov.line()}")
            out += [f"  note: {w}" for w in cov.warnings()]
        return out

    def lines(self) -> list[str]:
        """The summary table and what happened, for the terminal."""
        people = [g for g in self.groups if g.folder != OUTLIERS]
        out = sum(len(g.names) for g in self.groups if g.folder == OUTLIERS)
        total = sum(len(g.names) for g in self.groups)
        lines = [f"{total} faces of {self.faceset}: {len(people)} "
                 f"{'person' if len(people) == 1 else 'people'}, {out} outliers",
                 f"{'folder':<12}{'faces':>7}{'mean dist':>11}{'max dist':>10}{'outliers':>10}"]
        for g in self.groups:
            d = g.distances[np.isfinite(g.distances)]
            mean, top = (f"{d.mean():.3f}", f"{d.max():.3f}") if len(d) else ("-", "-")
            flagged = "" if g.folder == OUTLIERS else str(g.outliers)
            lines.append(f"{g.folder + '/':<12}{len(g.names):>7}{mean:>11}{top:>10}{flagged:>10}")
        lines.append("(dist: to the folder's centre; for outliers/, to the nearest person's centre)")
        if self.skipped:
            lines.append(f"note: {len(self.skipped)} unreadable faces left in {self.faceset} "
                         f"(e.g. {self.skipped[0]})")
        if self.dry_run:
            odd = next((g.names for g in self.groups if g.folder == OUTLIERS), [])
            if odd:
                more = f" (+{len(odd) - 20} more)" if len(odd) > 20 else ""
                lines.append(f"outliers: {', '.join(odd[:20])}{more}")
            lines.append("dry run: nothing moved; run again without --dry-run to move the faces")
        else:
            train = f"; train on {self.faceset / people[0].folder}" if people else ""
            lines.append(f"moved into {', '.join(str(self.faceset / g.folder) + '/' for g in self.groups)}"
                         f"; look over each folder's {CONTACT_SHEET} (overview: "
                         f"{self.faceset / CONTACT_SHEET}){train}")
        return lines


def _sorted_before(d: Path) -> list[str]:
    return sorted(p.name + "/" for p in d.iterdir()
                  if p.is_dir() and (p.name.startswith("person_") or p.name == OUTLIERS))


def _faces(d: Path) -> tuple[dict, list[str]]:
    """The sidecar's entries and the names of the faces to sort (PNG on disk, entry, landmarks)."""
    if not d.is_dir():
        raise FacesetError(f"faceset {d} does not exist or is not a folder; give a folder written by "
                           f"swapstream extract")
    if not (d / SIDECAR).is_file():
        raise FacesetError(f"{d} is not a faceset (no {SIDECAR}); give a folder written by "
                           f"swapstream extract")
    entries = _read_sidecar(d)["faces"]
    names = [p.name for p in sorted(d.glob("*.png")) if not p.name.startswith("_")
             and p.name in entries and np.shape(entries[p.name].get("landmarks")) == (NUM_LANDMARKS, 2)]
    before = _sorted_before(d)
    if not names and before:
        raise FacesetError(f"faceset {d} has no faces left to sort: they were sorted into "
                           f"{', '.join(before)}; sort one of those folders instead")
    if not names:
        raise FacesetError(f"faceset {d} has no faces (no PNG with landmarks); extract faces into it "
                           f"with swapstream extract first")
    if before:
        raise FacesetError(f"faceset {d} already holds {', '.join(before)} from an earlier sort; move "
                           f"those folders out of it first, then sort again")
    return entries, names


def _embed(d: Path, entries: dict, names: list[str],
           progress: bool) -> tuple[np.ndarray, list[str], list[str]]:
    """Embeddings ((N, 128) float32 unit) of the readable faces, their names, the unreadable ones."""
    embedder = FaceEmbedder()
    parts, ok, bad = [], [], []
    for i in tqdm(range(0, len(names), READ_BATCH), desc=f"embed {d.name}", unit="batch",
                  disable=not progress, leave=False):
        chips = []
        for name in names[i:i + READ_BATCH]:
            img = cv2.imread(str(d / name), cv2.IMREAD_COLOR)
            if img is None or img.shape != (FACESET_SIZE, FACESET_SIZE, 3):
                bad.append(name)
                continue
            lm = np.asarray(entries[name]["landmarks"], np.float32)  # (478, 2) px in the PNG
            chips.append(face_chip(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), lm))
            ok.append(name)
        if chips:
            parts.append(embedder.embed_chips(np.stack(chips)))
    return (np.concatenate(parts) if parts else np.zeros((0, 128), np.float32)), ok, bad


def plan(e: np.ndarray, names: list[str], s: SortSettings) -> list[Group]:
    """(N, 128) unit embeddings and their file names -> the folders, person_1 (largest) first,
    outliers/ last (only when there are any)."""
    labels = group_identities(e, s.threshold)
    counts = np.bincount(labels)
    centres = normalise(np.stack([e[labels == k].mean(0) for k in range(len(counts))]))  # (G, 128)
    far = distance(e, centres[labels]) > s.outlier * s.threshold  # (N,)
    person = counts >= max(NOISE_FACES, NOISE_SHARE * len(e))
    keep = person[labels] & ~far
    kept = np.bincount(labels[keep], minlength=len(counts))
    keep &= kept[labels] >= NOISE_FACES  # a group its outliers leave too small is no person
    kept = np.bincount(labels[keep], minlength=len(counts))
    order = [int(k) for k in np.argsort(-kept, kind="stable") if kept[k] > 0]
    groups, centre_of = [], []
    for n, k in enumerate(order, 1):
        idx = np.flatnonzero(keep & (labels == k))
        c = normalise(e[idx].mean(0, keepdims=True))[0]  # the centre of the faces kept
        d = distance(e[idx], c)
        first = np.argsort(d, kind="stable")
        groups.append(Group(f"person_{n}", [names[i] for i in idx[first]], d[first],
                            int((~keep & (labels == k)).sum())))
        centre_of.append(c)
    idx = np.flatnonzero(~keep)
    if len(idx):
        d = (distance(e[idx][:, None], np.stack(centre_of)[None]).min(1) if centre_of
             else np.full(len(idx), np.nan, np.float32))
        first = np.argsort(d, kind="stable")
        groups.append(Group(OUTLIERS, [names[i] for i in idx[first]], d[first]))
    return groups


def _move(d: Path, entries: dict, groups: list[Group]) -> None:
    """Each group into its folder (sidecar first, then the PNGs), then FACESET's sidecar."""
    for g in groups:
        sub = FacesetWriter(d / g.folder)
        sub.faces.update({n: entries[n] for n in g.names})
        sub.close()  # written before any PNG arrives: no PNG without an entry
        for n in g.names:
            os.replace(d / n, d / g.folder / n)
    parent = FacesetWriter(d)
    for g in groups:
        for n in g.names:
            parent.faces.pop(n, None)
    parent.close()


def _thumb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return cv2.resize(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), (96, 96), interpolation=cv2.INTER_AREA)


def _label(text: str, count: int) -> np.ndarray:
    """A (96, 96, 3) uint8 tile naming a folder on the overview sheet."""
    tile = np.full((96, 96, 3), 16, np.uint8)
    cv2.putText(tile, text, (4, 40), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    cv2.putText(tile, f"{count} faces", (4, 62), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (200, 200, 200), 1,
                cv2.LINE_AA)
    return tile


def _sheets(d: Path, groups: list[Group]) -> None:
    """Each folder's contact sheet, and FACESET's overview (a label and 19 faces per folder)."""
    rows = []
    for g in groups:
        names = g.names[-SHEET_FACES:]  # the farthest, when there are too many
        thumbs = [_thumb(d / g.folder / n) for n in names]
        cv2.imwrite(str(d / g.folder / CONTACT_SHEET), cv2.cvtColor(contact_sheet(thumbs), cv2.COLOR_RGB2BGR))
        spread = np.unique(np.linspace(0, len(thumbs) - 1, min(19, len(thumbs))).round().astype(int))
        row = [_label(g.folder, len(g.names))] + [thumbs[i] for i in spread]
        row += [np.full((96, 96, 3), 32, np.uint8)] * (20 - len(row))
        rows.append(contact_sheet(row))
    cv2.imwrite(str(d / CONTACT_SHEET), cv2.cvtColor(np.concatenate(rows), cv2.COLOR_RGB2BGR))


def sort_faceset(faceset: str | Path, settings: SortSettings | None = None,
                 progress: bool = True) -> SortReport:
    """Split `faceset` by person into person_N/ and outliers/ (see the module docstring).
    FacesetError when it is not a faceset, has no faces or was sorted before."""
    s, d = settings or SortSettings(), Path(faceset)
    entries, names = _faces(d)
    if not s.dry_run:
        check_writable_dir(d, "FACESET")
    e, names, bad = _embed(d, entries, names, progress)
    if not names:
        raise FacesetError(f"faceset {d}: none of its {len(bad)} PNGs can be read; extract it again "
                           f"with swapstream extract")
    groups = plan(e, names, s)
    if not s.dry_run:
        _move(d, entries, groups)
        _sheets(d, groups)
    return SortReport(d, groups, bad, s.dry_run)
