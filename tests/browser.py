"""Headless Chromium for tests that must see a page render (Debian's ``chromium``, which
``.ci/run`` installs). Outside CI a machine without it skips those tests; in CI it fails."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

__all__ = ["dump_dom", "rendered_figures"]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed: .ci/run installs Debian's chromium package")
    pytest.skip("chromium is not installed (apt-get install chromium)")


def dump_dom(page: Path | str, *, virtual_time_ms: int = 0) -> str:
    """The page's DOM after load (a file, or a URL), as headless Chromium serialises it;
    ``virtual_time_ms`` lets the page's timers and fetches run that long first."""
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"]
    if virtual_time_ms:
        command.append(f"--virtual-time-budget={virtual_time_ms}")
    target = page.as_uri() if isinstance(page, Path) else page
    result = subprocess.run(
        [*command, target],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def rendered_figures(page: Path) -> tuple[int, int]:
    """``(rendered, total)`` images of a neurofed report, as its load script counted them."""
    match = re.search(r'data-figures="(\d+)/(\d+)"', dump_dom(page))
    assert match, "the page has no data-figures attribute"
    return int(match.group(1)), int(match.group(2))
