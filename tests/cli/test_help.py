"""Every command's help, on an 80-column terminal, shows every option in full."""

from __future__ import annotations

import re

import pytest
import typer.main
from typer.testing import CliRunner

from neurofed.cli.main import app


def test_no_option_name_is_cut_at_80_columns() -> None:
    # Prepare: every command and sub-command
    group = typer.main.get_command(app)
    paths: list[list[str]] = []
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        subcommands = getattr(command, "commands", None)
        paths += [[name, sub] for sub in subcommands] if subcommands else [[name]]
    runner = CliRunner()
    for path in paths:
        # Execute
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
        # Assert
        assert result.exit_code == 0, (path, result.output)
        cut = [line for line in result.output.splitlines() if re.match(r"^\s+-\S*…", line)]
        assert cut == [], (path, cut)
        command = typer.main.get_command(app)
        for part in path:
            command = command.commands[part]  # type: ignore[attr-defined]
        for param in command.params:
            for option in param.opts:
                assert option in result.output, (path, option)


def test_an_error_message_is_shown_as_written_never_read_as_markup(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from neurofed.cli.console import print_error

    print_error("study.toml: [initial_model] sha256 = 'x' is invalid; see /data/[site]/a.nii")

    shown = capsys.readouterr().err
    assert "[initial_model] sha256" in shown and "/data/[site]/a.nii" in shown
