"""The studio's workspace: one folder that holds everything the studio makes and reads.

    <workspace>/sources/     videos and photos to extract faces from (uploads land here)
    <workspace>/facesets/    one folder of aligned faces per person (swapstream extract -o)
    <workspace>/models/      one folder per model (swapstream train -o)
    <workspace>/settings/    YAML settings files (convert --config, live --config)
    <workspace>/outputs/     converted videos
    <workspace>/jobs/        the studio's jobs: one JSON state file and one log each

Every path the page names is relative to the workspace and resolved by `Workspace.path`, which
refuses absolute paths, `..`, and any symbolic link on the way (a link could point anywhere), so
the studio never reads or writes a file outside the folder it was given.

Deleting faces moves them to `<faceset>/.trash/<batch>/`; `undo` moves the newest batch back.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path, PurePosixPath

from swapstream.core.errors import ConfigError

FOLDERS = ("sources", "facesets", "models", "settings", "outputs", "jobs")
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".webp")
VIDEO_EXT = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".ts")
TRASH = ".trash"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.-]{0,79}")


def safe_name(name: str) -> str:
    """An uploaded file's name made one the studio takes: other characters become _, no leading
    dot or dash ("IMG (1).MOV" -> "IMG _1_.MOV")."""
    name = re.sub(r"[^A-Za-z0-9 _.-]", "_", name or "").lstrip(" .-_")[-80:] or "upload"
    return check_name(name if NAME.fullmatch(name) else f"upload{Path(name).suffix[:8]}", "file name")


class PathError(ConfigError):
    """A path the page gave that is not inside the workspace (or not allowed there)."""


def check_name(name: str, what: str = "name") -> str:
    """A folder or file name the page chose: letters, digits, space, _ . - (1-80, no leading dot)."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or name in (".", ".."):
        raise PathError(f"{what} {name!r} is not allowed: use letters, digits, spaces, _ . - "
                        "(at most 80, not starting with a dot)")
    return name


def check_faceset(name: str) -> str:
    """A faceset's name: NAME, or NAME/SUB for a folder `swapstream sort` made inside it."""
    parts = name.split("/") if isinstance(name, str) else [name]
    if len(parts) > 2:
        raise PathError(f"faceset {name!r} is not allowed: NAME or NAME/person_N")
    return "/".join(check_name(part, "faceset") for part in parts)


