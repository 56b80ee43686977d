"""Output-directory checks shared by extract and train: fail before the work, not after it; and
URLs as they may be shown (passwords masked)."""

from __future__ import annotations

import os
import re
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


# user:password@ up to the URL's last "@" (FFmpeg splits there: a password may hold "@" or "/")
_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^/@:?#\s'\"]*):[^\s'\"]*@")
# an RTMP stream key: the last path segment of rtmp(s)://host/app/KEY
_STREAM_KEY = re.compile(r"(rtmps?://[^/\s'\"]+/[^/\s'\"]+/)[^/?#\s'\"]+", re.IGNORECASE)
_SECRET_QUERY = re.compile(r"([?&](?:password|passwd|pass|pwd|token|key|secret|auth|passphrase)=)[^&#]*",
                           re.IGNORECASE)


def masked(url: str) -> str:
    """`url` fit to print: a password in it (rtsp://user:PASSWORD@host/..., ?passphrase=... of
    SRT, ?token=..., an RTMP stream key rtmp://host/app/KEY) replaced by ***. Anything that is
    not a URL comes back as it is."""
    text = str(url)
    if "://" not in text:
        return text
    text = _USERINFO.sub(r"\1:***@", text)
    text = _STREAM_KEY.sub(r"\1***", text)
    return _SECRET_QUERY.sub(r"\1***", text)
