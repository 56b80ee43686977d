"""The engine cache: compiled engines (ONNX files, TensorRT programs) kept by what they were built
from, shared by every process on the machine.

Where: $SWAPSTREAM_CACHE, else $XDG_CACHE_HOME/swapstream, else ~/.cache/swapstream; engines go
under `engines/<engine>/<key>/`, beside an `entry.json` that records the key's fields and the
sha256 and size of the engine file. Not inside the checkpoint folder: a checkpoint save carries
the folder's other files into the new checkpoint, so an unkeyed engine there would outlive its
weights.

The key is the sha256 of the fields that make an engine: the weights' sha256 (from model.json),
the direction (the decoder's identity), the precision, the batch range, the device (GPU name and
compute capability, or CPU architecture) and the versions of the packages that built it. A stale
or foreign engine has another key, so it is never loaded; a truncated or altered file fails its
recorded sha256 and is rebuilt.

Whoever can write to the cache can make swapstream run their code (torch.compile's cache holds
pickles; a TensorRT program may fall back to a full torch.load), so the cache folder must be the
user's own: it is created 0700, and a folder (the root, or an engine kind's) that is a symbolic
link, belongs to another user, or that the group or others may write to is refused with one line
naming the fix. Entries are bound to their key: each engine kind records the key inside its
engine file (ONNX: a metadata entry, engines.onnx_key.ONNX_KEY; TensorRT's saved programs, zip
archives: an extra member, engines.export_key.EXPORT_KEY) and the lookup checks it, so a file
copied under another key, its entry.json rewritten, is rebuilt.

Processes asking for the same key at once take turns on a lock file per key: one builds (into a
temporary folder renamed into place), the others then load its engine. Without the lock (no
fcntl) the rename still keeps the cache intact: the loser's folder is thrown away.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from swapstream.core.errors import ConfigError
from swapstream.engines.checkpoint import sha256_file

ENTRY = "entry.json"


def cache_root() -> Path:
    """The folder swapstream caches in (not created here)."""
    if os.environ.get("SWAPSTREAM_CACHE"):
        return Path(os.environ["SWAPSTREAM_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "swapstream"


_FIX = "set SWAPSTREAM_CACHE to a folder of your own (swapstream creates it, mode 700)"


def own_folder(path: Path, writable: list[Path] | None = None) -> Path:
    """`path` created (mode 0700) or checked: not a symbolic link, the user's own, writable by
    no one else; ConfigError naming the fix otherwise. With `writable`, a folder others may write
    to is appended to it instead (own_folders names them all in one line)."""
    path = Path(path)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(path)
    except OSError as err:
        raise ConfigError(f"engine cache {path}: cannot create it ({err.strerror or err}); set "
                          "SWAPSTREAM_CACHE to a folder of your own") from None
    fix = _FIX
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError(f"engine cache {path} is a symbolic link (to {os.readlink(path)}); "
                          f"whoever controls its target could run code here; {fix}")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise ConfigError(f"engine cache {path} belongs to user id {st.st_uid}, not to you "
                          f"({os.getuid()}); whoever owns it could run code here; {fix}")
    if st.st_mode & 0o022 and writable is not None:
        writable.append(path)
    elif st.st_mode & 0o022:
        raise ConfigError(f"engine cache {path} can be written by others (mode "
                          f"{stat.S_IMODE(st.st_mode):03o}), who could then run code here; "
                          f"chmod 700 {path}, or {fix}")
    return path


def own_folders(paths: list[Path]) -> None:
    """own_folder on each, with every folder others may write to named in one line (folders an
    older version or a umask of 002 left group-writable are then fixed by one chmod)."""
    writable: list[Path] = []
    for path in paths:
        if writable and not os.path.lexists(path):
            continue  # nothing is created in a folder already refused
        own_folder(path, writable)
    if writable:
        names = " ".join(str(p) for p in writable)
        raise ConfigError(f"engine cache {names}: can be written by others, who could then run code "
                          f"here; chmod 700 {names}, or {_FIX}")


@dataclass(frozen=True)
class KeyBinding:
    """How an engine kind records its cache key inside its engine file: stamp(path, key) after
    the build, read(path) -> the key recorded (None if none)."""

    stamp: Callable[[Path, str], None]
    read: Callable[[Path], str | None]


def engine_key(fields: dict) -> str:
    """sha256 hex of the fields (JSON with sorted keys): equal fields, equal key."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


