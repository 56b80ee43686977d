"""`swapstream sort` on real facesets of the sample people: one folder per person, outliers
apart, every folder and the faceset itself valid afterwards."""

import json

import cv2
import pytest

from swapstream.core.errors import FacesetError
from swapstream.core.faceset import SIDECAR, load_faceset
from swapstream.engines.identity import SAME_PERSON, FaceEmbedder, distance_to
from swapstream.pipeline.cli import main
from swapstream.pipeline.samples import source_image
from swapstream.training.extract import CONTACT_SHEET, ExtractSettings, extract
from swapstream.training.reference import load_reference
from swapstream.training.sort import OUTLIERS, SortSettings, sort_faceset

PEOPLE = ("astronaut", "grace_hopper")


@pytest.fixture(scope="module")
def embedder():
    return FaceEmbedder()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """{who: path of the source photo} of both sample people."""
    root = tmp_path_factory.mktemp("photos")
    out = {}
    for who in PEOPLE:
        (root / who).mkdir()
        out[who] = root / who / f"{who}.png"
        cv2.imwrite(str(out[who]), cv2.cvtColor(source_image(who), cv2.COLOR_RGB2BGR))
    return out


@pytest.fixture(scope="module")
def references(photos, embedder):
    return {who: load_reference([path], embedder).embeddings for who, path in photos.items()}


def who_is(folder, embedder, references):
    """The one sample person every face of the faceset `folder` is (asserts they all are)."""
    fs = load_faceset(folder)
    e = embedder.embed_faces(list(zip(fs.images, fs.landmarks)))
    d = {who: distance_to(e, ref) for who, ref in references.items()}
    [who] = [w for w in PEOPLE if d[w].max() <= SAME_PERSON]
    [other] = [w for w in PEOPLE if w != who]
    assert d[other].min() > SAME_PERSON, (who, d)
    return who, len(fs)


def pngs(folder):
    return sorted(p.name for p in folder.glob("*.png") if not p.name.startswith("_"))


def test_sort_puts_each_person_in_a_faceset_of_their_own(clips, tmp_path, capsys, embedder, references):
    fs = tmp_path / "mixed"
    extract([clips["ab"]], fs, ExtractSettings(every=2), progress=False)  # 15 frames, 2 faces each
    faces = pngs(fs)
    assert len(faces) == 30
    sidecar = (fs / SIDECAR).read_text()
    # --dry-run: the groups are printed, nothing is moved or written
    assert main(["-q", "sort", str(fs), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "2 people, 0 outliers" in printed and "person_2/" in printed and "dry run" in printed, printed
    assert pngs(fs) == faces and (fs / SIDECAR).read_text() == sidecar
    assert not any(p.is_dir() for p in fs.iterdir())

    assert main(["-q", "sort", str(fs)]) == 0
    printed = capsys.readouterr().out
    assert "person_1/" in printed and "train on" in printed, printed
    found = [who_is(fs / f"person_{n}", embedder, references) for n in (1, 2)]
    assert sorted(w for w, _ in found) == sorted(PEOPLE) and [n for _, n in found] == [15, 15]
    assert sorted(pngs(fs / "person_1") + pngs(fs / "person_2")) == faces  # moved, none lost
    for n in (1, 2):
        sheet = cv2.imread(str(fs / f"person_{n}" / CONTACT_SHEET))
        assert sheet is not None and sheet.shape == (96, 15 * 96, 3)  # a 96 px tile a face
    assert not (fs / OUTLIERS).exists()
    # the faceset itself: no PNG left without its entry, the moved entries gone, still extendable
    assert pngs(fs) == [] and json.loads((fs / SIDECAR).read_text())["faces"] == {}
    assert cv2.imread(str(fs / CONTACT_SHEET)).shape == (2 * 96, 20 * 96, 3)  # overview: a row each
    with pytest.raises(FacesetError, match="no usable faces"):
        load_faceset(fs)
    assert main(["-q", "sort", str(fs)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sorted into person_1/, person_2/" in err[0], err
    extract([clips["a"]], fs, ExtractSettings(every=10), progress=False)
    assert len(load_faceset(fs)) == 6


def test_outliers_and_stray_faces_go_to_outliers(clips, photos, tmp_path, embedder, references):
    fs = tmp_path / "astronaut"
    # 20 frames of the astronaut and one photo of Grace Hopper
    extract([clips["a"], photos["grace_hopper"].parent], fs, ExtractSettings(every=3), progress=False)
    assert len(pngs(fs)) == 21
    # a strict outlier share flags the astronaut faces farthest from her centre (dry run: no move)
    strict = sort_faceset(fs, SortSettings(outlier=0.2, dry_run=True), progress=False)
    person, odd = strict.groups
    assert person.folder == "person_1" and odd.folder == OUTLIERS and person.outliers > 0
    assert person.distances.max() <= 0.2 * SAME_PERSON
    assert len(person.names) + person.outliers + 1 == len(odd.names) + len(person.names) == 21
    assert len(pngs(fs)) == 21 and not (fs / OUTLIERS).exists()

    report = sort_faceset(fs, progress=False)
    assert [g.folder for g in report.groups] == ["person_1", OUTLIERS]
    assert [len(g.names) for g in report.groups] == [20, 1]
    assert report.groups[1].distances[0] > SAME_PERSON  # far from the astronaut's centre
    assert who_is(fs / "person_1", embedder, references) == ("astronaut", 20)
    assert who_is(fs / OUTLIERS, embedder, references) == ("grace_hopper", 1)
    table = "\n".join(report.lines())
    assert "1 person, 1 outliers" in table and "outliers/" in table, table


def test_what_is_not_a_faceset_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "plain").mkdir()
    (tmp_path / "file.mp4").write_bytes(b"not a folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / SIDECAR).write_text(json.dumps({"version": 1, "size": 256, "coverage": 0.5, "faces": {}}))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / SIDECAR).write_text("{not json")
    cases = {"plain": "not a faceset", "file.mp4": "not a folder", "missing": "not a folder",
             "empty": "has no faces", "broken": "corrupt"}
    for name, words in cases.items():
        assert main(["-q", "sort", str(tmp_path / name)]) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("swapstream: error:") and words in err[0], err
    assert sorted(p.name for p in empty.iterdir()) == [SIDECAR]
