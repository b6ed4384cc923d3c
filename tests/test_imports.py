"""Pure maths and the wire protocol import nothing heavy; the CLI starts without torch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "monai", "nvflare", "SimpleITK", "nibabel")


def _imported_after(statement: str) -> list[str]:
    code = (
        f"import json, sys; {statement}; "
        f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return list(json.loads(run.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "module",
    [
        "neurofed.federated.strategies",
        "neurofed.federated",
        "neurofed.federated.protocol",
        "neurofed.artifacts",
        "neurofed.config",
        "neurofed.keys",
    ],
)
def test_light_modules_import_nothing_heavy(module: str) -> None:
    assert _imported_after(f"import {module}") == []