class EngineCache:
    """Engine files of one engine kind under cache_root()/engines/<kind>/<key>/."""

    def __init__(self, kind: str, root: Path | None = None, binding: KeyBinding | None = None) -> None:
        self.kind, self.binding = kind, binding
        self.root = root or cache_root()
        self.dir = self.root / "engines" / kind
        self._checked = False

    def _check(self) -> None:
        """The folders are the user's own (created 0700); ConfigError otherwise (once checked,
        not again)."""
        if not self._checked:
            own_folders([self.root, self.root / "engines", self.dir])
            self._checked = True

    def folder(self, fields: dict) -> Path:
        return self.dir / engine_key(fields)[:32]

    def lookup(self, fields: dict, filename: str, repair: bool = True) -> Path | None:
        """The cached engine file for these fields, or None when there is none or it is not intact
        (wrong fields, missing, truncated or altered: with `repair`, such a folder is removed;
        get() does that only while it holds the key's lock)."""
        self._check()
        folder = self.folder(fields)
        path, entry = folder / filename, folder / ENTRY
        if not entry.exists():
            return None
        key = engine_key(fields)
        try:
            meta = json.loads(entry.read_text())
            ok = (meta.get("key") == key and path.exists()
                  and path.stat().st_size == meta.get("size") and sha256_file(path) == meta.get("sha256"))
            if ok and self.binding is not None:  # the key inside the file: not one moved here
                ok = self.binding.read(path) == key
        except (OSError, ValueError):
            ok = False
        if not ok:
            if repair:
                shutil.rmtree(folder, ignore_errors=True)
            return None
        return path

    def store(self, fields: dict, filename: str, build: Callable[[Path], None]) -> Path:
        """Build the engine with build(path) into a temporary folder and move it into place
        atomically; returns the cached file's path (another process's, if it won the race)."""
        self._check()
        folder = self.folder(fields)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
        try:
            path = tmp / filename
            build(path)
            if not path.exists():
                raise RuntimeError(f"building the {self.kind} engine wrote no {filename}")
            if self.binding is not None:
                self.binding.stamp(path, engine_key(fields))
            meta = {"key": engine_key(fields), "fields": fields, "file": filename,
                    "size": path.stat().st_size, "sha256": sha256_file(path)}
            (tmp / ENTRY).write_text(json.dumps(meta, indent=2, default=str))
            for f in tmp.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            if folder.exists() and self.lookup(fields, filename) is None:
                shutil.rmtree(folder, ignore_errors=True)  # a broken one: replace it
            try:
                os.rename(tmp, folder)  # fails when another process put a complete one there
            except OSError:
                if self.lookup(fields, filename) is None:
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return folder / filename

    def get(self, fields: dict, filename: str, build: Callable[[Path], None]) -> tuple[Path, bool]:
        """(path of the engine file, True if it was built now): the cached one when intact.
        Builders of one key take turns (a lock file per key), so processes starting together
        (Ray actors, segments) build it once and the others load it."""
        hit = self.lookup(fields, filename, repair=False)
        if hit is not None:
            return hit, False
        with self._locked(fields):
            hit = self.lookup(fields, filename)
            if hit is not None:
                return hit, False
            return self.store(fields, filename, build), True

    @contextlib.contextmanager
    def _locked(self, fields: dict):
        """An exclusive lock on the key (fcntl; without fcntl, on Windows, none: the atomic
        rename alone keeps the cache intact, at the cost of duplicate builds)."""
        self._check()
        try:
            import fcntl
        except ImportError:
            yield
            return
        with open(self.dir / f".{self.folder(fields).name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


class CachedBuild:
    """For engines whose directions are files in the cache: `cache` (an EngineCache),
    `filename`, key_fields(identity) and make(identity, path) come from the engine; model_path()
    loads a valid cached file or makes one, recording in `built` / `paths` which it was."""

    cache: EngineCache
    filename: str
    built: dict[str, bool]  # identity -> built now (False: loaded from the cache); set by the engine
    paths: dict[str, Path]  # identity -> the cached engine file; set by the engine

    def key_fields(self, identity: str) -> dict:
        raise NotImplementedError

    def make(self, identity: str, path: Path) -> None:
        raise NotImplementedError

    def model_path(self, identity: str) -> Path:
        """The cached engine file of a direction, built first if there is no valid one."""
        path, built = self.cache.get(self.key_fields(identity), self.filename,
                                     lambda p: self.make(identity, p))
        self.built[identity], self.paths[identity] = built, path
        return path
