"""``neurofed export``: a model folder as an ONNX or OpenVINO model folder a clinic can run.

Exit status: 0 exported, 1 the INT8 model lost more than ``--max-metric-drop`` (refused, nothing
written), 2 wrong options or an unusable model folder or site.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from neurofed.cli.console import console, print_error, print_kept_layers_caveat

__all__ = ["FormatChoice", "export"]


class FormatChoice(StrEnum):
    """What the exported folder holds."""

    ONNX = "onnx"
    OPENVINO = "openvino"


def export(
    model: Annotated[Path, typer.Argument(help="A model folder, e.g. RUN/model.")],
    out: Annotated[Path, typer.Option(help="The exported model folder to write.")],
    format: Annotated[
        FormatChoice, typer.Option("--format", help="onnx (onnxruntime) or openvino.")
    ] = FormatChoice.ONNX,
    int8: Annotated[
        bool,
        typer.Option(
            "--int8",
            help="OpenVINO INT8 by NNCF accuracy-aware quantisation on --site's validation "
            "cases; refused if the headline metric drops more than --max-metric-drop.",
        ),
    ] = False,
    max_metric_drop: Annotated[
        float,
        typer.Option(help="Largest headline-metric drop INT8 may cost (absolute)."),
    ] = 0.005,
    site: Annotated[
        Path | None,
        typer.Option(help="A site folder: real cases for the parity check, INT8 calibration."),
    ] = None,
) -> None:
    """Export a model to ONNX or OpenVINO (FP32, or INT8 gated by its metric drop), checked
    against PyTorch; `neurofed predict --model OUT` then runs it without PyTorch."""
    from neurofed.export import ExportError, MetricDropError, export_model
    from neurofed.training import ModelFolderError, SiteDataError

    try:
        result = export_model(
            model, out, format.value, int8=int8, site=site, max_metric_drop=max_metric_drop
        )
    except MetricDropError as exc:
        print_error(str(exc))
        raise typer.Exit(1) from None
    except ExportError as exc:
        print_error(str(exc))
        raise typer.Exit(2) from None
    except (ModelFolderError, SiteDataError) as exc:
        print_error(str(exc))
        raise typer.Exit(2) from None
    print_kept_layers_caveat(result.source)
    worst = max(result.parity["max_relative_diff"].values())
    console.print(
        f"exported {model} as {result.format.value} {result.precision.value} into {result.folder} "
        f"(seal {result.seal[:12]}); max relative difference to PyTorch {worst:.2g} on "
        f"{result.parity['inputs']}",
        markup=False,
        soft_wrap=True,
    )
    if result.int8 is not None:
        console.print(
            f"INT8 {result.int8['gate_metric']}: {result.int8['fp32_pytorch']:.4f} (PyTorch) -> "
            f"{result.int8['int8']:.4f} (INT8), drop {result.int8['metric_drop']:.4f} <= "
            f"{result.int8['max_metric_drop']}",
            markup=False,
            soft_wrap=True,
        )
