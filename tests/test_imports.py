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


def test_every_commands_help_needs_no_heavy_import() -> None:
    # Execute: every command's --help, in one fresh process
    statement = (
        "from typer.testing import CliRunner; from neurofed.cli.main import app; "
        "import typer.main as tm; runner = CliRunner(); "
        "group = tm.get_command(app); "
        "paths = [[]] + [[n] for n in group.commands] + "
        "[[n, s] for n, c in group.commands.items() for s in getattr(c, 'commands', {})]; "
        "codes = [runner.invoke(app, [*p, '--help']).exit_code for p in paths]; "
        "assert len(paths) > 25 and set(codes) == {0}, (paths, codes)"
    )
    # Assert
    assert _imported_after(statement) == []
