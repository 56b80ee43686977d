"""A headless Chromium for tests and benchmarks, driven by playwright's sync API.

The system's Chromium is used (Debian/Ubuntu: `sudo apt-get install chromium`); playwright never
downloads a browser here.

    from tests.browser import chromium, require_chromium

    def test_page():
        require_chromium()
        with chromium() as browser:
            page = browser.new_page()
            page.goto(url)
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--autoplay-policy=no-user-gesture-required", "--disable-features=WebRtcHideLocalIpsWithMdns",
        "--use-fake-ui-for-media-stream"]
CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_path() -> str | None:
    """The Chromium to drive: $SWAPSTREAM_CHROMIUM, else the first of CANDIDATES found; None if none."""
    for name in (os.environ.get("SWAPSTREAM_CHROMIUM"), *CANDIDATES):
        if name and (path := shutil.which(name)):
            return path
    return None


def require_chromium() -> str:
    """The Chromium's path; skips the calling test when playwright or Chromium is missing."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed: pip install -e '.[dev]'")
    path = chromium_path()
    if path is None:
        pytest.skip("Chromium not found: install it with `sudo apt-get install chromium` (Debian/Ubuntu)")
    return path


@contextmanager
def chromium(extra_args: tuple[str, ...] = ()) -> Iterator:
    """A launched headless playwright Browser (sync API); closed on exit."""
    from playwright.sync_api import sync_playwright

    path = require_chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, headless=True, args=[*ARGS, *extra_args])
        try:
            yield browser
        finally:
            browser.close()
