"""Run a benchmark's measuring child pinned to a number of cores, and read its JSON answer.

The child is started with its CPU affinity set before numpy or torch start (so their thread
pools see only those cores) and must print its result as JSON on its last stdout line.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from typing import Any

__all__ = ["run_pinned"]


def run_pinned(command: Sequence[str], cores: int) -> dict[str, Any]:
    """Run ``command`` on the first ``cores`` CPUs this process may use; its last JSON line."""
    cpus = sorted(os.sched_getaffinity(0))[:cores]
    done = subprocess.run(
        list(command),
        env=dict(os.environ),
        check=True,
        capture_output=True,
        text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, cpus),  # pin before numpy/torch start
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))
