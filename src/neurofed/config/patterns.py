"""Glob patterns over parameter names: which state-dict entries stay at a site.

A study (``local_parameters``), a strategy (FedBN's normalisation layers) and the training
config all name the entries that never leave a site by ``fnmatch`` glob patterns; the training
loop, the strategies and the update checks decide with the one rule here.

Examples
--------
>>> is_local("encoder.0.norm.weight", ("*norm*",)), is_local("head.weight", ("*norm*",))
(True, False)
>>> is_local("encoder.0.norm1.weight", ("*.norm[0-9].*",))
True
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

__all__ = ["is_local"]


def is_local(name: str, patterns: Sequence[str]) -> bool:
    """Whether state-dict entry ``name`` matches one of the glob ``patterns`` (case-sensitive)."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