class Workspace:
    """The workspace folder (module docstring). root: created with its sub-folders if missing."""

    def __init__(self, root: str | os.PathLike) -> None:
        root = Path(root).expanduser()
        try:
            for name in FOLDERS:
                (root / name).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"--workspace {root}: cannot create it ({err.strerror}); choose a folder "
                              "you can write to") from None
        self.root = root.resolve()

    def path(self, rel: str, must_exist: bool = False) -> Path:
        """The absolute path of `rel` (a '/'-separated path inside the workspace). PathError for an
        absolute path, '..', a symbolic link on the way, or (must_exist) a missing file."""
        if not isinstance(rel, str) or not rel or "\x00" in rel or "\\" in rel:
            raise PathError(f"path {rel!r} is not a path inside the workspace")
        parts = PurePosixPath(rel).parts
        if PurePosixPath(rel).is_absolute() or ".." in parts:
            raise PathError(f"path {rel!r} is outside the workspace; give a path inside it "
                            "(e.g. sources/clip.mp4)")
        here = self.root
        for part in parts:
            here = here / part
            if here.is_symlink():
                raise PathError(f"path {rel!r} goes through a symbolic link; the studio follows none "
                                "(copy the file into the workspace instead)")
        if must_exist and not here.exists():
            raise PathError(f"{rel} does not exist in the workspace")
        return here

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    # ----------------------------------------------------------------------------- listings
    def sources(self) -> list[dict]:
        """Videos and image folders under sources/: [{path, kind, bytes}]."""
        out = []
        for p in sorted((self.root / "sources").iterdir()):
            if p.is_symlink() or p.name.startswith("."):
                continue
            if p.is_file() and p.suffix.lower() in VIDEO_EXT + IMAGE_EXT:
                kind = "video" if p.suffix.lower() in VIDEO_EXT else "image"
                out.append({"path": self.rel(p), "kind": kind, "bytes": p.stat().st_size})
            elif p.is_dir():
                out.append({"path": self.rel(p), "kind": "folder", "bytes": 0})
        return out

    def facesets(self) -> list[dict]:
        """[{name, faces, deleted}]: each faceset folder, and the folders `swapstream sort` made in
        it (NAME/person_1, NAME/outliers) after it, with their faces and the batches undo can restore."""
        out = []
        for p in _folders(self.root / "facesets"):
            for q in [p, *_folders(p)]:
                name = self.rel(q).removeprefix("facesets/")
                try:
                    faces, deleted = len(self.faces(name)), len(self._batches(q))
                except PathError as err:  # a name outside the studio's rule, a linked trash: shown, not used
                    out.append({"name": name, "faces": 0, "deleted": 0, "problem": str(err)})
                    continue
                out.append({"name": name, "faces": faces, "deleted": deleted})
        return out

    def faces(self, faceset: str) -> list[str]:
        """The face image names of a faceset, sorted (its contact sheets, _*.png, left out)."""
        folder = self.path(f"facesets/{check_faceset(faceset)}", must_exist=True)
        return sorted(f.name for f in folder.iterdir()
                      if f.suffix.lower() in IMAGE_EXT and f.is_file() and not f.is_symlink()
                      and not f.name.startswith(("_", ".")))

    def models(self) -> list[dict]:
        """[{name, checkpoint}]: each model folder with a checkpoint (model.json) in it."""
        out = []
        for p in _folders(self.root / "models"):
            if not p.name.endswith(".train"):  # NAME.train: a Ray run's checkpoints of NAME
                out.append({"name": p.name, "checkpoint": (p / "model.json").exists()})
        return out

    def settings(self) -> list[str]:
        """The names of the settings files (settings/NAME.yaml)."""
        return [p.stem for p in sorted((self.root / "settings").glob("*.yaml")) if not p.is_symlink()]

    def outputs(self) -> list[dict]:
        return [{"path": self.rel(p), "bytes": p.stat().st_size}
                for p in sorted((self.root / "outputs").iterdir())
                if p.is_file() and not p.is_symlink() and p.suffix.lower() in VIDEO_EXT]

    # ---------------------------------------------------------------------- delete and undo
    def delete_faces(self, faceset: str, names: list[str]) -> int:
        """Move `names` of `faceset` to a new trash batch; returns how many moved."""
        folder = self.path(f"facesets/{check_faceset(faceset)}", must_exist=True)
        known = set(self.faces(faceset))
        wanted = [check_name(n, "face") for n in names]
        missing = [n for n in wanted if n not in known]
        if missing:
            raise PathError(f"{faceset} has no face {missing[0]!r}; reload the page")
        self._batches(folder)  # refuses a .trash that is a symbolic link
        batch = folder / TRASH / f"{time.time_ns():020d}"
        batch.mkdir(parents=True)
        for n in wanted:
            os.replace(folder / n, batch / n)
        return len(wanted)

    def undo(self, faceset: str) -> int:
        """Move the newest trash batch of `faceset` back; returns how many came back (0: none)."""
        folder = self.path(f"facesets/{check_faceset(faceset)}", must_exist=True)
        batches = self._batches(folder)
        if not batches:
            return 0
        last = batches[-1]
        names = [f.name for f in last.iterdir()]
        for n in names:
            os.replace(last / n, folder / n)
        shutil.rmtree(last)
        return len(names)

    @staticmethod
    def _batches(folder: Path) -> list[Path]:
        """The trash batches of a faceset folder, oldest first; a trash or batch that is a symbolic
        link is refused (it could point anywhere: undo would move files in from there)."""
        trash = folder / TRASH
        if trash.is_symlink():
            raise PathError(f"{trash} is a symbolic link; the studio follows none: remove it")
        if not trash.is_dir():
            return []
        batches = sorted(p for p in trash.iterdir() if p.is_dir() or p.is_symlink())
        if any(p.is_symlink() for p in batches):
            raise PathError(f"{trash} holds a symbolic link; the studio follows none: remove it")
        return batches


def _folders(folder: Path) -> list[Path]:
    """The sub-folders of `folder` the studio shows: not hidden, not links."""
    return sorted(p for p in folder.iterdir()
                  if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))
