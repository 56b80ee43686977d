"""The engine cache's key inside a saved exported program (engines.cache.KeyBinding): the `.ep`
archive that torch.export.save writes, and torch_tensorrt.save with output_format
"exported_program" (the TensorRT engine's cache files).

Such an archive is a zip whose members all lie under one top folder (`<root>/models/...`,
`<root>/data/...`). stamp() appends one member, `<root>/extra/KEY_NAME`, holding the cache key:
torch.export.load ignores it (or returns it, asked with `extra_files={KEY_NAME: ""}`), and read()
takes it back with zipfile, which reads the zip's central directory, not the program. Only the
zip module: no torch, no torch-tensorrt, so the binding works, and is tested, on any machine.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

from swapstream.engines.cache import KeyBinding

KEY_NAME = "swapstream_cache_key"


def _root(names: list[str]) -> str:
    """The archive's top folder (every torch archive has exactly one); ValueError otherwise."""
    roots = {n.split("/", 1)[0] for n in names}
    if len(roots) != 1 or not all("/" in n for n in names):
        raise ValueError(f"not a torch archive (top-level entries: {sorted(roots)[:3]})")
    return roots.pop()


def _member(names: list[str]) -> str:
    return f"{_root(names)}/extra/{KEY_NAME}"


def stamp(path: Path, key: str) -> None:
    """Record `key` in the archive at `path` as the member <root>/extra/KEY_NAME (replacing one
    that is there: the archive is then rewritten without it first, through a temporary file)."""
    path = Path(path)
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    member = _member(names)
    if member in names:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        try:
            with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as dst:
                for info in src.infolist():
                    if info.filename != member:
                        dst.writestr(info, src.read(info))
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_STORED) as z:
        z.writestr(member, key)


def read(path: Path) -> str | None:
    """The key recorded in the archive at `path`; None if there is none, more than one, or the
    file is not a zip with one top folder."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            member = _member(names)
            if names.count(member) != 1:
                return None
            return z.read(member).decode()
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, UnicodeDecodeError):
        return None


EXPORT_KEY = KeyBinding(stamp, read)
