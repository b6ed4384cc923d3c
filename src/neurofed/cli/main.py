"""The ``neurofed`` command: thin typer commands that call the library."""

from __future__ import annotations

import typer

from neurofed import __version__
from neurofed.cli import (
    custodian,  # noqa: F401  (registers `neurofed site init/approve/…`)
    dicom,  # noqa: F401  (registers `neurofed site import-dicom`)
    site_service,  # noqa: F401  (registers `neurofed site start/stop/status`)
)
from neurofed.cli.demo import demo
from neurofed.cli.evaluate import evaluate
from neurofed.cli.export import export
from neurofed.cli.federation import federation_app
from neurofed.cli.monitor import monitor
from neurofed.cli.phantom import phantom
from neurofed.cli.predict import predict
from neurofed.cli.report import report
from neurofed.cli.server import server_app
from neurofed.cli.simulate import simulate
from neurofed.cli.site import site_app
from neurofed.cli.study import study_app
from neurofed.cli.train import train_app

__all__ = ["app", "main"]

app = typer.Typer(
    rich_markup_mode=None,  # plain help: option names are never cut to fit the terminal
    name="neurofed",
    help="Federated deep learning on brain MRI: every scan stays inside its hospital.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(site_app, name="site")
app.add_typer(train_app, name="train")
app.add_typer(federation_app, name="federation")
app.add_typer(server_app, name="server")
app.add_typer(study_app, name="study")
app.command()(phantom)
app.command()(demo)
app.command()(evaluate)
app.command()(simulate)
app.command()(report)
app.command()(monitor)
app.command()(predict)
app.command()(export)


@app.command()
def version() -> None:
    """Print the installed neurofed version."""
    typer.echo(__version__)


def main() -> None:
    app()
