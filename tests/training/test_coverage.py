"""A faceset's expression and pose coverage, from its landmarks: the sample facesets (an open
smile for A, closed lips for B) and the same faces with a mouth opened, eyes closed, head turned."""

from __future__ import annotations

import numpy as np
import pytest

from swapstream.core.faceset import read_landmarks
from swapstream.training.coverage import MOUTH_OPEN, coverage, faceset_coverage


def test_the_sample_facesets_open_mouth_and_closed_lips(facesets):
    a, b = faceset_coverage(facesets[0]), faceset_coverage(facesets[1])
    assert a.faces == b.faces == 30
    assert a.mouth_open > 0.9 and b.mouth_open < 0.1  # A smiles with parted lips, B does not
    assert a.eyes_closed == b.eyes_closed == 0.0
    assert -20 < a.yaw_min <= a.yaw_max < 20  # the sample heads face the camera
    warned = " ".join(b.warnings())
    assert "open mouth" in warned and "closed eyes" in warned and "from the side" in warned
    assert "open mouth" not in " ".join(a.warnings())
    assert "mouth open in 0%" in b.line() and "of 30 faces" in b.line()
    # the narrowest and widest mouths: A's smile is parted even at its narrowest, B's lips closed
    assert b.mouth_floor <= b.mouth_reach < 0.03
    assert 0.04 < a.mouth_floor <= a.mouth_reach


def test_mouth_floor_and_reach_are_the_gaps_5th_and_95th_percentile(facesets):
    """mouth_floor: the 5th percentile of the inner-lip gap over the face height, beside
    mouth_reach (the 95th) in what training records (asdict: model.json's training.expression)."""
    from dataclasses import asdict

    lm = np.array(list(read_landmarks(facesets[1]).values()))  # closed lips
    height = np.linalg.norm(lm[:, 10] - lm[:, 152], axis=1)
    opened = lm.copy()
    share = np.linspace(0.0, 0.2, len(lm))  # the lower inner lip dropped by 0 to 20 % of the face
    opened[:, 14, 1] = opened[:, 13, 1] + share * height
    gap = np.linalg.norm(opened[:, 13] - opened[:, 14], axis=1) / height
    cov = coverage(opened)
    assert cov.mouth_floor == pytest.approx(np.percentile(gap, 5), abs=1e-6)
    assert cov.mouth_reach == pytest.approx(np.percentile(gap, 95), abs=1e-6)
    assert 0.005 < cov.mouth_floor < 0.015 and 0.185 < cov.mouth_reach < 0.195
    record = asdict(cov)
    assert record["mouth_floor"] == cov.mouth_floor and record["mouth_reach"] == cov.mouth_reach
    assert coverage(np.zeros((0, 478, 2))).mouth_floor == 0.0


def test_opened_mouth_closed_eyes_and_a_turned_head_are_seen(facesets):
    lm = np.array(list(read_landmarks(facesets[1]).values()))  # closed lips, open eyes, frontal
    height = np.linalg.norm(lm[:, 10] - lm[:, 152], axis=1)
    opened = lm.copy()
    opened[:, 14, 1] += 2 * MOUTH_OPEN * height  # the lower inner lip drops
    closed = lm.copy()
    for upper, lower in ((159, 145), (386, 374)):
        closed[:, upper] = closed[:, lower]  # lids meet
    turned = lm.copy()
    turned[:, 1, 0] = turned[:, 454, 0] - 0.05 * (turned[:, 454, 0] - turned[:, 234, 0])  # nose at a side
    assert coverage(opened).mouth_open == 1.0 and coverage(lm).mouth_open < 0.1
    assert coverage(closed).eyes_closed == 1.0
    assert coverage(turned).yaw_max > 60
    both = coverage(np.concatenate([lm, opened]))
    assert 0.45 < both.mouth_open < 0.6 and both.faces == 2 * len(lm)
    assert not [w for w in coverage(np.concatenate([opened, closed, turned])).warnings()]


def test_deleted_faces_do_not_count(facesets, tmp_path):
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(facesets[1], copy)
    gone = sorted(p for p in copy.glob("*.png") if not p.name.startswith("_"))[:10]
    for p in gone:
        p.unlink()
    assert faceset_coverage(copy).faces == 20
    assert coverage(np.zeros((0, 478, 2))).line() == "coverage: no faces"
