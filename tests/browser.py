"""A headless Chromium for tests (benchmarks/browser.py launches it), skipping a test when playwright
or Chromium is missing.

    from tests.browser import chromium, require_chromium

    def test_page():
        require_chromium()
        with chromium() as browser:
            page = browser.new_page()
            page.goto(url)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from benchmarks.browser import chromium_path, launch


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
    with launch(require_chromium(), extra_args) as browser:
        yield browser
