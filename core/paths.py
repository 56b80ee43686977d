"""Output-directory checks shared by extract and train: fail before the work, not after it."""

from __future__ import annotations

import os
from pathlib import Path

from swapstream.core.errors import OutputError


def check_writable_dir(path: str | Path, flag: str = "-o") -> None:
    """Raise OutputError unless `path` is, or can be created as, a writable directory."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {path} is a file; name a directory (it is created if missing)")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{flag} {path}: {existing} is a file, not a folder; choose another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {path}: {existing} is not writable; choose another folder or fix "
                          f"its permissions")
