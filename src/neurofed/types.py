"""Small shared types."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["ProgressCallback"]

#: Called as ``progress(done, total, label)`` after each unit of work (a case, a site, a round).
#: Library code reports progress only through this; the CLI draws the bar.
ProgressCallback = Callable[[int, int, str], None]
